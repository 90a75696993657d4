//! What a session did, computed from its ledger events alone: the one place `status`, the live
//! progress display and the HTML report get their numbers from.
//!
//! [`Replay`] folds events in seq order, so the progress display can feed it one event at a
//! time while `status` and `report` replay a whole session.

mod change;
mod headline;
mod replay;
#[cfg(test)]
mod tests;

use agentloop_ledger::payload::Pause;
use agentloop_ledger::{Event, EventKind, Ledger, LedgerError};
use serde::Serialize;

pub use headline::{guard_tag, Status};
pub use replay::Replay;

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
    /// Decided by a greedy rule: one run against the trunk's value, no statistical test.
    pub no_test: bool,
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
    /// The base commit's build before the session's clock started (set-up, outside the budget
    /// and the overhead share; 0 when the cache had it or the session predates it).
    pub base_build_s: f64,
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
    /// The final verdict, base vs final trunk on holdout ("holdout gain 0.031 ...").
    pub verdict: Option<String>,
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
