//! `agentloop status [--json]`: where the current (or last) session stands, from the ledger.
//! The numbers are `report::summary`'s, the same the live progress and the report show.

use std::path::Path;

use anyhow::Result;

use crate::cli::StatusArgs;
use crate::orchestrator::workspace::Workspace;

pub fn run(repo: Option<&Path>, args: &StatusArgs) -> Result<i32> {
    let ws = Workspace::open(repo)?;
    crate::report::command::run_status(&ws.ledger_path(), None, args.json, &mut std::io::stdout())
}
