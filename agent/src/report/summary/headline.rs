//! [`Status`]: the numbers `status --json` prints, and the rates derived from them. It lives
//! with the summary so that both the full summary and the cheap per-event replay can build it.

use agentloop_ledger::payload::Pause;
use serde::Serialize;

use super::{Costs, Counts, Current};

/// What `status --json` prints: the summary without the per-change diffs.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub session: String,
    /// `running` (or killed: no session_end yet) or `ended`.
    pub state: &'static str,
    pub end_reason: Option<String>,
    pub trunk_branch: String,
    pub trunk_commit: String,
    pub metric: String,
    pub budget_s: f64,
    pub spent_s: f64,
    pub left_s: f64,
    /// Changes in flight at once.
    pub workers: usize,
    /// Training runs at once: the wall time times this is the slot time runs can fill.
    pub slots: usize,
    /// The OS sandbox of builds and runs (`null` for sessions before it existed).
    pub sandbox: Option<serde_json::Value>,
    #[serde(flatten)]
    pub counts: Counts,
    pub trunk_metric: Option<f64>,
    pub best_trunk_metric: Option<f64>,
    pub baseline_metric: Option<f64>,
    pub current: Option<Current>,
    #[serde(flatten)]
    pub costs: Costs,
    /// The wait the loop is in (for the provider, or a circuit-breaker pause), if any.
    pub waiting: Option<Pause>,
    /// Share of the slot time (wall time x slots) not spent training (building, proposing,
    /// deciding, or a slot left idle).
    pub overhead_share: Option<f64>,
    pub decisions_per_hour: Option<f64>,
    /// Wall time not spent training, per decided change.
    pub overhead_s_per_decision: Option<f64>,
    /// The final verdict, base vs final trunk on holdout.
    pub verdict: Option<String>,
    /// `guard:<metric>` of each accept a guard turned into a reject, in order.
    pub guard_rejects: Vec<String>,
    pub last_seq: i64,
}

impl Status {
    /// Fills the rates from the counts, costs and time spent.
    pub fn with_rates(mut self) -> Status {
        // A superseded accept is settled by its re-test, which is counted instead.
        let decided = self.counts.proposed - self.counts.in_flight - self.counts.superseded;
        // With several slots, runs overlap: compare training time with slot time.
        let slot_s = self.spent_s * self.slots.max(1) as f64;
        if self.spent_s > 0.0 {
            self.overhead_share = Some((1.0 - self.costs.training_s / slot_s).max(0.0));
            self.decisions_per_hour = Some(decided as f64 * 3600.0 / self.spent_s);
        }
        if decided > 0 {
            let overhead_s = (slot_s - self.costs.training_s).max(0.0);
            self.overhead_s_per_decision = Some(overhead_s / decided as f64);
        }
        self
    }
}

/// `guard:<metric>` when a decision's reason says a guard rejected it.
pub fn guard_tag(reason: &str) -> Option<String> {
    let rest = reason.strip_prefix("guard:")?;
    let metric = rest.split(':').next().unwrap_or(rest);
    Some(format!("guard:{metric}"))
}
