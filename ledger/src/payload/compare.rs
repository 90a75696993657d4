//! The `compare` event: a paired measurement of two commits on fresh seeds (`agentloop
//! compare`, and a session's final verdict), and the words every reader shows for it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::EventPayload;
use crate::EventKind;

/// One fresh seed of a comparison: both commits trained on it (the metric of each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparePair {
    pub seed: u64,
    pub a: f64,
    pub b: f64,
}

/// `agentloop compare A B` (or a session's final verdict, `extra.final_verdict = true`): a paired
/// measurement on fresh seeds. `mean_diff` and its interval are B - A (the metric is
/// minimized: negative = B better); `p_value` is the one-sided paired t-test of "B is
/// better". `ledger verify` recomputes every statistic from `pairs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compare {
    /// The revisions as the user named them, and the commits they resolved to.
    pub a_rev: String,
    pub b_rev: String,
    pub a_commit: String,
    pub b_commit: String,
    pub split: String,
    pub metric: String,
    pub pairs: Vec<ComparePair>,
    pub n: u32,
    pub mean_diff: f64,
    pub sd_diff: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p_value: f64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
payload_kind!(Compare, EventKind::Compare);

impl Compare {
    /// Whether this is a session's automatic final verdict (base vs final trunk on holdout).
    pub fn is_final_verdict(&self) -> bool {
        self.extra.get("final_verdict").and_then(Value::as_bool) == Some(true)
    }

    /// "holdout gain 0.031 val_bpb [0.024, 0.038] (8 pairs)": gain = A - B, positive = B better.
    pub fn gain_line(&self) -> String {
        format!(
            "{} gain {:.3} {} [{:.3}, {:.3}] ({} pairs)",
            self.split, -self.mean_diff, self.metric, -self.ci_high, -self.ci_low, self.n
        )
    }
}
