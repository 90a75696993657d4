//! The OS sandbox around every build, training run and eval step (issue 18's trust boundary).
//!
//! Every command the target contract names is started as
//! `agentloop sandbox-exec --policy FILE -- sh -c CMD` (see `exec`): the same wrapper locally and
//! inside Slurm jobs. A policy (`policy`) says what the process may read and write; `env` what
//! of the environment it keeps; `netns` cuts the network; `landlock` enforces the files.
//!
//! - build: reads the system and the toolchain homes; reads and writes the build worktree
//!   minus `eval_data`, the shared target dir and the cargo home.
//! - train: reads the system, the toolchain homes, the worktree minus `eval_data` (all of it
//!   when the target has no `[eval]`: the weaker boundary is recorded) and its run dir; writes
//!   its run dir only.
//! - eval: reads the worktree with `eval_data` and its run dir; writes its run dir only.
//!
//! Nothing under `.agentloop/` is reachable but the process's own worktree and run dir: not
//! the ledger, not other runs, not the build cache.

pub mod env;
pub mod exec;
pub mod landlock;
pub mod netns;
pub mod policy;

mod commands;
mod description;
mod secrets;
mod settings;
mod step_policy;

use std::path::Path;

use agentloop_guardrails::target::TargetSpec;
use anyhow::{Context, Result};
use serde_json::Value;

pub use commands::{
    build_command, eval_failure, run_command, RunCommand, EVAL_FAILED, EVAL_FAILED_PREFIX,
    EVAL_OUTPUT,
};
pub use description::describe;
pub use secrets::{provider_key_names, redact_files};
pub use settings::{install, Settings};
pub use step_policy::{policy_for, system_read_paths, write_policy, Step};

/// Checks that the sandbox works here; `Err` names `--no-sandbox`.
pub fn check_available(exe: &Path, dir: &Path) -> Result<(i64, netns::NetMode)> {
    exec::probe(exe, dir).map_err(|e| {
        anyhow::anyhow!(
            "the OS sandbox is not available here: {e:#}.\n\
             Builds and training runs would be able to read the evaluation data, the network and \
             the loop's files. Run on a kernel with Landlock (Linux 5.13+, `lsm=landlock`), or \
             pass --no-sandbox to run without it (recorded in the ledger and shown by `status`)."
        )
    })
}

/// Checks the sandbox (unless `no_sandbox`), installs it for this process and returns its
/// description for the ledger. Refuses to go on without it unless told `--no-sandbox`.
pub fn set_up(
    ws: &crate::orchestrator::workspace::Workspace,
    target: &TargetSpec,
    no_sandbox: bool,
    agent_flag: Option<&str>,
) -> Result<Value> {
    let exe = std::env::current_exe().context("finding the agentloop binary")?;
    let policy_dir = ws.state.join("sandbox");
    let probed = if no_sandbox {
        tracing::warn!(
            "--no-sandbox: builds and runs are not isolated (only the environment is scrubbed)"
        );
        None
    } else {
        Some(check_available(&exe, &policy_dir)?)
    };
    install(Settings {
        enforce: !no_sandbox,
        exe,
        policy_dir,
        never_env: provider_key_names(target, agent_flag),
    });
    let description = describe(
        target,
        !no_sandbox,
        probed.map(|(abi, net)| (abi, net.as_str())),
    );
    if let Some(weaker) = description.get("weaker").and_then(Value::as_str) {
        tracing::warn!("sandbox: {weaker}");
    }
    Ok(description)
}

#[cfg(test)]
mod tests;
