//! `agentloop report [--out DIR]`: the HTML report with its PNG and SVG chart.

use std::path::Path;

use anyhow::Result;

use crate::orchestrator::workspace::Workspace;
use crate::report::command::{run_report, ReportArgs};

pub fn run(repo: Option<&Path>, args: &ReportArgs) -> Result<i32> {
    let ws = Workspace::open(repo)?;
    run_report(args, &ws.root, &ws.ledger_path(), &mut std::io::stdout())
}
