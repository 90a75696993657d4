//! Running an audit: the paired holdout runs of the reference and the trunk, the `audit`
//! event, and resolving a flagged audit (bisection, then rollback of the first bad merge).

use std::collections::BTreeMap;
use std::path::PathBuf;

use agentloop_guardrails::audit::{assess, AuditOutcome, AuditRule, Bisection, OnFlag};
use agentloop_guardrails::target::TargetSpec;
use agentloop_ledger::payload::{Arm, Audit, RunResult, Stage};
use agentloop_ledger::state::SessionState;
use anyhow::{bail, Context, Result};
use git2::Oid;
use serde_json::{json, Map, Value};

use super::schedule::{seeds, steps_of};
use super::{AuditStep, Merged, AUDITED_WORKTREE, REFERENCE_WORKTREE, SPLIT};
use crate::executor::budget::Stop;
use crate::executor::Executor;
use crate::orchestrator::build::{ensure_built, BuildState};
use crate::orchestrator::rollback::{revert_recorded, RollbackError};
use crate::orchestrator::runs::{self, value_of, RunSpec};
use crate::orchestrator::trunk::Trunk;
use crate::orchestrator::workspace::Workspace;

/// The audit proper: paired holdout runs of the reference and the trunk, then the event.
pub(super) fn audit(
    trunk: &Trunk,
    history: &SessionState,
    rule: &AuditRule,
    number: u64,
    reference: &str,
    merges: &[Merged],
) -> Result<AuditStep> {
    let audited = history.trunk_commit.clone();
    let tag = json!({ "audit": number });
    let Some(reference_wt) = checkout(trunk, REFERENCE_WORKTREE, reference)? else {
        return Ok(AuditStep::Stopped);
    };
    let Some(audited_wt) = checkout(trunk, AUDITED_WORKTREE, &audited)? else {
        return Ok(AuditStep::Stopped);
    };
    let mut pairs = Vec::new();
    for seed in seeds(trunk, rule, number) {
        let arm = |arm, commit, worktree| Holdout {
            commit,
            seed,
            arm,
            worktree,
            tag: &tag,
        };
        let pair = [
            arm(Arm::Baseline, reference, &reference_wt),
            arm(Arm::Candidate, audited.as_str(), &audited_wt),
        ];
        match side_by_side(trunk, history, number, &pair)? {
            Some([reference_value, audited_value]) => pairs.push((reference_value, audited_value)),
            None => return Ok(AuditStep::Stopped),
        }
    }
    let claimed: f64 = merges.iter().map(|m| m.claimed_gain).sum();
    let outcome = assess(rule, claimed, &pairs)
        .with_context(|| format!("holdout audit {number}: too few finite pairs {pairs:?}"))?;
    let action = match (outcome.holds_up, rule.on_flag) {
        (true, _) => "none",
        (false, OnFlag::BisectRollback) => "bisect_rollback",
        (false, OnFlag::FlagOnly) => "flag_only",
    };
    let ids: Vec<&str> = merges.iter().map(|m| m.change.as_str()).collect();
    let mut extra = Map::new();
    extra.insert("audit".into(), json!(number));
    extra.insert("changes".into(), json!(ids));
    extra.insert("claimed_gain".into(), json!(claimed));
    extra.insert("pairs".into(), json!(pairs));
    extra.insert("rule".into(), serde_json::to_value(rule)?);
    extra.insert("assessment".into(), serde_json::to_value(&outcome)?);
    extra.insert("action".into(), json!(action));
    trunk
        .rec
        .append(None, &event(&audited, reference, &outcome, extra))?;
    tracing::info!(
        "holdout audit {number}: {} ({})",
        if outcome.holds_up { "held" } else { "flagged" },
        outcome.reason
    );
    Ok(AuditStep::Done)
}

fn event(
    audited: &str,
    reference: &str,
    outcome: &AuditOutcome,
    extra: Map<String, Value>,
) -> Audit {
    Audit {
        trunk_commit: audited.to_string(),
        reference_commit: Some(reference.to_string()),
        split: Some(SPLIT.into()),
        n: Some(outcome.test.n as u32),
        mean_diff: Some(outcome.test.mean),
        p_value: Some(outcome.test.p),
        outcome: if outcome.holds_up { "held" } else { "flagged" }.into(),
        extra,
    }
}

/// A flagged audit: bisect the merges it covered (one probe event each), then roll back the
/// first bad one. A refused rollback (conflict) is recorded as the audit's resolution.
pub(super) fn resolve(
    trunk: &Trunk,
    history: &SessionState,
    rule: &AuditRule,
    number: u64,
    audit_seq: i64,
    audit: &Audit,
    merges: &[Merged],
) -> Result<AuditStep> {
    let reference = audit
        .reference_commit
        .clone()
        .context("a flagged audit event without its reference commit")?;
    let ids: Vec<String> = merges.iter().map(|m| m.change.clone()).collect();
    let Some(mut bisection) = Bisection::new(ids.clone()) else {
        // Every merge it covered was rolled back meanwhile (by hand): nothing left to do.
        let mut extra = Map::new();
        extra.insert("of_audit".into(), json!(number));
        extra.insert("resolution".into(), json!("nothing_to_roll_back"));
        extra.insert(
            "reason".into(),
            json!("every merge the audit covered was already rolled back"),
        );
        let settled = Audit {
            trunk_commit: history.trunk_commit.clone(),
            extra,
            ..audit.clone()
        };
        trunk.rec.append(None, &settled)?;
        return Ok(AuditStep::Done);
    };
    let probed: BTreeMap<u64, bool> = steps_of(history, number)
        .filter_map(|(_, a)| {
            let index = a.extra.get("bisect")?.get("index")?.as_u64()?;
            Some((index, a.outcome == "held"))
        })
        .collect();
    let seeds = seeds(trunk, rule, number);
    let reference_values: Vec<f64> = seeds
        .iter()
        .map(|&seed| {
            recorded_value(history, &reference, seed).with_context(|| {
                format!("holdout audit {number}: the reference run of seed {seed} is not recorded")
            })
        })
        .collect::<Result<_>>()?;
    while let Some((index, change)) = bisection.next_probe() {
        let holds_up = match probed.get(&(index as u64)) {
            Some(&h) => h,
            None => {
                let probe = &merges[index];
                let Some(worktree) = checkout(trunk, AUDITED_WORKTREE, &probe.commit)? else {
                    return Ok(AuditStep::Stopped);
                };
                let tag = json!({ "audit": number, "probe": index });
                let mut pairs = Vec::new();
                for (&seed, &reference_value) in seeds.iter().zip(&reference_values) {
                    let run = Holdout {
                        commit: &probe.commit,
                        seed,
                        arm: Arm::Candidate,
                        worktree: &worktree,
                        tag: &tag,
                    };
                    match run.value(trunk, history, number)? {
                        Some(v) => pairs.push((reference_value, v)),
                        None => return Ok(AuditStep::Stopped),
                    }
                }
                let claimed: f64 = merges[..=index].iter().map(|m| m.claimed_gain).sum();
                let outcome = assess(rule, claimed, &pairs).with_context(|| {
                    format!("audit {number} probe {index}: too few finite pairs {pairs:?}")
                })?;
                let mut extra = Map::new();
                extra.insert("of_audit".into(), json!(number));
                extra.insert(
                    "bisect".into(),
                    json!({ "index": index, "change": change, "changes": ids }),
                );
                extra.insert("claimed_gain".into(), json!(claimed));
                extra.insert("pairs".into(), json!(pairs));
                extra.insert("assessment".into(), serde_json::to_value(&outcome)?);
                trunk
                    .rec
                    .append(None, &event(&probe.commit, &reference, &outcome, extra))?;
                outcome.holds_up
            }
        };
        bisection
            .record(index, holds_up)
            .map_err(|e| anyhow::anyhow!("audit {number} bisection: {e}"))?;
    }
    let culprit = bisection
        .culprit()
        .context("bisection ended without a culprit")?
        .to_string();
    let why = audit
        .extra
        .get("assessment")
        .and_then(|a| a.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or("the gain did not hold up");
    let reason = format!("holdout audit {number} flagged ({why}); bisection points at {culprit}");
    let mut extra = Map::new();
    extra.insert("audit".into(), json!(number));
    extra.insert("audit_seq".into(), json!(audit_seq));
    extra.insert("bisect".into(), json!(bisection.probes));
    // The revert is recorded against the trunk the ledger holds now.
    let now = trunk.rec.state()?;
    match revert_recorded(trunk.ws, trunk.rec, &now, &culprit, &reason, extra) {
        Ok(revert) => {
            tracing::warn!("{reason}: rolled back (revert commit {revert})");
        }
        Err(e) if e.downcast_ref::<RollbackError>().is_some() => {
            tracing::warn!("{reason}, but the rollback was refused: {e}");
            let mut extra = Map::new();
            extra.insert("of_audit".into(), json!(number));
            extra.insert("resolution".into(), json!("rollback_refused"));
            extra.insert("culprit".into(), json!(culprit));
            extra.insert("reason".into(), json!(e.to_string()));
            let flagged = Audit {
                trunk_commit: now.trunk_commit.clone(),
                extra,
                ..audit.clone()
            };
            trunk.rec.append(None, &flagged)?;
        }
        Err(e) => return Err(e),
    }
    Ok(AuditStep::Done)
}

/// What a holdout run needs of the trunk: the parts that may be shared between threads.
struct Runner<'a> {
    target: &'a TargetSpec,
    env: &'a [(String, String)],
    exec: &'a dyn Executor,
    stop: &'a Stop,
    runs_dir: PathBuf,
}

impl<'a> Runner<'a> {
    fn of(trunk: &'a Trunk) -> Runner<'a> {
        Runner {
            target: trunk.target,
            env: &trunk.env,
            exec: trunk.exec,
            stop: &trunk.stop,
            runs_dir: trunk.ws.state.join("runs").join(&trunk.session),
        }
    }
}

/// One holdout run of `commit` on `seed`, reused when recorded.
struct Holdout<'a> {
    commit: &'a str,
    seed: u64,
    arm: Arm,
    worktree: &'a PathBuf,
    /// Labels for the run_result (`audit`, and `probe` for a bisection run).
    tag: &'a Value,
}

/// The two arms of an audit pair run at once (each slot busy, both under the same load), their
/// runs recorded afterwards in arm order (a stopped arm's finished runs too); `None` when the
/// loop was stopped.
fn side_by_side(
    trunk: &Trunk,
    history: &SessionState,
    number: u64,
    pair: &[Holdout; 2],
) -> Result<Option<[f64; 2]>> {
    let runner = Runner::of(trunk);
    let [a, b] = std::thread::scope(|s| {
        let other = s.spawn(|| pair[1].attempts(&runner, history, number));
        let first = pair[0].attempts(&runner, history, number);
        let second = other
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("an audit run's thread panicked")));
        [first, second]
    });
    let (a, b) = (a?, b?);
    let values = [pair[0].record(a, trunk)?, pair[1].record(b, trunk)?];
    match values {
        [Some(x), Some(y)] => Ok(Some([x, y])),
        _ => Ok(None),
    }
}

/// What a holdout run's attempts came to, not yet recorded.
struct Attempts {
    runs: Vec<RunResult>,
    /// The metric of the run that gave one (or of the one recorded earlier).
    value: Option<f64>,
    /// The loop was stopped during an attempt.
    stopped: bool,
}

impl Holdout<'_> {
    /// The metric value; `None` when the loop was stopped. A run that fails is retried on the
    /// same seed (each attempt recorded), as calibration does.
    fn value(&self, trunk: &Trunk, history: &SessionState, number: u64) -> Result<Option<f64>> {
        let attempts = self.attempts(&Runner::of(trunk), history, number)?;
        self.record(attempts, trunk)
    }

    /// The recorded value, or up to three runs until one gives a value (or the loop stops).
    fn attempts(&self, runner: &Runner, history: &SessionState, number: u64) -> Result<Attempts> {
        let mut done = Attempts {
            runs: Vec::new(),
            value: recorded_value(history, self.commit, self.seed),
            stopped: false,
        };
        let target = runner.target;
        while done.value.is_none() && done.runs.len() < 3 {
            let spec = RunSpec {
                arm: self.arm,
                stage: Stage::Audit,
                commit: self.commit,
                seed: self.seed,
                split: SPLIT,
                budget: &target.train.budget,
                worktree: self.worktree,
                out: runner.runs_dir.join(format!(
                    "audit-{number}-{}-{}",
                    &self.commit[..10.min(self.commit.len())],
                    self.seed
                )),
            };
            let Some(mut r) = runs::run(target, &spec, runner.env, runner.exec, runner.stop)?
            else {
                done.stopped = true;
                break;
            };
            if let Value::Object(tag) = self.tag {
                r.extra.extend(tag.clone());
            }
            done.value = value_of(&r);
            done.runs.push(r);
        }
        Ok(done)
    }

    /// Records the attempts' runs: the value, `None` when the loop was stopped, or the error
    /// naming a run that failed all three attempts.
    fn record(&self, attempts: Attempts, trunk: &Trunk) -> Result<Option<f64>> {
        for r in &attempts.runs {
            trunk.rec.append(None, r)?;
        }
        match attempts {
            Attempts { stopped: true, .. } => Ok(None),
            Attempts { value: Some(v), .. } => Ok(Some(v)),
            Attempts { .. } => bail!(
                "holdout run of {} (seed {}) failed 3 times; see the run logs under {}",
                self.commit,
                self.seed,
                Runner::of(trunk).runs_dir.display()
            ),
        }
    }
}

fn recorded_value(history: &SessionState, commit: &str, seed: u64) -> Option<f64> {
    let is_it = |r: &&RunResult| {
        r.stage == Stage::Audit && r.commit == commit && r.seed == seed && r.split == SPLIT
    };
    history.session_runs.iter().filter(is_it).find_map(value_of)
}

/// `commit` checked out in the worktree `name` and built (from the build cache when it can);
/// `None` when the loop was stopped during the build.
fn checkout(trunk: &Trunk, name: &str, commit: &str) -> Result<Option<PathBuf>> {
    let git = &trunk.ws.git;
    let oid = Oid::from_str(commit).with_context(|| format!("audit commit {commit:?}"))?;
    let branch = branch_of(name);
    git.set_branch(&branch, oid, "agentloop: holdout audit")?;
    let path = git.worktrees_dir().join(name);
    if git.repo().find_worktree(name).is_ok() && path.join(".git").exists() {
        git.refresh_worktree(&path)?;
    } else {
        git.add_worktree(name, &branch)?;
    }
    let env = &trunk.env;
    match ensure_built(
        trunk.ws,
        trunk.target,
        &trunk.cache,
        env,
        &trunk.stop,
        &path,
        oid,
    )? {
        BuildState::Ready { .. } => Ok(Some(path)),
        BuildState::Stopped => Ok(None),
        BuildState::Failed(f) => bail!(
            "commit {commit} does not build for the holdout audit (log {}):\n{}",
            f.log.display(),
            runs::tail_lines(&f.tail, 30)
        ),
    }
}

fn branch_of(worktree: &str) -> String {
    format!("agentloop/changes/_{worktree}")
}

/// The audit's worktrees and branches go once it is done (a kill leaves them to `reconcile`
/// and the next audit, which resets them).
pub fn remove_worktrees(ws: &Workspace) -> Result<()> {
    for name in [REFERENCE_WORKTREE, AUDITED_WORKTREE] {
        ws.git.remove_worktree(name)?;
        ws.git.delete_branch(&branch_of(name))?;
    }
    Ok(())
}
