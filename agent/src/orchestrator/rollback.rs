//! Rolling back an accepted change: a revert commit on the trunk, a rollback event pointing at
//! the original merge, and a re-measurement of the trunk. A conflicting revert changes nothing.

use std::time::Duration;

use agentloop_guardrails::target::TargetSpec;
use agentloop_ledger::payload::{DecisionOutcome, Rollback, Stage};
use agentloop_ledger::Ledger;
use anyhow::{bail, Context, Result};
use git2::Oid;
use serde_json::{Map, Value};

use super::artifacts::BuildCache;
use super::build::{ensure_built, BuildState, BUILD_BRANCH, BUILD_WORKTREE};
use super::calibrate::measure;
use super::record::Recorder;
use super::workspace::Workspace;
use crate::executor::budget::Stop;
use crate::git::{trunk_branch, GitError};
use agentloop_ledger::state::SessionState;

#[derive(Debug)]
pub struct RolledBack {
    pub change: String,
    pub session: String,
    pub revert_commit: String,
    /// The trunk's calibrated mean after the rollback (None if the re-measurement was cut short).
    pub remeasured_mean: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("change {change} was not accepted (its outcome is {outcome}); only accepted changes can be rolled back")]
    NotAccepted { change: String, outcome: String },
    #[error("change {change} is still being decided; wait for its decision")]
    Undecided { change: String },
    #[error("change {change} was already rolled back (revert commit {revert_commit})")]
    AlreadyRolledBack {
        change: String,
        revert_commit: String,
    },
    #[error("cannot roll back {change}: reverting it conflicts with later change(s) {} in {}; roll those back first. Nothing was changed.", later.join(", "), paths.join(", "))]
    Conflict {
        change: String,
        later: Vec<String>,
        paths: Vec<String>,
    },
}

pub fn rollback(
    ws: &Workspace,
    target: &TargetSpec,
    prefix: &str,
    target_dir: &std::path::Path,
) -> Result<RolledBack> {
    let ledger = Ledger::open(ws.ledger_path())
        .with_context(|| format!("opening the ledger {}", ws.ledger_path().display()))?;
    let change = ledger.resolve_change(prefix)?;
    let events = ledger.events_for_change(&change)?;
    let session = events
        .first()
        .map(|e| e.session.clone())
        .with_context(|| format!("change {change} has no events"))?;
    let history = SessionState::load(&ledger, &session)?;
    let rec = Recorder::new(ledger, &session);
    let revert = revert_recorded(ws, &rec, &history, &change, "requested by user", Map::new())?;
    let git = &ws.git;
    let trunk = trunk_branch(&session);

    // Changes interact: measure the trunk as it now is before anything builds on it.
    let history = SessionState::load(&rec.ledger, &session)?;
    let name = format!("remeasure-{change}");
    let worktree = git.add_worktree(&name, &trunk)?;
    let env = vec![(
        "CARGO_TARGET_DIR".to_string(),
        target_dir.to_string_lossy().into_owned(),
    )];
    let stop = Stop::after(Duration::from_secs(24 * 3600));
    stop.on_signals();
    let cache = BuildCache::new(&ws.state);
    let exec = crate::executor::for_target(target)?;
    let mean = match ensure_built(ws, target, &cache, &env, &stop, &worktree, revert)? {
        BuildState::Ready { .. } => measure(
            ws,
            target,
            &rec,
            &session,
            &env,
            exec.as_ref(),
            &stop,
            &history,
            revert,
            &worktree,
            Stage::Remeasure,
        )?
        .map(|n| n.baseline_mean),
        BuildState::Stopped => None,
        BuildState::Failed(f) => {
            git.remove_worktree(&name)?;
            git.remove_worktree(BUILD_WORKTREE)?;
            bail!(
                "the trunk after rolling back {change} does not build (see {}); the rollback is recorded",
                f.log.display()
            );
        }
    };
    git.remove_worktree(&name)?;
    git.remove_worktree(BUILD_WORKTREE)?;
    git.delete_branch(BUILD_BRANCH)?;
    Ok(RolledBack {
        change,
        session,
        revert_commit: revert.to_string(),
        remeasured_mean: mean,
    })
}

/// Reverts an accepted `change` on the trunk the ledger records, records the `rollback` event
/// (pointing at the original merge; `reason` also goes into the revert commit's message), then
/// moves the trunk ref. Refuses with a [`RollbackError`], changing nothing, when the change
/// cannot be rolled back or the revert conflicts. No re-measurement: the caller does that.
pub fn revert_recorded(
    ws: &Workspace,
    rec: &Recorder,
    history: &SessionState,
    change: &str,
    reason: &str,
    mut extra: Map<String, Value>,
) -> Result<Oid> {
    let change = change.to_string();
    let record = history
        .change(&change)
        .cloned()
        .with_context(|| format!("change {change} is not in session {}", history.session))?;
    let Some((_, decision)) = &record.decision else {
        return Err(RollbackError::Undecided { change }.into());
    };
    if decision.outcome != DecisionOutcome::Accepted {
        return Err(RollbackError::NotAccepted {
            change,
            outcome: decision.outcome.as_str().into(),
        }
        .into());
    }
    if let Some((_, r)) = &record.rollback {
        return Err(RollbackError::AlreadyRolledBack {
            change,
            revert_commit: r.revert_commit.clone(),
        }
        .into());
    }
    let (merge_seq, merge) = record
        .merge
        .clone()
        .with_context(|| format!("change {change} was accepted but its merge was never recorded; run `agentloop start` to finish it"))?;
    let git = &ws.git;
    git.clear_stale_locks()?;
    let trunk = trunk_branch(&history.session);
    // The ledger is the truth: start from the trunk it records (a kill may have left the ref behind).
    let tip = Oid::from_str(&history.trunk_commit)?;
    let message = format!(
        "Revert \"{}\"\n\nRolled back: {reason}\n\nChange-Id: {change}\n{}",
        record.description(),
        rec.head_trailer()?
    );
    let revert = match git.revert_on(Oid::from_str(&merge.commit)?, tip, &message) {
        Ok(oid) => oid,
        Err(GitError::RevertConflict {
            paths,
            later_changes,
            ..
        }) => {
            return Err(RollbackError::Conflict {
                change,
                later: later_changes,
                paths,
            }
            .into())
        }
        Err(e) => return Err(e.into()),
    };
    extra.insert("trunk_branch".into(), Value::String(trunk.clone()));
    rec.append(
        Some(&change),
        &Rollback {
            reverted_commit: merge.commit.clone(),
            revert_commit: revert.to_string(),
            original_merge_seq: Some(merge_seq),
            reason: reason.to_string(),
            extra,
        },
    )?;
    // Recorded first, then acted on: a kill in between is repaired by `reconcile`.
    git.set_branch(&trunk, revert, "agentloop: rollback")?;
    Ok(revert)
}
