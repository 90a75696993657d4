//! [`Replay`]: a session's events folded one at a time into a [`SessionSummary`].

use std::collections::BTreeMap;

use agentloop_ledger::payload::{
    Audit, Calibration, ExitStatus, Pause, Rollback, RunResult, SessionEnd, SessionStart,
};
use agentloop_ledger::state::SessionState;
use agentloop_ledger::{Event, EventKind};
use serde::de::DeserializeOwned;

use super::headline::Status;

use super::change::{candidate_mean, count, mean, stage_of, state_of, summarize_change, ChangeLog};
use super::{
    AuditMark, ChangeState, ChangeSummary, Costs, Current, SessionSummary, SummaryError, TrunkLevel,
};

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

    /// The final verdict's line: the recorded comparison, else what the session_end says
    /// (no merges, or why it did not finish).
    fn verdict(&self) -> Option<String> {
        let fold = self.fold.as_ref()?;
        if let Some(c) = fold.final_verdict() {
            return Some(c.gain_line());
        }
        let said = self.end.as_ref()?.extra.get("verdict")?.as_str()?;
        Some(said.to_string())
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
            verdict: self.verdict(),
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
                verdict: self.verdict(),
                guard_rejects: self
                    .changes
                    .iter()
                    .filter_map(|c| c.decision.as_ref()?.reason.as_deref())
                    .filter_map(super::headline::guard_tag)
                    .collect(),
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
            base_build_s: self
                .start
                .as_ref()
                .and_then(|(start, _)| start.extra.get("base_build_s")?.as_f64())
                .unwrap_or(0.0),
            crash_lost_s: failed_run_s + crashed_change_ok_s,
            runs: all_runs().count(),
            prompt_tokens: proposals().filter_map(|p| p.prompt_tokens).sum(),
            completion_tokens: proposals().filter_map(|p| p.completion_tokens).sum(),
            cost_usd: proposals().filter_map(|p| p.cost_usd).sum(),
        }
    }
}

/// `workers` of a session_start or resume event (sessions before `--workers`: 1).
fn workers_in(payload: &serde_json::Value) -> usize {
    payload
        .get("workers")
        .and_then(serde_json::Value::as_u64)
        .map_or(1, |w| w.max(1) as usize)
}
