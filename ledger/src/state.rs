//! The one fold of a session's events: [`SessionState::apply`] takes events in seq order and
//! keeps what every reader needs (the loop on resume, `status`, the report, the derived
//! `changes` table): each change's record and its [`ChangeState`], the calibrations, the trunk
//! commit, the budget spent. The recorder folds each event as it appends it; a reader that
//! starts cold replays the session once ([`SessionState::load`]).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::payload::{
    Audit, Budget, Build, Calibration, Compare, Decision, DecisionOutcome, Discard, ErrorEvent,
    Merge, Pause, Policy, PolicyOutcome, Propose, Rollback, RunResult, SessionEnd, SessionStart,
    Stage,
};
use crate::views::ChangeStatus;
use crate::{Event, EventKind, Ledger, LedgerError, Result};

/// Where a change is on its way: each recorded step moves it forward.
///
/// Proposed -> Checked -> Built -> Smoked -> Evaluating -> Decided -> Merged | Discarded |
/// Superseded, and Merged -> RolledBack. A fix attempt after a failed build is a new proposal
/// (back to Proposed); a superseded change is re-tested as another change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeState {
    #[default]
    Proposed,
    /// The patch policy ran.
    Checked,
    Built,
    Smoked,
    /// Screen or confirm runs under way.
    Evaluating,
    Decided,
    Merged,
    Discarded,
    /// Its trunk moved before it could merge (or resume): re-tested as another change.
    Superseded,
    RolledBack,
}

impl ChangeState {
    /// The state after one more of the change's events.
    fn after(self, e: &Step) -> ChangeState {
        use ChangeState::*;
        match e {
            Step::Propose => Proposed,
            Step::Policy => Checked,
            Step::Build { ok: true } => Built,
            Step::Build { ok: false } => self,
            Step::Run(Stage::Smoke) => Smoked,
            Step::Run(_) => self.max(Evaluating),
            Step::Decision => Decided,
            Step::Merge => Merged,
            Step::Discard { superseded: true } => Superseded,
            Step::Discard { superseded: false } => Discarded,
            Step::Rollback => RolledBack,
            Step::Other => self,
        }
    }

    /// Merged, discarded, superseded or rolled back: nothing more happens to it in the loop.
    pub fn is_settled(self) -> bool {
        self >= ChangeState::Merged
    }
}

enum Step {
    Propose,
    Policy,
    Build { ok: bool },
    Run(Stage),
    Decision,
    Merge,
    Discard { superseded: bool },
    Rollback,
    Other,
}

/// Everything recorded about one change, in order.
#[derive(Debug, Default, Clone)]
pub struct ChangeRecord {
    pub id: String,
    pub first_seq: i64,
    pub last_seq: i64,
    pub state: ChangeState,
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
        self.discard.as_ref()?.superseded_by.as_deref()
    }

    /// The change this one re-tests (its first proposal says so), if any.
    pub fn retest_of(&self) -> Option<&str> {
        self.proposals.first()?.retest_of.as_deref()
    }

    /// The trunk commit the change was proposed against.
    pub fn base_commit(&self) -> Option<&str> {
        self.proposals.first()?.parent_commit.as_deref()
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
        self.state.is_settled()
    }

    /// Where the change ended up, as `status`, the report and the `changes` table name it.
    pub fn status(&self) -> ChangeStatus {
        match self.state {
            ChangeState::RolledBack => ChangeStatus::RolledBack,
            ChangeState::Superseded => ChangeStatus::Superseded,
            _ => match &self.decision {
                Some((_, d)) => d.outcome.into(),
                // A policy rejection is final even when no decision event follows it.
                None if self
                    .policies
                    .last()
                    .is_some_and(|p| p.outcome == PolicyOutcome::Rejected) =>
                {
                    ChangeStatus::PolicyRejected
                }
                None => ChangeStatus::Proposed,
            },
        }
    }

    pub fn description(&self) -> String {
        self.proposals
            .last()
            .map(|p| p.description.clone())
            .unwrap_or_default()
    }
}

/// One session as its events tell it.
#[derive(Debug, Clone)]
pub struct SessionState {
    pub session: String,
    pub start: SessionStart,
    pub start_seq: i64,
    /// Changes in the order they were first proposed.
    pub changes: Vec<ChangeRecord>,
    index: BTreeMap<String, usize>,
    /// Calibrations in order (the last one holds for the current trunk).
    pub calibrations: Vec<(i64, Calibration)>,
    /// Session-level runs (calibration, re-measurement, audits), in order.
    pub session_runs: Vec<RunResult>,
    /// Holdout audit events (audits and their bisection steps), in order.
    pub audits: Vec<(i64, Audit)>,
    pub ends: Vec<SessionEnd>,
    /// Paired comparisons recorded in the session (the final verdict), in order.
    pub compares: Vec<(i64, Compare)>,
    /// The last wait for the provider since the last proposal was recorded: the streak of
    /// provider failures a resumed session continues.
    pub provider_streak: Option<Pause>,
    /// Circuit-breaker pauses in order: trips so far, and where the breaker's count restarts.
    pub breaker_pauses: Vec<(i64, Pause)>,
    /// Whether the last event of the session is a `session_end`.
    pub ended: bool,
    /// Seconds of budget spent, summed over the session's segments (start or resume to last event).
    pub spent_s: f64,
    /// Seconds of the segments before the current one.
    spent_before_s: f64,
    segment_start_s: f64,
    pub last_seq: i64,
    /// The trunk commit the ledger says is current: base, then each merge or rollback.
    pub trunk_commit: String,
}

fn parse<T: DeserializeOwned>(e: &Event) -> Result<T> {
    T::deserialize(&e.payload).map_err(|err| LedgerError::InvalidPayload {
        kind: e.kind.to_string(),
        message: format!("event {}: {err}", e.seq),
    })
}

impl SessionState {
    /// The state right after the session's `session_start` event.
    pub fn begin(first: &Event) -> Result<SessionState> {
        let start: SessionStart = parse(first)?;
        let t = timestamp_s(first);
        Ok(SessionState {
            session: first.session.clone(),
            trunk_commit: start.base_commit.clone(),
            start,
            start_seq: first.seq,
            changes: Vec::new(),
            index: BTreeMap::new(),
            calibrations: Vec::new(),
            session_runs: Vec::new(),
            audits: Vec::new(),
            ends: Vec::new(),
            compares: Vec::new(),
            provider_streak: None,
            breaker_pauses: Vec::new(),
            ended: false,
            spent_s: 0.0,
            spent_before_s: 0.0,
            segment_start_s: t,
            last_seq: first.seq,
        })
    }

    /// Replays `events` (one session's, in seq order). `None` when they hold no session_start.
    pub fn replay(events: &[Event]) -> Result<Option<SessionState>> {
        let Some(at) = events
            .iter()
            .position(|e| e.kind == EventKind::SessionStart)
        else {
            return Ok(None);
        };
        let mut state = SessionState::begin(&events[at])?;
        for e in &events[at + 1..] {
            state.apply(e)?;
        }
        Ok(Some(state))
    }

    /// The session's state, replayed from the ledger.
    pub fn load(ledger: &Ledger, session: &str) -> Result<SessionState> {
        SessionState::replay(&ledger.events_for_session(session)?)?.ok_or_else(|| {
            LedgerError::InvalidPayload {
                kind: EventKind::SessionStart.to_string(),
                message: format!("session {session} has no session_start event in the ledger"),
            }
        })
    }

    /// Folds one more event of this session (events of other sessions are ignored).
    pub fn apply(&mut self, e: &Event) -> Result<()> {
        if e.session != self.session || e.seq <= self.last_seq {
            return Ok(());
        }
        let t = timestamp_s(e);
        if e.kind == EventKind::Budget {
            let b: Budget = parse(e)?;
            if b.resumed {
                // A resume: the time the process was dead does not count.
                self.spent_before_s = self.spent_s;
                self.segment_start_s = t;
            }
        }
        self.spent_s = self.spent_before_s + (t - self.segment_start_s).max(0.0);
        self.last_seq = e.seq;
        self.ended = e.kind == EventKind::SessionEnd;
        let Some(id) = &e.change else {
            match e.kind {
                EventKind::RunResult => self.session_runs.push(parse(e)?),
                EventKind::Calibration => self.calibrations.push((e.seq, parse(e)?)),
                EventKind::Audit => self.audits.push((e.seq, parse(e)?)),
                EventKind::SessionEnd => self.ends.push(parse(e)?),
                EventKind::Compare => self.compares.push((e.seq, parse(e)?)),
                EventKind::Error => match Pause::of(e.kind, &e.payload) {
                    Some(p) if p.stage == Pause::PROVIDER_WAIT => self.provider_streak = Some(p),
                    Some(p) => self.breaker_pauses.push((e.seq, p)),
                    None => {}
                },
                _ => {}
            }
            return Ok(());
        };
        let i = match self.index.get(id) {
            Some(&i) => i,
            None => {
                self.changes.push(ChangeRecord {
                    id: id.clone(),
                    first_seq: e.seq,
                    ..Default::default()
                });
                self.index.insert(id.clone(), self.changes.len() - 1);
                self.changes.len() - 1
            }
        };
        if e.kind == EventKind::Propose {
            // The provider answered: a streak of failures is over.
            self.provider_streak = None;
        }
        let c = &mut self.changes[i];
        c.last_seq = e.seq;
        let step = match e.kind {
            EventKind::Propose => {
                c.proposals.push(parse(e)?);
                Step::Propose
            }
            EventKind::Policy => {
                c.policies.push(parse(e)?);
                Step::Policy
            }
            EventKind::Build => {
                let b: Build = parse(e)?;
                let ok = b.ok;
                c.builds.push(b);
                Step::Build { ok }
            }
            EventKind::RunResult => {
                let r: RunResult = parse(e)?;
                let stage = r.stage;
                c.runs.push(r);
                Step::Run(stage)
            }
            EventKind::Error => {
                c.errors.push(parse(e)?);
                Step::Other
            }
            EventKind::Decision => {
                c.decision = Some((e.seq, parse(e)?));
                Step::Decision
            }
            EventKind::Merge => {
                let m: Merge = parse(e)?;
                self.trunk_commit = m.commit.clone();
                c.merge = Some((e.seq, m));
                Step::Merge
            }
            EventKind::Discard => {
                let d: Discard = parse(e)?;
                let superseded = d.superseded_by.is_some();
                c.discard = Some(d);
                Step::Discard { superseded }
            }
            EventKind::Rollback => {
                let r: Rollback = parse(e)?;
                self.trunk_commit = r.revert_commit.clone();
                c.rollback = Some((e.seq, r));
                Step::Rollback
            }
            EventKind::Calibration => {
                self.calibrations.push((e.seq, parse(e)?));
                Step::Other
            }
            EventKind::Audit => {
                self.audits.push((e.seq, parse(e)?));
                Step::Other
            }
            EventKind::SessionStart
            | EventKind::Budget
            | EventKind::SessionEnd
            | EventKind::Compare => Step::Other,
        };
        c.state = c.state.after(&step);
        Ok(())
    }

    /// The session's recorded final verdict (base vs final trunk), if any.
    pub fn final_verdict(&self) -> Option<&Compare> {
        self.compares
            .iter()
            .rev()
            .map(|(_, c)| c)
            .find(|c| c.is_final_verdict() && c.a_commit == self.start.base_commit)
    }

    pub fn change(&self, id: &str) -> Option<&ChangeRecord> {
        self.index.get(id).map(|&i| &self.changes[i])
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
