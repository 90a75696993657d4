//! What a session did, computed from its ledger events alone: the one place `status`, the live
//! progress display and the HTML report get their numbers from.
//!
//! [`Replay`] folds events in seq order, so the progress display can feed it one event at a
//! time while `status` and `report` replay a whole session.

use std::collections::BTreeMap;

use agentloop_ledger::payload::{
    Audit, Build, Calibration, Decision, DecisionOutcome, ExitStatus, Pause, Policy, PolicyOutcome,
    Propose, Rollback, RunResult, SessionEnd, SessionStart, Stage,
};
use agentloop_ledger::state::SessionState;
use agentloop_ledger::{ChangeStatus, Event, EventKind, Ledger, LedgerError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::status::Status;

#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("the ledger has no session yet (no session_start event)")]
    NoSession,
    #[error("the ledger has no session named {0:?}")]
    UnknownSession(String),
    #[error("ledger event {seq} ({kind}) has an unexpected payload: {message}")]
    BadPayload {
        seq: i64,
        kind: EventKind,
        message: String,
    },
}

/// Where a change ended up (or `InFlight` while the loop still works on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeState {
    Accepted,
    Rejected,
    Crashed,
    PolicyRejected,
    BuildFailed,
    RolledBack,
    /// Accepted against a trunk that moved meanwhile (several workers): not merged, but
    /// re-tested on the new trunk as another change.
    Superseded,
    InFlight,
}

impl ChangeState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeState::Accepted => "accepted",
            ChangeState::Rejected => "rejected",
            ChangeState::Crashed => "crashed",
            ChangeState::PolicyRejected => "policy_rejected",
            ChangeState::BuildFailed => "build_failed",
            ChangeState::RolledBack => "rolled_back",
            ChangeState::Superseded => "superseded",
            ChangeState::InFlight => "in_flight",
        }
    }

    /// For people: "policy-rejected" rather than "policy_rejected".
    pub fn label(self) -> String {
        self.as_str().replace('_', "-")
    }
}

/// One proposed change, in the order it was first proposed.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeSummary {
    pub id: String,
    /// 1-based position in the session: the chart's x axis.
    pub index: usize,
    pub first_seq: i64,
    pub state: ChangeState,
    /// The step in progress (only while in flight): policy, build, fix_build, smoke, screen,
    /// confirm, merge or discard.
    pub stage: Option<String>,
    pub description: String,
    pub rationale: String,
    pub patch: String,
    pub model: Option<String>,
    /// Mean gain, trunk minus candidate: positive means the change lowered the metric.
    pub effect: Option<f64>,
    /// Interval of the gain, same sign convention as `effect`.
    pub ci: Option<(f64, f64)>,
    pub p_value: Option<f64>,
    pub mean_baseline: Option<f64>,
    /// The candidate's measured metric (decision mean, else mean of its finished runs).
    pub candidate_metric: Option<f64>,
    /// The trunk's metric when this change was tried (where crashed and policy-rejected
    /// changes, which have no metric of their own, are drawn).
    pub trunk_metric_before: Option<f64>,
    pub runs: usize,
    pub run_s: f64,
    pub reason: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

/// The trunk's metric from `x` on: a change's index when its accept set it, halfway to the next
/// change when a calibration did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrunkLevel {
    pub x: f64,
    pub value: f64,
}

/// A holdout audit, placed after the change that was last proposed before it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditMark {
    pub seq: i64,
    pub x: f64,
    pub outcome: String,
    pub trunk_commit: String,
    pub mean_diff: Option<f64>,
    pub p_value: Option<f64>,
}

/// Where the budget went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Costs {
    /// Wall time of every training run (calibration, smoke, screen, confirm, audit).
    pub training_s: f64,
    pub build_s: f64,
    /// Runs that crashed, diverged or timed out, plus the runs of changes that ended crashed.
    pub crash_lost_s: f64,
    pub runs: usize,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub proposed: usize,
    /// Accepted by the decision rule, including those rolled back later.
    pub accepted: usize,
    /// Accepted and still on the trunk.
    pub kept: usize,
    pub rejected: usize,
    pub crashed: usize,
    pub policy_rejected: usize,
    pub build_failed: usize,
    pub rolled_back: usize,
    /// Accepted on a trunk that moved; re-tested as another change.
    pub superseded: usize,
    pub in_flight: usize,
}

/// Everything the ledger says about one session.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSummary {
    pub session: String,
    pub trunk_branch: String,
    pub base_commit: String,
    pub trunk_commit: String,
    pub metric: String,
    pub agent: String,
    pub model: Option<String>,
    pub started: String,
    pub last_event: String,
    /// `None` while running (or after a kill); the session_end reason otherwise.
    pub ended: Option<String>,
    pub budget_s: f64,
    pub spent_s: f64,
    pub left_s: f64,
    /// Changes in flight at once (`--workers`; 1 before the option existed).
    pub workers: usize,
    /// Training runs at once (`[executor] slots`).
    pub slots: usize,
    /// The OS sandbox as the session last started or resumed (`crate::sandbox::describe`).
    pub sandbox: Option<serde_json::Value>,
    pub counts: Counts,
    /// The trunk's metric now (last calibration, or the last accepted change's measurement).
    pub trunk_metric: Option<f64>,
    /// The lowest trunk metric the session has held.
    pub best_trunk_metric: Option<f64>,
    pub baseline_metric: Option<f64>,
    pub run_sd: Option<f64>,
    pub min_effect: Option<f64>,
    pub current: Option<Current>,
    pub changes: Vec<ChangeSummary>,
    pub trunk: Vec<TrunkLevel>,
    pub audits: Vec<AuditMark>,
    pub costs: Costs,
    /// The wait (for the provider, or a circuit-breaker pause) the loop is in, if any.
    pub waiting: Option<Pause>,
    pub last_seq: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Current {
    pub change: String,
    pub description: String,
    pub stage: String,
}

impl SessionSummary {
    /// The named session, or the ledger's latest one.
    pub fn load(ledger: &Ledger, session: Option<&str>) -> Result<SessionSummary, SummaryError> {
        let events = match session {
            Some(s) => ledger.events_for_session(s)?,
            // One read of the ledger: find the latest session and keep its events.
            None => {
                let all = ledger.events()?;
                let latest = latest_in(&all).ok_or(SummaryError::NoSession)?.to_string();
                all.into_iter().filter(|e| e.session == latest).collect()
            }
        };
        if !events.iter().any(|e| e.kind == EventKind::SessionStart) {
            return Err(SummaryError::UnknownSession(
                session.unwrap_or_default().to_string(),
            ));
        }
        SessionSummary::from_events(&events)
    }

    /// Replays one session's events (in seq order).
    pub fn from_events(events: &[Event]) -> Result<SessionSummary, SummaryError> {
        let mut replay = Replay::default();
        for e in events {
            replay.apply(e)?;
        }
        replay.summary().ok_or(SummaryError::NoSession)
    }

    pub fn change(&self, id: &str) -> Option<&ChangeSummary> {
        self.changes.iter().find(|c| c.id == id)
    }
}

/// The session with the newest session_start.
pub fn latest_session(ledger: &Ledger) -> Result<Option<String>, SummaryError> {
    Ok(latest_in(&ledger.events()?).map(str::to_string))
}

fn latest_in(events: &[Event]) -> Option<&str> {
    events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::SessionStart)
        .map(|e| e.session.as_str())
}

#[derive(Debug, Default)]
struct ChangeLog {
    id: String,
    first_seq: i64,
    proposals: Vec<Propose>,
    policy: Option<Policy>,
    builds: Vec<Build>,
    runs: Vec<RunResult>,
    decision: Option<Decision>,
    merged: bool,
    discarded: bool,
    /// Where it ended up, as the ledger's one fold of the events says.
    status: ChangeStatus,
    rollback: Option<Rollback>,
    trunk_before: Option<f64>,
}

/// Folds a session's events, one at a time, into a [`SessionSummary`].
#[derive(Debug, Default)]
pub struct Replay {
    start: Option<(SessionStart, String)>,
    /// Changes in flight at once (`--workers`), as the session last started or resumed.
    workers: usize,
    /// Training runs at once (`[executor] slots`; 0 when the session did not record it).
    slots: usize,
    sandbox: Option<serde_json::Value>,
    session: String,
    changes: Vec<ChangeLog>,
    index: BTreeMap<String, usize>,
    calibrations: Vec<Calibration>,
    session_runs: Vec<RunResult>,
    trunk: Vec<TrunkLevel>,
    trunk_commit: String,
    audits: Vec<AuditMark>,
    end: Option<SessionEnd>,
    /// The last recorded wait, until the loop goes on (a proposal) or ends.
    waiting: Option<Pause>,
    spent_closed_s: f64,
    segment: Option<(f64, f64)>,
    last_ts: String,
    last_seq: i64,
    /// The ledger's fold of the same events: each change's status comes from it.
    fold: Option<SessionState>,
}

fn parse<T: DeserializeOwned>(e: &Event) -> Result<T, SummaryError> {
    serde_json::from_value(e.payload.clone()).map_err(|err| SummaryError::BadPayload {
        seq: e.seq,
        kind: e.kind,
        message: err.to_string(),
    })
}

fn timestamp_s(ts: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
}

fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

impl Replay {
    /// The session's events must come in seq order; events of other sessions are ignored once
    /// a session has started.
    pub fn apply(&mut self, e: &Event) -> Result<(), SummaryError> {
        if self.start.is_some() && e.session != self.session {
            return Ok(());
        }
        if self.start.is_none() && e.kind != EventKind::SessionStart {
            return Ok(());
        }
        let folded = match &mut self.fold {
            None => SessionState::begin(e).map(|f| self.fold = Some(f)),
            Some(fold) => fold.apply(e),
        };
        folded.map_err(|err| SummaryError::BadPayload {
            seq: e.seq,
            kind: e.kind,
            message: err.to_string(),
        })?;
        self.track_time(e);
        let change = e.change.as_deref().map(|id| self.change_slot(id, e.seq));
        if let (Some(i), Some(fold)) = (change, &self.fold) {
            if let Some(c) = fold.change(&self.changes[i].id) {
                self.changes[i].status = c.status();
            }
        }
        match (e.kind, change) {
            (EventKind::SessionStart, _) => {
                let start: SessionStart = parse(e)?;
                self.workers = workers_in(&e.payload);
                self.slots = e
                    .payload
                    .get("slots")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0) as usize;
                self.sandbox = e.payload.get("sandbox").cloned();
                self.session = e.session.clone();
                self.trunk_commit = start.base_commit.clone();
                self.start = Some((start, e.ts.clone()));
            }
            (EventKind::Calibration, _) => {
                let c: Calibration = parse(e)?;
                if let Some(m) = mean(c.baseline.iter().map(|s| s.value)) {
                    // Between changes (a re-measurement after a rollback, say), so the step
                    // line shows the change's own level before the new one.
                    let n = self.changes.len();
                    self.set_trunk(if n == 0 { 0.0 } else { n as f64 + 0.5 }, m);
                }
                self.calibrations.push(c);
            }
            (EventKind::Propose, Some(i)) => {
                self.waiting = None;
                self.changes[i].proposals.push(parse(e)?)
            }
            (EventKind::Error, None) => {
                if let Some(p) = Pause::of(e.kind, &e.payload) {
                    self.waiting = Some(p);
                }
            }
            (EventKind::Policy, Some(i)) => self.changes[i].policy = Some(parse(e)?),
            (EventKind::Build, Some(i)) => self.changes[i].builds.push(parse(e)?),
            (EventKind::RunResult, Some(i)) => self.changes[i].runs.push(parse(e)?),
            (EventKind::RunResult, None) => self.session_runs.push(parse(e)?),
            (EventKind::Decision, Some(i)) => {
                self.changes[i].decision = Some(parse(e)?);
            }
            (EventKind::Merge, Some(i)) => {
                // The trunk moves at the merge: an accepted change superseded by a re-test
                // (several workers) never reaches it.
                let measured = self.changes[i]
                    .decision
                    .as_ref()
                    .and_then(|d| d.mean_candidate)
                    .or_else(|| candidate_mean(&self.changes[i].runs));
                if let Some(m) = measured {
                    self.set_trunk((i + 1) as f64, m);
                }
                self.changes[i].merged = true;
                self.trunk_commit = parse::<agentloop_ledger::payload::Merge>(e)?.commit;
            }
            (EventKind::Discard, Some(i)) => {
                self.changes[i].discarded = true;
            }
            (EventKind::Rollback, Some(i)) => {
                let r: Rollback = parse(e)?;
                self.trunk_commit = r.revert_commit.clone();
                self.changes[i].rollback = Some(r);
            }
            // Bisection probes and resolutions of an audit (`of_audit`) are steps, not audits.
            (EventKind::Audit, _) if e.payload.get("of_audit").is_none() => {
                let a: Audit = parse(e)?;
                self.audits.push(AuditMark {
                    seq: e.seq,
                    x: self.changes.len() as f64 + 0.5,
                    outcome: a.outcome,
                    trunk_commit: a.trunk_commit,
                    mean_diff: a.mean_diff,
                    p_value: a.p_value,
                });
            }
            (EventKind::SessionEnd, _) => {
                self.waiting = None;
                self.end = Some(parse(e)?)
            }
            _ => {}
        }
        Ok(())
    }

    /// Budget spent: wall time from session start (or a resume) to the last event of each
    /// segment, so time the process was dead does not count (as the loop itself reckons it).
    fn track_time(&mut self, e: &Event) {
        self.last_seq = e.seq;
        self.last_ts = e.ts.clone();
        let Some(t) = timestamp_s(&e.ts) else { return };
        let resumes = e.kind == EventKind::Budget
            && e.payload.get("resumed").and_then(|v| v.as_bool()) == Some(true);
        // `workers: null`: resumed without `--workers`, so the number it had is kept.
        if resumes
            && e.payload
                .get("workers")
                .is_some_and(serde_json::Value::is_u64)
        {
            self.workers = workers_in(&e.payload);
        }
        if resumes {
            if let Some(sandbox) = e.payload.get("sandbox").filter(|v| !v.is_null()) {
                self.sandbox = Some(sandbox.clone());
            }
        }
        if e.kind == EventKind::SessionStart || resumes {
            if let Some((s, last)) = self.segment {
                self.spent_closed_s += (last - s).max(0.0);
            }
            self.segment = Some((t, t));
        } else if let Some((_, last)) = &mut self.segment {
            *last = t;
        }
    }

    fn change_slot(&mut self, id: &str, seq: i64) -> usize {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let trunk_before = self.trunk.last().map(|l| l.value);
        self.changes.push(ChangeLog {
            id: id.to_string(),
            first_seq: seq,
            trunk_before,
            ..Default::default()
        });
        self.index.insert(id.to_string(), self.changes.len() - 1);
        self.changes.len() - 1
    }

    /// A later value at the same x (two calibrations in a row) replaces the earlier one.
    fn set_trunk(&mut self, x: f64, value: f64) {
        match self.trunk.last_mut() {
            Some(last) if last.x == x => last.value = value,
            _ => self.trunk.push(TrunkLevel { x, value }),
        }
    }

    /// Sessions that did not record their slots ran one run per worker at most.
    fn slots_or_workers(&self) -> usize {
        if self.slots > 0 {
            self.slots.max(self.workers)
        } else {
            self.workers.max(1)
        }
    }

    /// `None` until a session_start has been seen.
    pub fn summary(&self) -> Option<SessionSummary> {
        let (start, started) = self.start.as_ref()?;
        let changes: Vec<ChangeSummary> = self
            .changes
            .iter()
            .enumerate()
            .map(|(i, c)| summarize_change(c, i + 1))
            .collect();
        let states: Vec<ChangeState> = changes.iter().map(|c| c.state).collect();
        let spent_s = self.spent_s();
        let last_calibration = self.calibrations.last();
        let model = start.agent.model.clone().or_else(|| {
            self.changes
                .iter()
                .rev()
                .find_map(|c| c.proposals.last().and_then(|p| p.model.clone()))
        });
        Some(SessionSummary {
            session: self.session.clone(),
            trunk_branch: start.trunk_branch.clone(),
            base_commit: start.base_commit.clone(),
            trunk_commit: self.trunk_commit.clone(),
            metric: self.metric_name(),
            agent: start.agent.kind.clone(),
            model,
            started: started.clone(),
            last_event: self.last_ts.clone(),
            ended: self.end.as_ref().map(|e| e.reason.clone()),
            budget_s: start.budget_s,
            spent_s,
            left_s: (start.budget_s - spent_s).max(0.0),
            workers: self.workers.max(1),
            slots: self.slots_or_workers(),
            sandbox: self.sandbox.clone(),
            counts: count(&states),
            trunk_metric: self.trunk.last().map(|l| l.value),
            best_trunk_metric: self.best_trunk(),
            baseline_metric: self.baseline_metric(),
            run_sd: last_calibration.map(|c| c.run_sd),
            min_effect: last_calibration.map(|c| c.min_effect),
            current: self.current(&states),
            costs: self.costs(&states),
            waiting: self.waiting.clone(),
            changes,
            trunk: self.trunk.clone(),
            audits: self.audits.clone(),
            last_seq: self.last_seq,
        })
    }

    /// The status alone: cheap enough to recompute after every event (no diffs are copied).
    pub fn status(&self) -> Option<Status> {
        let (start, _) = self.start.as_ref()?;
        let states: Vec<ChangeState> = self.changes.iter().map(state_of).collect();
        let spent_s = self.spent_s();
        Some(
            Status {
                session: self.session.clone(),
                state: if self.end.is_some() {
                    "ended"
                } else {
                    "running"
                },
                end_reason: self.end.as_ref().map(|e| e.reason.clone()),
                trunk_branch: start.trunk_branch.clone(),
                trunk_commit: self.trunk_commit.clone(),
                metric: self.metric_name(),
                budget_s: start.budget_s,
                spent_s,
                left_s: (start.budget_s - spent_s).max(0.0),
                workers: self.workers.max(1),
                slots: self.slots_or_workers(),
                sandbox: self.sandbox.clone(),
                counts: count(&states),
                trunk_metric: self.trunk.last().map(|l| l.value),
                best_trunk_metric: self.best_trunk(),
                baseline_metric: self.baseline_metric(),
                current: self.current(&states),
                costs: self.costs(&states),
                waiting: self.waiting.clone(),
                overhead_share: None,
                decisions_per_hour: None,
                overhead_s_per_decision: None,
                last_seq: self.last_seq,
            }
            .with_rates(),
        )
    }

    fn spent_s(&self) -> f64 {
        self.spent_closed_s + self.segment.map_or(0.0, |(s, l)| (l - s).max(0.0))
    }

    fn best_trunk(&self) -> Option<f64> {
        self.trunk.iter().map(|l| l.value).reduce(f64::min)
    }

    fn baseline_metric(&self) -> Option<f64> {
        self.calibrations
            .first()
            .and_then(|c| mean(c.baseline.iter().map(|s| s.value)))
    }

    fn current(&self, states: &[ChangeState]) -> Option<Current> {
        let i = states.iter().position(|s| *s == ChangeState::InFlight)?;
        let c = &self.changes[i];
        Some(Current {
            change: c.id.clone(),
            description: c
                .proposals
                .last()
                .map(|p| p.description.clone())
                .unwrap_or_default(),
            stage: stage_of(c),
        })
    }

    fn metric_name(&self) -> String {
        self.session_runs
            .iter()
            .chain(self.changes.iter().flat_map(|c| c.runs.iter()))
            .find_map(|r| r.metric.clone())
            .unwrap_or_else(|| "val_bpb".to_string())
    }

    fn costs(&self, states: &[ChangeState]) -> Costs {
        let all_runs = || {
            self.session_runs
                .iter()
                .chain(self.changes.iter().flat_map(|c| c.runs.iter()))
        };
        let failed_run_s: f64 = all_runs()
            .filter(|r| r.exit_status != ExitStatus::Ok)
            .filter_map(|r| r.wall_s)
            .sum();
        // The finished runs of a change that crashed were spent for nothing, too.
        let crashed_change_ok_s: f64 = self
            .changes
            .iter()
            .zip(states)
            .filter(|(_, s)| **s == ChangeState::Crashed)
            .flat_map(|(c, _)| c.runs.iter())
            .filter(|r| r.exit_status == ExitStatus::Ok)
            .filter_map(|r| r.wall_s)
            .sum();
        let proposals = || self.changes.iter().flat_map(|c| c.proposals.iter());
        Costs {
            training_s: all_runs().filter_map(|r| r.wall_s).sum(),
            build_s: self
                .changes
                .iter()
                .flat_map(|c| c.builds.iter())
                .filter_map(|b| b.duration_s)
                .sum(),
            crash_lost_s: failed_run_s + crashed_change_ok_s,
            runs: all_runs().count(),
            prompt_tokens: proposals().filter_map(|p| p.prompt_tokens).sum(),
            completion_tokens: proposals().filter_map(|p| p.completion_tokens).sum(),
            cost_usd: proposals().filter_map(|p| p.cost_usd).sum(),
        }
    }
}

fn candidate_mean(runs: &[RunResult]) -> Option<f64> {
    mean(
        runs.iter()
            .filter(|r| r.arm == agentloop_ledger::payload::Arm::Candidate)
            .filter(|r| r.exit_status == ExitStatus::Ok)
            .filter_map(RunResult::metric_value),
    )
}

/// `workers` of a session_start or resume event (sessions before `--workers`: 1).
fn workers_in(payload: &serde_json::Value) -> usize {
    payload
        .get("workers")
        .and_then(serde_json::Value::as_u64)
        .map_or(1, |w| w.max(1) as usize)
}

fn state_of(c: &ChangeLog) -> ChangeState {
    match c.status {
        ChangeStatus::Proposed => ChangeState::InFlight,
        ChangeStatus::Accepted => ChangeState::Accepted,
        ChangeStatus::Rejected => ChangeState::Rejected,
        ChangeStatus::Crashed => ChangeState::Crashed,
        ChangeStatus::PolicyRejected => ChangeState::PolicyRejected,
        ChangeStatus::BuildFailed => ChangeState::BuildFailed,
        ChangeStatus::Superseded => ChangeState::Superseded,
        ChangeStatus::RolledBack => ChangeState::RolledBack,
    }
}

/// The step the loop is on for an undecided or unsettled change.
fn stage_of(c: &ChangeLog) -> String {
    if let Some(d) = &c.decision {
        return if d.outcome == DecisionOutcome::Accepted && !c.merged {
            "merge"
        } else {
            "discard"
        }
        .into();
    }
    if let Some(r) = c.runs.last() {
        return match r.stage {
            Stage::Smoke => "smoke",
            Stage::Screen => "screen",
            Stage::Confirm => "confirm",
            Stage::Audit => "audit",
            Stage::Calibration => "calibration",
            Stage::Remeasure => "remeasure",
        }
        .into();
    }
    match (c.builds.last(), &c.policy) {
        (Some(b), _) if b.ok => "smoke".into(),
        (Some(_), _) => "fix_build".into(),
        (None, Some(_)) => "build".into(),
        (None, None) => "policy".into(),
    }
}

/// The gain and its interval, trunk minus candidate. The decision engine records
/// `mean_diff` as that gain; a record that stored candidate minus trunk instead is recognised
/// by its means and turned around, so the sign on the chart is always "positive helped".
fn effect_of(d: &Decision) -> (Option<f64>, Option<(f64, f64)>) {
    let from_means = d.mean_baseline.zip(d.mean_candidate).map(|(b, c)| b - c);
    let ci = d.ci_low.zip(d.ci_high);
    match (from_means, d.mean_diff) {
        (Some(gain), Some(diff)) if (diff + gain).abs() < (diff - gain).abs() => {
            (Some(gain), ci.map(|(lo, hi)| (-hi, -lo)))
        }
        (Some(gain), _) => (Some(gain), ci),
        (None, diff) => (diff, ci),
    }
}

fn summarize_change(c: &ChangeLog, index: usize) -> ChangeSummary {
    let state = state_of(c);
    let last = c.proposals.last();
    let (effect, ci) = c.decision.as_ref().map(effect_of).unwrap_or((None, None));
    ChangeSummary {
        id: c.id.clone(),
        index,
        first_seq: c.first_seq,
        state,
        stage: (state == ChangeState::InFlight).then(|| stage_of(c)),
        description: last.map(|p| p.description.clone()).unwrap_or_default(),
        rationale: last.map(|p| p.rationale.clone()).unwrap_or_default(),
        patch: last.map(|p| p.patch.clone()).unwrap_or_default(),
        model: last.and_then(|p| p.model.clone()),
        effect,
        ci,
        p_value: c.decision.as_ref().and_then(|d| d.p_value),
        mean_baseline: c.decision.as_ref().and_then(|d| d.mean_baseline),
        candidate_metric: c
            .decision
            .as_ref()
            .and_then(|d| d.mean_candidate)
            .or_else(|| candidate_mean(&c.runs)),
        trunk_metric_before: c.trunk_before,
        runs: c.runs.len(),
        run_s: c.runs.iter().filter_map(|r| r.wall_s).sum(),
        reason: reason_of(c),
        prompt_tokens: c.proposals.iter().filter_map(|p| p.prompt_tokens).sum(),
        completion_tokens: c.proposals.iter().filter_map(|p| p.completion_tokens).sum(),
        cost_usd: c.proposals.iter().filter_map(|p| p.cost_usd).sum(),
    }
}

/// Why it ended: the policy's words for a policy rejection (they name the rule and the path),
/// the decision's otherwise.
fn reason_of(c: &ChangeLog) -> Option<String> {
    match &c.policy {
        Some(p) if p.outcome == PolicyOutcome::Rejected => Some(format!(
            "policy {}: {}",
            p.code.as_deref().unwrap_or("rejected"),
            p.message.as_deref().unwrap_or("")
        )),
        _ => c.decision.as_ref().and_then(|d| d.reason.clone()),
    }
}

fn count(states: &[ChangeState]) -> Counts {
    let n = |s: ChangeState| states.iter().filter(|c| **c == s).count();
    Counts {
        proposed: states.len(),
        accepted: n(ChangeState::Accepted) + n(ChangeState::RolledBack),
        kept: n(ChangeState::Accepted),
        rejected: n(ChangeState::Rejected),
        crashed: n(ChangeState::Crashed),
        policy_rejected: n(ChangeState::PolicyRejected),
        build_failed: n(ChangeState::BuildFailed),
        rolled_back: n(ChangeState::RolledBack),
        superseded: n(ChangeState::Superseded),
        in_flight: n(ChangeState::InFlight),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decision(base: f64, cand: f64, diff: f64, ci: (f64, f64)) -> Decision {
        serde_json::from_value(json!({
            "outcome": "accepted", "rule_version": "t", "mean_baseline": base,
            "mean_candidate": cand, "mean_diff": diff, "ci_low": ci.0, "ci_high": ci.1,
        }))
        .unwrap()
    }

    #[test]
    fn effect_is_trunk_minus_candidate_whichever_way_the_record_stored_it() {
        // The decision engine's convention: mean_diff is the gain.
        let (e, ci) = effect_of(&decision(1.5, 1.49, 0.01, (0.006, 0.014)));
        assert!((e.unwrap() - 0.01).abs() < 1e-12);
        assert_eq!(ci, Some((0.006, 0.014)));
        // A record of candidate minus trunk is turned around, interval too.
        let (e, ci) = effect_of(&decision(1.5, 1.49, -0.01, (-0.014, -0.006)));
        assert!((e.unwrap() - 0.01).abs() < 1e-12);
        assert_eq!(ci, Some((0.006, 0.014)));
    }

    fn event(seq: i64, ts: &str, kind: EventKind, payload: serde_json::Value) -> Event {
        Event {
            seq,
            ts: ts.into(),
            kind,
            session: "s".into(),
            change: None,
            payload,
            payload_sha256: String::new(),
            prev_hash: String::new(),
            entry_hash: String::new(),
        }
    }

    #[test]
    fn budget_counts_only_the_time_the_loop_was_alive() {
        let start = json!({"budget_s": 600.0, "repo": "/r", "trunk_branch": "t",
                           "base_commit": "b", "agent": {"kind": "offline"}});
        let budget =
            |resumed: bool| json!({"spent_s": 0.0, "remaining_s": 0.0, "resumed": resumed});
        let events = [
            event(1, "2026-01-01T00:00:00Z", EventKind::SessionStart, start),
            event(2, "2026-01-01T00:01:00Z", EventKind::Budget, budget(false)),
            // Killed here; resumed an hour later.
            event(3, "2026-01-01T01:01:00Z", EventKind::Budget, budget(true)),
            event(4, "2026-01-01T01:01:30Z", EventKind::Budget, budget(false)),
        ];
        let s = SessionSummary::from_events(&events).unwrap();
        assert_eq!(s.spent_s, 90.0);
        assert_eq!(s.left_s, 510.0);
        assert_eq!(s.ended, None);
    }

    #[test]
    fn a_payload_that_does_not_fit_its_kind_is_named() {
        let events = [event(
            7,
            "2026-01-01T00:00:00Z",
            EventKind::SessionStart,
            json!({"budget_s": "lots"}),
        )];
        let err = SessionSummary::from_events(&events).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("event 7 (session_start)"), "{text}");
    }
}
