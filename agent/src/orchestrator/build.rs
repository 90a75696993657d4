//! Building a tree: the target's build command, run in the one build worktree (so the build
//! tool sees the same paths every time and rebuilds only what changed), its outputs cached by
//! git tree and restored into whichever worktree needs them.

use std::path::{Path, PathBuf};

use agentloop_guardrails::target::TargetSpec;
use anyhow::{Context, Result};
use git2::Oid;

use super::artifacts::BuildCache;
use super::workspace::Workspace;
use crate::executor::budget::Stop;
use crate::executor::process::{self, Exit, Finished, Job};

/// The worktree (and its branch) where every build runs.
pub const BUILD_WORKTREE: &str = "build";
pub const BUILD_BRANCH: &str = "agentloop/changes/_build";

/// Builds share one build worktree and one cargo target directory: one build at a time.
static BUILD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn hold(lock: &'static std::sync::Mutex<()>) -> std::sync::MutexGuard<'static, ()> {
    lock.lock().unwrap_or_else(|e| e.into_inner())
}

pub enum BuildState {
    Ready,
    Failed(Finished),
    Stopped,
}

/// The worktree's build outputs for `tree`, from the cache or by building (then cached).
pub fn ensure_built(
    ws: &Workspace,
    target: &TargetSpec,
    cache: &BuildCache,
    env: &[(String, String)],
    stop: &Stop,
    worktree: &Path,
    tree: &str,
) -> Result<BuildState> {
    let _one_build_at_a_time = hold(&BUILD_LOCK);
    if cache.restore(tree, worktree)? {
        return Ok(BuildState::Ready);
    }
    // Built in one fixed worktree, so the build tool sees the same paths every time and
    // recompiles only what changed (a config-only change rebuilds nothing).
    let commit = git2::Repository::open(worktree)?
        .head()?
        .peel_to_commit()?
        .id();
    let build_dir = build_worktree(ws, commit)?;
    let f = build(ws, target, env, stop, &build_dir, tree)?;
    match f.exit {
        Exit::Stopped => Ok(BuildState::Stopped),
        _ if f.succeeded() => {
            cache.store(tree, &build_dir)?;
            cache.restore(tree, worktree)?;
            Ok(BuildState::Ready)
        }
        _ => Ok(BuildState::Failed(f)),
    }
}

/// The worktree every build runs in, checked out at `commit`.
fn build_worktree(ws: &Workspace, commit: Oid) -> Result<PathBuf> {
    let git = &ws.git;
    git.set_branch(BUILD_BRANCH, commit, "agentloop: build")?;
    let path = git.worktrees_dir().join(BUILD_WORKTREE);
    if git.repo().find_worktree(BUILD_WORKTREE).is_ok() && path.join(".git").exists() {
        git.refresh_worktree(&path)?;
        Ok(path)
    } else {
        Ok(git.add_worktree(BUILD_WORKTREE, BUILD_BRANCH)?)
    }
}

/// Runs the target's build command in `worktree` (log under `.agentloop/logs/`).
pub fn build(
    ws: &Workspace,
    target: &TargetSpec,
    env: &[(String, String)],
    stop: &Stop,
    worktree: &Path,
    tree: &str,
) -> Result<Finished> {
    let target_dir = env
        .iter()
        .find(|(k, _)| k == "CARGO_TARGET_DIR")
        .map(|(_, v)| PathBuf::from(v))
        .context("internal: builds need CARGO_TARGET_DIR")?;
    let command = crate::sandbox::build_command(target, worktree, &target_dir)?;
    let job = Job {
        command: &command,
        cwd: worktree,
        env: env.to_vec(),
        timeout: target.build.timeout,
        memory_limit: None,
        divergence: None,
        log: ws.state.join("logs").join(format!("build-{tree}.log")),
    };
    let finished = process::run(&job, stop).context("starting the build command")?;
    crate::sandbox::redact_files(&[&finished.log]);
    Ok(finished)
}
