//! What the ledger says about a session: the source of truth for status, resume and rollback.
//! Built by replaying the session's events in order; nothing here touches git or runs anything.

use std::collections::BTreeMap;

use agentloop_ledger::payload::{
    Audit, Build, Calibration, Decision, DecisionOutcome, Discard, ErrorEvent, Merge, Pause,
    Policy, Propose, Rollback, RunResult, SessionEnd, SessionStart,
};
use agentloop_ledger::{Event, EventKind, Ledger};
use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

/// Everything recorded about one change, in order.
#[derive(Debug, Default, Clone)]
pub struct ChangeRecord {
    pub id: String,
    pub first_seq: i64,
    pub proposals: Vec<Propose>,
    pub policies: Vec<Policy>,
    pub builds: Vec<Build>,
    pub runs: Vec<RunResult>,
    pub errors: Vec<ErrorEvent>,
    pub decision: Option<(i64, Decision)>,
    pub merge: Option<(i64, Merge)>,
    pub discard: Option<Discard>,
    pub rollback: Option<(i64, Rollback)>,
}

impl ChangeRecord {
    pub fn is_decided(&self) -> bool {
        self.decision.is_some()
    }

    /// The change that re-tests this one on a newer trunk (its discard says so), if any.
    pub fn superseded_by(&self) -> Option<&str> {
        self.discard
            .as_ref()
            .and_then(|d| d.extra.get("superseded_by"))
            .and_then(|v| v.as_str())
    }

    /// The change this one re-tests (its first proposal says so), if any.
    pub fn retest_of(&self) -> Option<&str> {
        self.proposals
            .first()
            .and_then(|p| p.extra.get("retest_of"))
            .and_then(|v| v.as_str())
    }

    /// The trunk commit the change was proposed against.
    pub fn base_commit(&self) -> Option<&str> {
        self.proposals
            .first()
            .and_then(|p| p.parent_commit.as_deref())
    }

    /// A decision that counts: made, and not superseded by a re-test on a newer trunk.
    pub fn counted_decision(&self) -> Option<&Decision> {
        match (&self.decision, self.superseded_by()) {
            (Some((_, d)), None) => Some(d),
            _ => None,
        }
    }

    /// Decided, and the decision's consequence (merge or discard) recorded too; or superseded.
    pub fn is_settled(&self) -> bool {
        if self.superseded_by().is_some() {
            return true;
        }
        match &self.decision {
            None => false,
            Some((_, d)) if d.outcome == DecisionOutcome::Accepted => self.merge.is_some(),
            Some(_) => self.discard.is_some(),
        }
    }

    pub fn description(&self) -> String {
        self.proposals
            .last()
            .map(|p| p.description.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct SessionHistory {
    pub session: String,
    pub start: SessionStart,
    pub start_seq: i64,
    /// Changes in the order they were first proposed.
    pub changes: Vec<ChangeRecord>,
    /// Calibrations in order (the last one holds for the current trunk).
    pub calibrations: Vec<(i64, Calibration)>,
    /// Session-level runs (calibration, re-measurement, audits), in order.
    pub session_runs: Vec<RunResult>,
    /// Holdout audit events (audits and their bisection steps), in order.
    pub audits: Vec<(i64, Audit)>,
    pub ends: Vec<SessionEnd>,
    /// The last wait for the provider since the last proposal was recorded: the streak of
    /// provider failures a resumed session continues.
    pub provider_streak: Option<Pause>,
    /// Circuit-breaker pauses in order: trips so far, and where the breaker's count restarts.
    pub breaker_pauses: Vec<(i64, Pause)>,
    /// Whether the last event of the session is a `session_end`.
    pub ended: bool,
    /// Seconds of budget spent, summed over the session's segments (start or resume to last event).
    pub spent_s: f64,
    pub last_seq: i64,
    /// The trunk commit the ledger says is current: base, then each merge or rollback.
    pub trunk_commit: String,
}

fn parse<T: DeserializeOwned>(e: &Event) -> Result<T> {
    serde_json::from_value(e.payload.clone()).with_context(|| {
        format!(
            "ledger event {} ({}) has an unexpected payload",
            e.seq, e.kind
        )
    })
}

impl SessionHistory {
    /// Replays `events` (one session's, in seq order). `None` when they hold no session_start.
    pub fn replay(session: &str, events: &[Event]) -> Result<Option<SessionHistory>> {
        let Some(first) = events.iter().find(|e| e.kind == EventKind::SessionStart) else {
            return Ok(None);
        };
        let start: SessionStart = parse(first)?;
        let mut h = SessionHistory {
            session: session.to_string(),
            trunk_commit: start.base_commit.clone(),
            start,
            start_seq: first.seq,
            changes: Vec::new(),
            calibrations: Vec::new(),
            session_runs: Vec::new(),
            audits: Vec::new(),
            ends: Vec::new(),
            provider_streak: None,
            breaker_pauses: Vec::new(),
            ended: false,
            spent_s: 0.0,
            last_seq: first.seq,
        };
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut segment_start: Option<f64> = None;
        let mut segment_last: f64 = 0.0;
        for e in events {
            let t = timestamp_s(e);
            let resumes = e.kind == EventKind::Budget
                && e.payload.get("resumed").and_then(|v| v.as_bool()) == Some(true);
            if e.kind == EventKind::SessionStart || resumes {
                if let Some(s) = segment_start {
                    h.spent_s += (segment_last - s).max(0.0);
                }
                segment_start = Some(t);
            }
            segment_last = t;
            h.last_seq = e.seq;
            h.ended = e.kind == EventKind::SessionEnd;
            let change = match &e.change {
                Some(c) => {
                    let i = *index.entry(c.clone()).or_insert_with(|| {
                        h.changes.push(ChangeRecord {
                            id: c.clone(),
                            first_seq: e.seq,
                            ..Default::default()
                        });
                        h.changes.len() - 1
                    });
                    Some(i)
                }
                None => None,
            };
            match (e.kind, change) {
                (EventKind::Propose, Some(i)) => {
                    h.provider_streak = None;
                    h.changes[i].proposals.push(parse(e)?)
                }
                (EventKind::Error, None) => match Pause::of(e.kind, &e.payload) {
                    Some(p) if p.stage == Pause::PROVIDER_WAIT => h.provider_streak = Some(p),
                    Some(p) => h.breaker_pauses.push((e.seq, p)),
                    None => {}
                },
                (EventKind::Policy, Some(i)) => h.changes[i].policies.push(parse(e)?),
                (EventKind::Build, Some(i)) => h.changes[i].builds.push(parse(e)?),
                (EventKind::RunResult, Some(i)) => h.changes[i].runs.push(parse(e)?),
                (EventKind::RunResult, None) => h.session_runs.push(parse(e)?),
                (EventKind::Error, Some(i)) => h.changes[i].errors.push(parse(e)?),
                (EventKind::Decision, Some(i)) => h.changes[i].decision = Some((e.seq, parse(e)?)),
                (EventKind::Merge, Some(i)) => {
                    let m: Merge = parse(e)?;
                    h.trunk_commit = m.commit.clone();
                    h.changes[i].merge = Some((e.seq, m));
                }
                (EventKind::Discard, Some(i)) => h.changes[i].discard = Some(parse(e)?),
                (EventKind::Rollback, Some(i)) => {
                    let r: Rollback = parse(e)?;
                    h.trunk_commit = r.revert_commit.clone();
                    h.changes[i].rollback = Some((e.seq, r));
                }
                (EventKind::Calibration, _) => h.calibrations.push((e.seq, parse(e)?)),
                (EventKind::Audit, _) => h.audits.push((e.seq, parse(e)?)),
                (EventKind::SessionEnd, _) => h.ends.push(parse(e)?),
                _ => {}
            }
        }
        if let Some(s) = segment_start {
            h.spent_s += (segment_last - s).max(0.0);
        }
        Ok(Some(h))
    }

    pub fn change(&self, id: &str) -> Option<&ChangeRecord> {
        self.changes.iter().find(|c| c.id == id)
    }

    /// The first change in flight: proposed but not settled.
    pub fn in_flight(&self) -> Option<&ChangeRecord> {
        self.in_flight_all().next()
    }

    /// Every change in flight, in the order proposed (several when workers run in parallel).
    pub fn in_flight_all(&self) -> impl Iterator<Item = &ChangeRecord> {
        self.changes.iter().filter(|c| !c.is_settled())
    }

    /// Decisions with this outcome, not counting those superseded by a re-test.
    pub fn count(&self, outcome: DecisionOutcome) -> u32 {
        self.changes
            .iter()
            .filter(|c| matches!(c.counted_decision(), Some(d) if d.outcome == outcome))
            .count() as u32
    }

    /// Decided changes, not counting those superseded by a re-test (the re-test decides).
    pub fn decided(&self) -> u32 {
        self.changes
            .iter()
            .filter(|c| c.counted_decision().is_some())
            .count() as u32
    }

    /// Whether `agentloop start` should continue this session rather than begin a new one:
    /// it was killed (no session_end) or interrupted by Ctrl-C, and has budget left.
    pub fn resumable(&self) -> bool {
        // Killed (the last event is not a session_end), or ended by Ctrl-C.
        let interrupted =
            !self.ended || self.ends.last().map(|e| e.reason.as_str()) == Some("interrupted");
        interrupted && self.spent_s < self.start.budget_s
    }
}

fn timestamp_s(e: &Event) -> f64 {
    chrono::DateTime::parse_from_rfc3339(&e.ts)
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
        .unwrap_or(0.0)
}

/// The sessions in a ledger, oldest first.
pub fn sessions(events: &[Event]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if e.kind == EventKind::SessionStart && !out.contains(&e.session) {
            out.push(e.session.clone());
        }
    }
    out
}

/// The session's history, replayed from the ledger.
pub fn load(ledger: &Ledger, session: &str) -> Result<SessionHistory> {
    let events = ledger.events_for_session(session)?;
    SessionHistory::replay(session, &events)?
        .with_context(|| format!("session {session} has no session_start event in the ledger"))
}
