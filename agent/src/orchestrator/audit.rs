//! Holdout audits, scheduled by the loop: every `[decision.audit] every_merges` merges, the
//! trunk is run against the last audited commit on the sealed holdout split with fresh paired
//! seeds. A cumulative gain that does not hold up is flagged and, by policy, bisected over the
//! merges since the reference (more holdout runs) and the first bad change is rolled back.
//!
//! Like every step of the loop, an audit first reads its own record: runs are reused by commit
//! and seed, bisection probes by index, and the main `audit` event marks the merges it covered,
//! so a resumed session neither repeats a recorded run nor audits the same merges twice.

use std::collections::BTreeMap;
use std::path::PathBuf;

use agentloop_guardrails::audit::{assess, AuditOutcome, AuditRule, Bisection, OnFlag};
use agentloop_ledger::payload::{Arm, Audit, RunResult, Stage};
use anyhow::{bail, Context, Result};
use git2::Oid;
use serde_json::{json, Map, Value};

use super::build::{ensure_built, BuildState};
use super::rollback::{revert_recorded, RollbackError};
use super::runs::{self, value_of, RunSpec};
use super::seeds::seed_for;
use super::trunk::Trunk;
use super::workspace::Workspace;
use agentloop_ledger::state::SessionState;

pub const SPLIT: &str = "holdout";
/// Worktrees (and their branches `agentloop/changes/_<name>`) the audit runs in.
const REFERENCE_WORKTREE: &str = "audit-reference";
const AUDITED_WORKTREE: &str = "audit-trunk";

/// What `run_if_due` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditStep {
    NotDue,
    /// An audit (or its bisection and rollback) was recorded: reload the history.
    Done,
    /// The loop was stopped mid-audit; the recorded runs are reused on resume.
    Stopped,
}

/// A merge an audit covers: the change, its trunk commit and the gain its decision claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub change: String,
    pub commit: String,
    pub claimed_gain: f64,
}

/// What the ledger says is next for audits.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    /// Fewer merges than `every_merges` since the last audit (or audits are off).
    NotDue { merges: usize },
    /// Audit `number` is due: the trunk against `reference`, covering `merges`.
    Start {
        number: u64,
        reference: String,
        merges: Vec<Merged>,
    },
    /// Audit `number` was flagged and its bisection / rollback is not finished.
    Resolve {
        number: u64,
        audit_seq: i64,
        audit: Box<Audit>,
        merges: Vec<Merged>,
    },
}

/// Runs the audit that is due, or finishes a flagged one; called at the top of each
/// iteration of the session loop, before the trunk is made ready for the next change.
pub fn run_if_due(trunk: &Trunk, history: &SessionState) -> Result<AuditStep> {
    if history.in_flight().is_some() {
        // A change proposed against the current trunk finishes first.
        return Ok(AuditStep::NotDue);
    }
    let rule = &trunk.target.decision.audit;
    let step = match pending(history, rule) {
        Pending::NotDue { .. } => return Ok(AuditStep::NotDue),
        Pending::Start {
            number,
            reference,
            merges,
        } => audit(trunk, history, rule, number, &reference, &merges)?,
        Pending::Resolve {
            number,
            audit_seq,
            audit,
            merges,
        } => resolve(trunk, history, rule, number, audit_seq, &audit, &merges)?,
    };
    if step == AuditStep::Done {
        remove_worktrees(trunk.ws)?;
    }
    Ok(step)
}

/// Reads the session's audits from its history (pure: no git, no runs).
pub fn pending(history: &SessionState, rule: &AuditRule) -> Pending {
    let last = history
        .audits
        .iter()
        .rev()
        .filter(|(_, a)| a.extra.get("of_audit").is_none())
        .find_map(|(seq, a)| Some((*seq, a, a.extra.get("audit")?.as_u64()?)));
    let Some((seq, audit, number)) = last else {
        return due(
            history,
            rule,
            1,
            history.start_seq,
            &history.start.base_commit,
        );
    };
    if !is_resolved(history, audit, number) {
        let ids: Vec<String> = audit
            .extra
            .get("changes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        return Pending::Resolve {
            number,
            audit_seq: seq,
            audit: Box::new(audit.clone()),
            merges: merged(history, i64::MIN)
                .into_iter()
                .filter(|m| ids.contains(&m.change))
                .collect(),
        };
    }
    let end = end_of_audit(history, number, seq);
    let reference = trunk_at(history, end);
    due(history, rule, number + 1, end, &reference)
}

fn due(
    history: &SessionState,
    rule: &AuditRule,
    number: u64,
    since_seq: i64,
    reference: &str,
) -> Pending {
    let merges = merged(history, since_seq);
    if !rule.is_due(merges.len()) {
        return Pending::NotDue {
            merges: merges.len(),
        };
    }
    Pending::Start {
        number,
        reference: reference.to_string(),
        merges,
    }
}

/// Held, flagged with `flag_only`, or flagged and then rolled back or refused a rollback.
fn is_resolved(history: &SessionState, audit: &Audit, number: u64) -> bool {
    audit.outcome != "flagged"
        || audit.extra.get("action").and_then(Value::as_str) != Some("bisect_rollback")
        || history
            .changes
            .iter()
            .filter_map(|c| c.rollback.as_ref())
            .any(|(_, r)| r.extra.get("audit").and_then(Value::as_u64) == Some(number))
        || steps_of(history, number).any(|(_, a)| a.extra.contains_key("resolution"))
}

/// The bisection probes and the resolution recorded for audit `number`.
fn steps_of(history: &SessionState, number: u64) -> impl Iterator<Item = &(i64, Audit)> {
    history
        .audits
        .iter()
        .filter(move |(_, a)| a.extra.get("of_audit").and_then(Value::as_u64) == Some(number))
}

/// The last event that belongs to audit `number` (the audit, its steps, its rollback).
fn end_of_audit(history: &SessionState, number: u64, audit_seq: i64) -> i64 {
    let steps = steps_of(history, number).map(|(s, _)| *s);
    let rollbacks = history
        .changes
        .iter()
        .filter_map(|c| c.rollback.as_ref())
        .filter(|(_, r)| r.extra.get("audit").and_then(Value::as_u64) == Some(number))
        .map(|(s, _)| *s);
    steps.chain(rollbacks).fold(audit_seq, i64::max)
}

/// The trunk commit as of `seq`: the last merge or rollback at or before it, else the base.
fn trunk_at(history: &SessionState, seq: i64) -> String {
    let mut moves: Vec<(i64, &str)> = Vec::new();
    for c in &history.changes {
        if let Some((s, m)) = &c.merge {
            moves.push((*s, &m.commit));
        }
        if let Some((s, r)) = &c.rollback {
            moves.push((*s, &r.revert_commit));
        }
    }
    moves
        .into_iter()
        .filter(|(s, _)| *s <= seq)
        .max_by_key(|(s, _)| *s)
        .map_or(history.start.base_commit.clone(), |(_, c)| c.to_string())
}

/// Changes merged after `seq` and not rolled back, in merge order.
fn merged(history: &SessionState, seq: i64) -> Vec<Merged> {
    let mut out: Vec<(i64, Merged)> = history
        .changes
        .iter()
        .filter(|c| c.rollback.is_none())
        .filter_map(|c| {
            let (merge_seq, merge) = c.merge.as_ref()?;
            let (_, d) = c.decision.as_ref()?;
            // The gain as the decision engine defines it: trunk minus candidate.
            let gain = match (d.mean_baseline, d.mean_candidate) {
                (Some(b), Some(c)) => b - c,
                _ => d.mean_diff.unwrap_or(0.0),
            };
            (*merge_seq > seq).then(|| {
                (
                    *merge_seq,
                    Merged {
                        change: c.id.clone(),
                        commit: merge.commit.clone(),
                        claimed_gain: gain,
                    },
                )
            })
        })
        .collect();
    out.sort_by_key(|(s, _)| *s);
    out.into_iter().map(|(_, m)| m).collect()
}

fn seeds(trunk: &Trunk, rule: &AuditRule, number: u64) -> Vec<u64> {
    (0..rule.pairs as u32)
        .map(|i| seed_for(&trunk.session, None, &format!("audit-{number}"), i))
        .collect()
}

/// The audit proper: paired holdout runs of the reference and the trunk, then the event.
fn audit(
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
        let arms = [
            (Arm::Baseline, reference, &reference_wt),
            (Arm::Candidate, audited.as_str(), &audited_wt),
        ];
        let mut values = [0.0; 2];
        for (slot, (arm, commit, worktree)) in arms.into_iter().enumerate() {
            let run = Holdout {
                commit,
                seed,
                arm,
                worktree,
                tag: &tag,
            };
            match run.value(trunk, history, number)? {
                Some(v) => values[slot] = v,
                None => return Ok(AuditStep::Stopped),
            }
        }
        pairs.push((values[0], values[1]));
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
fn resolve(
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

/// One holdout run of `commit` on `seed`, reused when recorded.
struct Holdout<'a> {
    commit: &'a str,
    seed: u64,
    arm: Arm,
    worktree: &'a PathBuf,
    /// Labels for the run_result (`audit`, and `probe` for a bisection run).
    tag: &'a Value,
}

impl Holdout<'_> {
    /// The metric value; `None` when the loop was stopped. A run that fails is retried on the
    /// same seed (each attempt recorded), as calibration does.
    fn value(&self, trunk: &Trunk, history: &SessionState, number: u64) -> Result<Option<f64>> {
        if let Some(v) = recorded_value(history, self.commit, self.seed) {
            return Ok(Some(v));
        }
        let target = trunk.target;
        for _ in 0..3 {
            let spec = RunSpec {
                arm: self.arm,
                stage: Stage::Audit,
                commit: self.commit,
                seed: self.seed,
                split: SPLIT,
                budget: &target.train.budget,
                worktree: self.worktree,
                out: trunk
                    .ws
                    .state
                    .join("runs")
                    .join(&trunk.session)
                    .join(format!(
                        "audit-{number}-{}-{}",
                        &self.commit[..10.min(self.commit.len())],
                        self.seed
                    )),
            };
            let Some(mut r) = runs::run(target, &spec, &trunk.env, trunk.exec, &trunk.stop)? else {
                return Ok(None);
            };
            if let Value::Object(tag) = self.tag {
                r.extra.extend(tag.clone());
            }
            trunk.rec.append(None, &r)?;
            if let Some(v) = value_of(&r) {
                return Ok(Some(v));
            }
        }
        bail!(
            "holdout run of {} (seed {}) failed 3 times; see the run logs under {}",
            self.commit,
            self.seed,
            trunk.ws.state.join("runs").join(&trunk.session).display()
        )
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
    let tree = git.tree_of(oid)?.to_string();
    let env = &trunk.env;
    match ensure_built(
        trunk.ws,
        trunk.target,
        &trunk.cache,
        env,
        &trunk.stop,
        &path,
        &tree,
    )? {
        BuildState::Ready => Ok(Some(path)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use agentloop_ledger::{EventKind, Ledger, NewEvent};

    const BASE: &str = "0000000000000000000000000000000000000000";

    /// A session's events appended to a real ledger, replayed into its history.
    struct Events(Vec<(EventKind, Option<String>, Value)>);

    impl Events {
        fn new() -> Events {
            Events(vec![(
                EventKind::SessionStart,
                None,
                json!({"budget_s": 600.0, "repo": "/r", "trunk_branch": "agentloop/s1",
                       "base_commit": BASE, "agent": {"kind": "offline"}}),
            )])
        }

        fn push(&mut self, kind: EventKind, change: Option<&str>, payload: Value) -> &mut Self {
            self.0.push((kind, change.map(str::to_string), payload));
            self
        }

        /// An accepted change whose decision claimed `gain`, merged as commit `commit`.
        fn merge(&mut self, change: &str, commit: &str, gain: f64) -> &mut Self {
            self.push(
                EventKind::Propose,
                Some(change),
                json!({"description": change, "rationale": "r", "patch": "p",
                       "patch_format": "search_replace"}),
            )
            .push(
                EventKind::Decision,
                Some(change),
                json!({"outcome": "accepted", "rule_version": "v",
                       "mean_baseline": 1.0, "mean_candidate": 1.0 - gain, "mean_diff": gain}),
            )
            .push(
                EventKind::Merge,
                Some(change),
                json!({"commit": commit, "trunk_branch": "agentloop/s1"}),
            )
        }

        fn rollback(&mut self, change: &str, revert: &str, audit: Option<u64>) -> &mut Self {
            self.push(
                EventKind::Rollback,
                Some(change),
                json!({"reverted_commit": "x", "revert_commit": revert, "reason": "r",
                       "audit": audit}),
            )
        }

        fn audit(&mut self, outcome: &str, extra: Value) -> &mut Self {
            let mut payload = json!({"trunk_commit": "t", "reference_commit": BASE,
                                     "outcome": outcome});
            payload
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            self.push(EventKind::Audit, None, payload)
        }

        fn history(&self) -> SessionState {
            let dir = tempfile::tempdir().unwrap();
            let ledger = Ledger::open(dir.path().join("ledger.db")).unwrap();
            for (kind, change, payload) in &self.0 {
                ledger
                    .append(NewEvent {
                        kind: *kind,
                        session: "s1".into(),
                        change: change.clone(),
                        payload: payload.clone(),
                    })
                    .unwrap();
            }
            SessionState::load(&ledger, "s1").unwrap()
        }
    }

    fn rule(every_merges: usize) -> AuditRule {
        AuditRule {
            every_merges,
            ..AuditRule::default()
        }
    }

    fn commit(n: u8) -> String {
        format!("{n:040}")
    }

    fn changes(p: &Pending) -> Vec<String> {
        match p {
            Pending::Start { merges, .. } | Pending::Resolve { merges, .. } => {
                merges.iter().map(|m| m.change.clone()).collect()
            }
            Pending::NotDue { .. } => Vec::new(),
        }
    }

    #[test]
    fn due_after_every_merges_merges_counting_from_the_session_start() {
        let mut e = Events::new();
        e.merge("c000001", &commit(1), 0.1);
        assert_eq!(
            pending(&e.history(), &rule(2)),
            Pending::NotDue { merges: 1 }
        );
        e.merge("c000002", &commit(2), 0.2);
        let p = pending(&e.history(), &rule(2));
        let Pending::Start {
            number,
            reference,
            merges,
        } = &p
        else {
            panic!("{p:?}")
        };
        assert_eq!((*number, reference.as_str()), (1, BASE));
        assert_eq!(merges[1].commit, commit(2));
        assert!((merges.iter().map(|m| m.claimed_gain).sum::<f64>() - 0.3).abs() < 1e-12);
        assert_eq!(
            pending(&e.history(), &rule(3)),
            Pending::NotDue { merges: 2 }
        );
        assert_eq!(
            pending(&e.history(), &rule(0)),
            Pending::NotDue { merges: 2 },
            "off"
        );
    }

    #[test]
    fn rolled_back_merges_do_not_count() {
        let mut e = Events::new();
        e.merge("c000001", &commit(1), 0.1)
            .merge("c000002", &commit(2), 0.1)
            .rollback("c000001", &commit(3), None);
        assert_eq!(
            pending(&e.history(), &rule(2)),
            Pending::NotDue { merges: 1 }
        );
        e.merge("c000003", &commit(4), 0.1);
        assert_eq!(
            changes(&pending(&e.history(), &rule(2))),
            ["c000002", "c000003"]
        );
    }

    #[test]
    fn merges_count_from_the_last_audit_whose_trunk_becomes_the_reference() {
        let mut e = Events::new();
        e.merge("c000001", &commit(1), 0.1)
            .merge("c000002", &commit(2), 0.1)
            .audit(
                "held",
                json!({"audit": 1, "changes": ["c000001", "c000002"], "action": "none"}),
            )
            .merge("c000003", &commit(3), 0.1);
        assert_eq!(
            pending(&e.history(), &rule(2)),
            Pending::NotDue { merges: 1 }
        );
        e.merge("c000004", &commit(4), 0.1);
        let p = pending(&e.history(), &rule(2));
        assert!(
            matches!(&p, Pending::Start { number: 2, reference, .. } if *reference == commit(2)),
            "{p:?}"
        );
        assert_eq!(changes(&p), ["c000003", "c000004"]);
    }

    #[test]
    fn a_flagged_audit_is_resolved_before_anything_else_and_counted_once() {
        let mut e = Events::new();
        e.merge("c000001", &commit(1), 0.1)
            .merge("c000002", &commit(2), 0.1)
            .audit(
                "flagged",
                json!({"audit": 1, "changes": ["c000001", "c000002"], "action": "bisect_rollback"}),
            );
        let p = pending(&e.history(), &rule(2));
        assert!(matches!(&p, Pending::Resolve { number: 1, .. }), "{p:?}");
        assert_eq!(changes(&p), ["c000001", "c000002"]);
        // A probe is a step of the audit, not a resolution.
        e.audit(
            "held",
            json!({"of_audit": 1, "bisect": {"index": 0, "change": "c000001"}}),
        );
        assert!(matches!(
            pending(&e.history(), &rule(2)),
            Pending::Resolve { .. }
        ));
        // The rollback resolves it; the revert commit is the next reference.
        e.rollback("c000002", &commit(5), Some(1));
        assert_eq!(
            pending(&e.history(), &rule(2)),
            Pending::NotDue { merges: 0 }
        );
        e.merge("c000003", &commit(6), 0.1)
            .merge("c000004", &commit(7), 0.1);
        let p = pending(&e.history(), &rule(2));
        assert!(
            matches!(&p, Pending::Start { number: 2, reference, .. } if *reference == commit(5)),
            "{p:?}"
        );
        assert_eq!(changes(&p), ["c000003", "c000004"]);
    }

    #[test]
    fn flag_only_and_refused_rollbacks_resolve_an_audit() {
        let mut e = Events::new();
        e.merge("c000001", &commit(1), 0.1)
            .merge("c000002", &commit(2), 0.1)
            .audit(
                "flagged",
                json!({"audit": 1, "changes": ["c000001", "c000002"], "action": "flag_only"}),
            );
        assert_eq!(
            pending(&e.history(), &rule(2)),
            Pending::NotDue { merges: 0 }
        );

        let mut e = Events::new();
        e.merge("c000001", &commit(1), 0.1)
            .merge("c000002", &commit(2), 0.1)
            .audit(
                "flagged",
                json!({"audit": 1, "changes": ["c000001", "c000002"], "action": "bisect_rollback"}),
            )
            .audit(
                "flagged",
                json!({"of_audit": 1, "resolution": "rollback_refused"}),
            );
        assert_eq!(
            pending(&e.history(), &rule(2)),
            Pending::NotDue { merges: 0 }
        );
    }
}
