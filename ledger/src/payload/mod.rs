//! One serde struct per event kind: the orchestrator builds these, the derived tables and the
//! review commands read them back.
//!
//! Payloads are extensible: every struct keeps unknown fields in `extra`, and the ledger stores
//! the JSON the caller gave (after redaction), so fields added later round-trip untouched.
//! Fields a reviewer cannot do without are required; [`crate::Ledger::append`] refuses a payload
//! that lacks them or has a field of the wrong type, naming the field.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::EventKind;

/// Ties a payload struct to its event kind.
pub trait EventPayload: Serialize + DeserializeOwned {
    const KIND: EventKind;
}

macro_rules! payload_kind {
    ($ty:ty, $kind:expr) => {
        impl EventPayload for $ty {
            const KIND: EventKind = $kind;
        }
    };
}

mod compare;
pub use compare::{Compare, ComparePair};

/// Checks `payload` against the struct of `kind`; the error text names the offending field.
pub fn validate(kind: EventKind, payload: &Value) -> Result<(), String> {
    fn check<T: DeserializeOwned>(payload: &Value) -> Result<(), String> {
        T::deserialize(payload)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    match kind {
        EventKind::SessionStart => check::<SessionStart>(payload),
        EventKind::Calibration => check::<Calibration>(payload),
        EventKind::Propose => check::<Propose>(payload),
        EventKind::Policy => check::<Policy>(payload),
        EventKind::Build => check::<Build>(payload),
        EventKind::RunResult => check::<RunResult>(payload),
        EventKind::Decision => check::<Decision>(payload),
        EventKind::Merge => check::<Merge>(payload),
        EventKind::Discard => check::<Discard>(payload),
        EventKind::Audit => check::<Audit>(payload),
        EventKind::Rollback => check::<Rollback>(payload),
        EventKind::Budget => check::<Budget>(payload),
        EventKind::Error => check::<ErrorEvent>(payload),
        EventKind::SessionEnd => check::<SessionEnd>(payload),
        EventKind::Compare => check::<Compare>(payload),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// `llm` or `offline`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStart {
    pub budget_s: f64,
    pub repo: String,
    pub trunk_branch: String,
    pub base_commit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_sha256: Option<String>,
    pub agent: AgentInfo,
    /// The pre-registered decision rule, as the guardrails crate serializes it.
    #[serde(default)]
    pub rule: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
payload_kind!(SessionStart, EventKind::SessionStart);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedValue {
    pub seed: u64,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedReplays {
    pub seed: u64,
    pub values: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub trunk_commit: String,
    pub baseline: Vec<SeedValue>,
    #[serde(default)]
    pub replays: Vec<SeedReplays>,
    pub run_sd: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paired_sd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nondeterminism_floor: Option<f64>,
    pub min_effect: f64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
payload_kind!(Calibration, EventKind::Calibration);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Propose {
    pub description: String,
    pub rationale: String,
    pub patch: String,
    /// `unified` or `search_replace`.
    pub patch_format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_template_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The change this one re-tests on a newer trunk (the same patch), if it is a re-test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retest_of: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
payload_kind!(Propose, EventKind::Propose);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyOutcome {
    Accepted,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub outcome: PolicyOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
payload_kind!(Policy, EventKind::Policy);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Build {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_sha256: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
payload_kind!(Build, EventKind::Build);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    Baseline,
    Candidate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Calibration,
    Smoke,
    Screen,
    Confirm,
    Audit,
    Remeasure,
    /// A run of `agentloop compare` (or the final verdict): one arm of a fresh-seed pair.
    Compare,
}

impl Stage {
    /// The name the ledger stores (`smoke`, `confirm`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Calibration => "calibration",
            Stage::Smoke => "smoke",
            Stage::Screen => "screen",
            Stage::Confirm => "confirm",
            Stage::Audit => "audit",
            Stage::Remeasure => "remeasure",
            Stage::Compare => "compare",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Ok,
    Crashed,
    Diverged,
    TimedOut,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub arm: Arm,
    pub stage: Stage,
    pub commit: String,
    pub seed: u64,
    pub split: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
    /// The run's metrics.json as written by the target (null when it wrote none).
    #[serde(default)]
    pub metrics: Value,
    /// Which metrics key is minimized; `val_bpb` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    pub exit_status: ExitStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
payload_kind!(RunResult, EventKind::RunResult);

impl RunResult {
    pub fn metric_name(&self) -> &str {
        self.metric.as_deref().unwrap_or("val_bpb")
    }

    /// The minimized metric's value, when the run produced one.
    pub fn metric_value(&self) -> Option<f64> {
        self.metrics.get(self.metric_name()).and_then(Value::as_f64)
    }

    pub fn peak_mem_bytes(&self) -> Option<u64> {
        self.metrics.get("peak_mem_bytes").and_then(Value::as_u64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionOutcome {
    Accepted,
    Rejected,
    Crashed,
    PolicyRejected,
    BuildFailed,
}

impl DecisionOutcome {
    /// The name the ledger stores (`accepted`, `policy_rejected`...).
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionOutcome::Accepted => "accepted",
            DecisionOutcome::Rejected => "rejected",
            DecisionOutcome::Crashed => "crashed",
            DecisionOutcome::PolicyRejected => "policy_rejected",
            DecisionOutcome::BuildFailed => "build_failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub outcome: DecisionOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// e.g. `paired_t_one_sided`; absent when no test ran (crash, policy, build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_baseline: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_candidate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_diff: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sd_diff: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci_low: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci_high: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    #[serde(default)]
    pub thresholds: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_effect: Option<f64>,
    pub rule_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
payload_kind!(Decision, EventKind::Decision);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Merge {
    pub commit: String,
    pub trunk_branch: String,
    /// The `seq:hash` head written into the merge commit's trailer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_head: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
payload_kind!(Merge, EventKind::Merge);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Discard {
    /// Where the rejected branch was kept, e.g. `refs/agentloop/rejected/<session>/<change>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_ref: Option<String>,
    /// The change that re-tests this one on a newer trunk: this one's decision no longer counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
payload_kind!(Discard, EventKind::Discard);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    pub trunk_commit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_diff: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// `held`, `flagged`, ...
    pub outcome: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
payload_kind!(Audit, EventKind::Audit);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollback {
    pub reverted_commit: String,
    pub revert_commit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_merge_seq: Option<i64>,
    pub reason: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
payload_kind!(Rollback, EventKind::Rollback);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub spent_s: f64,
    pub remaining_s: f64,
    #[serde(default)]
    pub in_flight: u32,
    /// A resume: the session's budget clock restarts here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
payload_kind!(Budget, EventKind::Budget);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEvent {
    pub stage: String,
    pub message: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
payload_kind!(ErrorEvent, EventKind::Error);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEnd {
    pub reason: String,
    #[serde(default)]
    pub accepted: u32,
    #[serde(default)]
    pub rejected: u32,
    #[serde(default)]
    pub crashed: u32,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
payload_kind!(SessionEnd, EventKind::SessionEnd);

/// The loop waiting instead of ending, as a session-level `error` event (a typed payload of
/// an existing kind, so older readers and ledgers accept it). [`Pause::PROVIDER_WAIT`]: the
/// provider failed transiently (5xx, 429, a timeout, an unreadable answer) and is asked again
/// at `until`. [`Pause::BREAKER_PAUSE`]: the circuit breaker tripped; proposals resume at
/// `until`, with the same calibration. Recorded before the wait starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pause {
    /// [`Pause::PROVIDER_WAIT`] or [`Pause::BREAKER_PAUSE`].
    pub stage: String,
    /// Why, in words (the provider's error, scrubbed of keys; or what kept failing).
    pub message: String,
    /// RFC 3339: when this streak of provider failures (or this trip) began.
    pub since: String,
    pub wait_s: f64,
    /// RFC 3339: when the loop tries again.
    pub until: String,
    /// Failures in a row so far (provider), or the trip number (breaker).
    pub count: u32,
    /// The HTTP status of the provider's last answer, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The change that was asking (kept out of the event's `change` column so the change's
    /// own error cursor is not disturbed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_change: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
payload_kind!(Pause, EventKind::Error);

impl Pause {
    pub const PROVIDER_WAIT: &'static str = "provider_wait";
    pub const BREAKER_PAUSE: &'static str = "breaker_pause";

    /// The pause an `error` event's payload records, if it is one.
    pub fn of(kind: EventKind, payload: &Value) -> Option<Pause> {
        let stage = payload.get("stage")?.as_str()?;
        if kind != EventKind::Error
            || (stage != Self::PROVIDER_WAIT && stage != Self::BREAKER_PAUSE)
        {
            return None;
        }
        Pause::deserialize(payload).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_ones_the_ledger_stores() {
        use DecisionOutcome::*;
        for o in [Accepted, Rejected, Crashed, PolicyRejected, BuildFailed] {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str(), "{o:?}");
        }
        use Stage::*;
        for s in [Calibration, Smoke, Screen, Confirm, Audit, Remeasure] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str(), "{s:?}");
        }
    }
}
