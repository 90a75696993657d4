//! `agentloop start`: begin a session, or resume the interrupted one.

use std::path::{Path, PathBuf};

use agentloop_guardrails::exit_code;
use agentloop_guardrails::target::TargetSpec;
use anyhow::{Context, Result};

use crate::cli::StartArgs;
use crate::orchestrator::agent_adapter;
use crate::orchestrator::proposals::Proposals;
use crate::orchestrator::session::{self, Options};
use crate::orchestrator::workspace::Workspace;

/// Fix attempts after a failed build (see DESIGN.md).
const FIX_ATTEMPTS: u32 = 2;

pub fn run(repo: Option<&Path>, args: &StartArgs) -> Result<i32> {
    let ws = Workspace::open(repo)?;
    let _lock = ws.lock()?;
    let target = TargetSpec::load(&ws.root).context("reading the target description")?;
    let sandbox = crate::sandbox::set_up(&ws, &target, args.no_sandbox, args.agent.as_deref())?;
    let target_dir = shared_target_dir(&ws.root, args.target_dir.as_deref());
    let mut proposals = agent_adapter::from_args(&ws, &target, args)?;
    let opts = Options {
        budget: args.budget,
        max_changes: args.max_changes,
        agent_kind: proposals.kind().to_string(),
        model: args.model.clone(),
        target_dir,
        fix_attempts: FIX_ATTEMPTS,
        // `[loop] breaker_after`; the pause and the trips that end the session are read there too.
        breaker_k: crate::orchestrator::pause::LoopConfig::from_target(&target)?.breaker_after,
        progress: crate::progress::Mode::detect(),
        workers: args.workers.map(usize::from),
        sandbox,
    };
    let outcome = session::run(&ws, &target, proposals.as_mut(), &opts, true)?;
    println!(
        "session {} {}: {} decided ({} accepted, {} rejected, {} crashed); ended: {}",
        outcome.session,
        if outcome.resumed {
            "resumed"
        } else {
            "started"
        },
        outcome.decided,
        outcome.accepted,
        outcome.rejected,
        outcome.crashed,
        outcome.reason
    );
    println!("trunk: {}", crate::git::trunk_branch(&outcome.session));
    if let Some(line) = &outcome.verdict {
        println!("final verdict (base vs trunk): {line}");
    }
    Ok(if outcome.reason == "interrupted" {
        exit_code::INTERRUPTED
    } else {
        exit_code::OK
    })
}

/// `--target-dir`, else `CARGO_TARGET_DIR`, else `<repo>/target` (so a build the user already
/// did is reused). Always absolute: builds run in worktrees elsewhere.
pub fn shared_target_dir(root: &Path, flag: Option<&Path>) -> PathBuf {
    let chosen = flag
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| root.join("target"));
    if chosen.is_absolute() {
        chosen
    } else {
        std::env::current_dir()
            .map(|d| d.join(&chosen))
            .unwrap_or(chosen)
    }
}
