//! The trunk side of a session: git refs reconciled with the ledger, and the trunk's worktree,
//! built (`build`) and calibrated (`calibrate`) before a change is measured against it.

use std::path::{Path, PathBuf};

use agentloop_guardrails::decision::Calibration as NoiseCalibration;
use agentloop_guardrails::target::TargetSpec;
use agentloop_ledger::payload::Stage;
use anyhow::{bail, Context, Result};
use git2::Oid;

use super::artifacts::BuildCache;
use super::build::{ensure_built, BuildState, BUILD_WORKTREE};
use super::calibrate;
use super::record::Recorder;
use super::runs;
use super::workspace::Workspace;
use crate::executor::budget::Stop;
use crate::executor::Executor;
use crate::git::{change_branch, trunk_branch};
use agentloop_ledger::state::SessionState;

/// A trunk ready for a change: built, and calibrated.
pub struct Ready {
    pub commit: Oid,
    pub worktree: PathBuf,
    pub noise: NoiseCalibration,
}

pub struct Trunk<'a> {
    pub ws: &'a Workspace,
    pub target: &'a TargetSpec,
    pub rec: &'a Recorder,
    pub session: String,
    pub env: Vec<(String, String)>,
    /// Where training runs execute.
    pub exec: &'a dyn Executor,
    pub stop: Stop,
    pub cache: BuildCache,
    /// With several workers, each has its own trunk worktree, pinned to the trunk commit its
    /// change started from (the shared one would move under a running baseline at a merge).
    pub worker: Option<usize>,
}

impl<'a> Trunk<'a> {
    pub fn new(
        ws: &'a Workspace,
        target: &'a TargetSpec,
        rec: &'a Recorder,
        session: &str,
        env: Vec<(String, String)>,
        exec: &'a dyn Executor,
        stop: Stop,
    ) -> Trunk<'a> {
        Trunk {
            ws,
            target,
            rec,
            session: session.to_string(),
            env,
            exec,
            stop,
            cache: BuildCache::new(&ws.state),
            worker: None,
        }
    }

    /// The trunk as worker `i` of several sees it.
    pub fn for_worker(mut self, i: usize) -> Trunk<'a> {
        self.worker = Some(i);
        self
    }

    pub fn worktree_name(&self) -> String {
        match self.worker {
            None => format!("trunk-{}", self.session),
            Some(i) => format!("trunk-{}-w{i}", self.session),
        }
    }

    /// The branch the trunk worktree has checked out: the trunk itself, or a worker's pin.
    fn worktree_branch(&self) -> String {
        match self.worker {
            None => trunk_branch(&self.session),
            Some(i) => worker_branch(&self.session, i),
        }
    }

    /// Makes git agree with the ledger after a kill: the trunk ref where the last merge or
    /// rollback put it, discarded branches under `refs/agentloop/rejected/`, and no worktree
    /// left but the trunk's and the in-flight change's.
    pub fn reconcile(&self, history: &SessionState) -> Result<()> {
        let git = &self.ws.git;
        let stale = git.clear_stale_locks()?;
        if stale > 0 {
            tracing::info!("removed {stale} stale ref lock(s) left by a killed run");
        }
        let trunk = trunk_branch(&self.session);
        let want = Oid::from_str(&history.trunk_commit)
            .with_context(|| format!("ledger trunk commit {:?}", history.trunk_commit))?;
        if git.branch_tip(&trunk)? != Some(want) {
            tracing::info!("moving {trunk} to {want}, where the ledger says it is");
            git.set_branch(&trunk, want, "agentloop: reconcile with the ledger")?;
        }
        for c in &history.changes {
            if c.discard.is_some() {
                git.reject_branch(&change_branch(&self.session, &c.id))?;
            }
        }
        let in_flight: Vec<&str> = history.in_flight_all().map(|c| c.id.as_str()).collect();
        let trunk_trees = format!("trunk-{}", self.session);
        for name in git.loop_worktrees()? {
            let keep = name.starts_with(&trunk_trees)
                || name == BUILD_WORKTREE
                || in_flight.contains(&name.as_str());
            if !keep {
                tracing::info!("removing stray worktree {name}");
                git.remove_worktree(&name)?;
            }
        }
        Ok(())
    }

    /// Removes every worktree of the loop (at the end of a session; the audit's own are the
    /// audit's to remove).
    pub fn clean_all(&self) -> Result<()> {
        for name in self.ws.git.loop_worktrees()? {
            self.ws.git.remove_worktree(&name)?;
        }
        self.ws.git.delete_branch(super::build::BUILD_BRANCH)?;
        let pins = format!("refs/heads/{}*", change_branch(&self.session, "_trunk-w"));
        let names: Vec<String> = self
            .ws
            .git
            .repo()
            .references_glob(&pins)?
            .filter_map(|r| {
                r.ok()?
                    .name()
                    .map(|n| n.trim_start_matches("refs/heads/").to_string())
            })
            .collect();
        for name in names {
            self.ws.git.delete_branch(&name)?;
        }
        Ok(())
    }

    /// The trunk checked out, built and calibrated; `None` when the loop was stopped meanwhile.
    pub fn ready(&mut self, history: &SessionState) -> Result<Option<Ready>> {
        let commit = Oid::from_str(&history.trunk_commit)?;
        let worktree = self.checkout(commit)?;
        match ensure_built(
            self.ws,
            self.target,
            &self.cache,
            &self.env,
            &self.stop,
            &worktree,
            commit,
        )? {
            BuildState::Stopped => return Ok(None),
            BuildState::Failed(f) => bail!(
                "the trunk {commit} does not build (log {}):\n{}",
                f.log.display(),
                runs::tail_lines(&f.tail, 30)
            ),
            BuildState::Ready { .. } => {}
        }
        let noise = match calibrate::current(history, commit, &self.target.decision)? {
            Some(n) => n,
            None => {
                let _calibrating = calibrate::one_at_a_time();
                // Another worker may have calibrated this trunk while this one waited.
                let latest = self.rec.state()?;
                match calibrate::current(&latest, commit, &self.target.decision)? {
                    Some(n) => n,
                    None => match self.calibrate(&latest, commit, &worktree)? {
                        Some(n) => n,
                        None => return Ok(None),
                    },
                }
            }
        };
        Ok(Some(Ready {
            commit,
            worktree,
            noise,
        }))
    }

    fn checkout(&self, commit: Oid) -> Result<PathBuf> {
        let git = &self.ws.git;
        let name = self.worktree_name();
        let path = git.worktrees_dir().join(&name);
        let registered = git.repo().find_worktree(&name).is_ok();
        if self.worker.is_some() {
            git.set_branch(&self.worktree_branch(), commit, "agentloop: worker trunk")?;
        }
        if !registered || !path.join(".git").exists() {
            git.add_worktree(&name, &self.worktree_branch())?;
        }
        // The worktree's HEAD follows the trunk ref by itself (it is the branch), but its files
        // do not: bring them to the trunk commit every time (only changed files are written).
        git.refresh_worktree(&path)?;
        let _ = commit;
        Ok(path)
    }

    fn calibrate(
        &self,
        history: &SessionState,
        commit: Oid,
        worktree: &Path,
    ) -> Result<Option<NoiseCalibration>> {
        match calibrate::measure(
            self.ws,
            self.target,
            self.rec,
            &self.session,
            &self.env,
            self.exec,
            &self.stop,
            history,
            commit,
            worktree,
            Stage::Calibration,
        )? {
            Some(n) => Ok(Some(n)),
            None => Ok(None),
        }
    }
}

/// The branch worker `i`'s trunk worktree follows (beside the change branches, like them).
pub fn worker_branch(session: &str, i: usize) -> String {
    change_branch(session, &format!("_trunk-w{i}"))
}
