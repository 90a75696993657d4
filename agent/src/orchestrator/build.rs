//! Building a tree: the target's build command, run in the one build worktree (so the build
//! tool sees the same paths every time and rebuilds only what changed), its outputs cached by
//! build key (`build_key`) and restored into whichever worktree needs them.

use std::path::{Path, PathBuf};

use agentloop_guardrails::target::TargetSpec;
use anyhow::{bail, Context, Result};
use git2::Oid;
use sha2::{Digest, Sha256};

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
    /// `cached`: restored from an earlier build of the same inputs, nothing rebuilt.
    Ready {
        cached: bool,
    },
    Failed(Finished),
    Stopped,
}

/// The build outputs of `commit` in `worktree`: from the cache, or built (then cached).
pub fn ensure_built(
    ws: &Workspace,
    target: &TargetSpec,
    cache: &BuildCache,
    env: &[(String, String)],
    stop: &Stop,
    worktree: &Path,
    commit: Oid,
) -> Result<BuildState> {
    let _one_build_at_a_time = hold(&BUILD_LOCK);
    let key = build_key(ws.git.repo(), target, commit)?;
    let cached = cache.contains(&key);
    if !cached {
        match build_into_cache(ws, target, cache, env, stop, commit, &key)? {
            BuildState::Ready { .. } => {}
            not_built => return Ok(not_built),
        }
    }
    cache.restore(&key, worktree)?;
    Ok(BuildState::Ready { cached })
}

/// Builds the session's base commit before its budget starts (a set-up step, like the user's
/// own first `cargo build`): the seconds it took, 0 when the cache already had it.
pub fn prebuild(
    ws: &Workspace,
    target: &TargetSpec,
    env: &[(String, String)],
    stop: &Stop,
    commit: Oid,
) -> Result<f64> {
    let _one_build_at_a_time = hold(&BUILD_LOCK);
    let cache = BuildCache::new(&ws.state);
    let key = build_key(ws.git.repo(), target, commit)?;
    if cache.contains(&key) {
        return Ok(0.0);
    }
    let started = std::time::Instant::now();
    match build_into_cache(ws, target, &cache, env, stop, commit, &key)? {
        BuildState::Ready { .. } => Ok(started.elapsed().as_secs_f64()),
        BuildState::Stopped => bail!("interrupted while building the base commit {commit}"),
        BuildState::Failed(f) => {
            let hidden = match target.build.runtime_only.as_slice() {
                [] => String::new(),
                globs => format!(
                    " (the build may not read [build] runtime_only files {globs:?}: its sandbox hides them)"
                ),
            };
            bail!(
                "the base commit {commit} does not build{hidden} (log {}):\n{}",
                f.log.display(),
                crate::orchestrator::runs::tail_lines(&f.tail, 30)
            )
        }
    }
}

/// Runs the build of `commit` in the build worktree and stores its outputs under `key`.
/// The caller holds the build lock.
fn build_into_cache(
    ws: &Workspace,
    target: &TargetSpec,
    cache: &BuildCache,
    env: &[(String, String)],
    stop: &Stop,
    commit: Oid,
    key: &str,
) -> Result<BuildState> {
    // Built in one fixed worktree, so the build tool sees the same paths every time and
    // recompiles only what changed.
    let build_dir = build_worktree(ws, commit)?;
    let f = build(ws, target, env, stop, &build_dir, key)?;
    match f.exit {
        Exit::Stopped => Ok(BuildState::Stopped),
        _ if f.succeeded() => {
            cache.store(key, &build_dir)?;
            Ok(BuildState::Ready { cached: false })
        }
        _ => Ok(BuildState::Failed(f)),
    }
}

/// What a build of `commit` depends on: its git tree, less the target's `[build] runtime_only`
/// files, so changes that touch only those share their parent's build. Without `runtime_only`
/// this is the tree's id itself.
pub fn build_key(repo: &git2::Repository, target: &TargetSpec, commit: Oid) -> Result<String> {
    let tree = repo.find_commit(commit)?.tree()?;
    if target.build.runtime_only.is_empty() {
        return Ok(tree.id().to_string());
    }
    let mut hasher = Sha256::new();
    let mut walk_error = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let Some(name) = entry.name() else {
            walk_error = Some(format!("a non-UTF-8 file name under {dir:?}"));
            return git2::TreeWalkResult::Abort;
        };
        let path = format!("{dir}{name}");
        if target.is_runtime_only(&path) {
            return git2::TreeWalkResult::Skip;
        }
        if entry.kind() != Some(git2::ObjectType::Tree) {
            hasher.update(format!("{:o} {} {path}\n", entry.filemode(), entry.id()));
        }
        git2::TreeWalkResult::Ok
    })?;
    if let Some(e) = walk_error {
        bail!("computing the build key of {commit}: {e}");
    }
    Ok(hex::encode(hasher.finalize()))
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

/// Runs the target's build command in `worktree` (log `.agentloop/logs/build-<key>.log`).
pub fn build(
    ws: &Workspace,
    target: &TargetSpec,
    env: &[(String, String)],
    stop: &Stop,
    worktree: &Path,
    key: &str,
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
        log: ws.state.join("logs").join(format!("build-{key}.log")),
    };
    let finished = process::run(&job, stop).context("starting the build command")?;
    crate::sandbox::redact_files(&[&finished.log]);
    Ok(finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: &str = r#"
[target]
editable = ["config/*.toml", "src/*.rs"]
[build]
command = "true"
timeout = "1m"
RUNTIME
[train]
command = "bin/train --budget {budget} --out {out}"
budget = "1steps"
smoke_budget = "1steps"
timeout = "1m"
memory_limit = "1GiB"
"#;

    fn target(root: &Path, runtime_only: &str) -> TargetSpec {
        let text = TARGET.replace("RUNTIME", runtime_only);
        TargetSpec::parse(root, &root.join("agentloop.toml"), &text).unwrap()
    }

    /// A commit of `files` on top of HEAD (or the first commit).
    fn commit(repo: &git2::Repository, files: &[(&str, &str)]) -> Oid {
        let root = repo.workdir().unwrap();
        let mut index = repo.index().unwrap();
        for (path, text) in files {
            std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
            std::fs::write(root.join(path), text).unwrap();
            index.add_path(Path::new(path)).unwrap();
        }
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, "c", &tree, &parents)
            .unwrap()
    }

    #[test]
    fn only_runtime_only_files_leave_the_build_key_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        let base = commit(
            &repo,
            &[
                ("config/a.toml", "lr = 1\n"),
                ("src/model.rs", "fn f() {}\n"),
            ],
        );
        let config = commit(&repo, &[("config/a.toml", "lr = 2\n")]);
        let new_config = commit(&repo, &[("config/b.toml", "x = 1\n")]);
        let source = commit(&repo, &[("src/model.rs", "fn g() {}\n")]);

        let declared = target(dir.path(), "runtime_only = [\"config/*.toml\"]");
        let key = |c| build_key(&repo, &declared, c).unwrap();
        assert_eq!(key(base), key(config), "a config edit reuses the build");
        assert_eq!(key(base), key(new_config), "so does a new config file");
        assert_ne!(key(base), key(source), "a source edit is built");

        // Undeclared: every file is a build input, and the key is the tree itself.
        let plain = target(dir.path(), "");
        let tree = |c| repo.find_commit(c).unwrap().tree_id().to_string();
        assert_eq!(build_key(&repo, &plain, config).unwrap(), tree(config));
        assert_ne!(
            build_key(&repo, &plain, base).unwrap(),
            build_key(&repo, &plain, config).unwrap()
        );
    }
}
