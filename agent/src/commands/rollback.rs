//! `agentloop rollback <change>`.

use std::path::Path;

use agentloop_guardrails::target::TargetSpec;
use anyhow::{Context, Result};

use crate::cli::RollbackArgs;
use crate::orchestrator::rollback::rollback;
use crate::orchestrator::workspace::Workspace;

pub fn run(repo: Option<&Path>, args: &RollbackArgs) -> Result<i32> {
    let ws = Workspace::open(repo)?;
    let _lock = ws.lock()?;
    let target = TargetSpec::load(&ws.root).context("reading the target description")?;
    crate::sandbox::set_up(&ws, &target, args.no_sandbox, None)?;
    let target_dir = super::start::shared_target_dir(&ws.root, None);
    let done = rollback(&ws, &target, &args.change, &target_dir)?;
    println!(
        "rolled back {} on {}: revert commit {}",
        done.change,
        crate::git::trunk_branch(&done.session),
        done.revert_commit
    );
    match done.remeasured_mean {
        Some(m) => println!("trunk re-measured: mean {m:.6}"),
        None => println!("trunk re-measurement was interrupted; `agentloop start` measures it"),
    }
    Ok(0)
}
