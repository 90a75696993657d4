//! The derived tables' rows and a change's status, as read back from SQL.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeStatus {
    #[default]
    Proposed,
    Accepted,
    Rejected,
    Crashed,
    PolicyRejected,
    BuildFailed,
    /// Its trunk moved before it could merge: re-tested as another change, its decision void.
    Superseded,
    RolledBack,
}

impl ChangeStatus {
    pub const ALL: [ChangeStatus; 8] = [
        ChangeStatus::Proposed,
        ChangeStatus::Accepted,
        ChangeStatus::Rejected,
        ChangeStatus::Crashed,
        ChangeStatus::PolicyRejected,
        ChangeStatus::BuildFailed,
        ChangeStatus::Superseded,
        ChangeStatus::RolledBack,
    ];

    /// The stored (snake_case) name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeStatus::Proposed => "proposed",
            ChangeStatus::Accepted => "accepted",
            ChangeStatus::Rejected => "rejected",
            ChangeStatus::Crashed => "crashed",
            ChangeStatus::PolicyRejected => "policy_rejected",
            ChangeStatus::BuildFailed => "build_failed",
            ChangeStatus::Superseded => "superseded",
            ChangeStatus::RolledBack => "rolled_back",
        }
    }

    /// The name people type and read (`policy-rejected`).
    pub fn label(self) -> String {
        self.as_str().replace('_', "-")
    }
}

impl fmt::Display for ChangeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl FromStr for ChangeStatus {
    type Err = LedgerError;

    /// Accepts `policy-rejected`, `policy_rejected`, `rolled back`, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        ChangeStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == wanted)
            .ok_or_else(|| LedgerError::UnknownStatus(s.to_string()))
    }
}

impl From<DecisionOutcome> for ChangeStatus {
    fn from(outcome: DecisionOutcome) -> Self {
        match outcome {
            DecisionOutcome::Accepted => ChangeStatus::Accepted,
            DecisionOutcome::Rejected => ChangeStatus::Rejected,
            DecisionOutcome::Crashed => ChangeStatus::Crashed,
            DecisionOutcome::PolicyRejected => ChangeStatus::PolicyRejected,
            DecisionOutcome::BuildFailed => ChangeStatus::BuildFailed,
        }
    }
}

/// A row of `changes`: one proposal and where it ended up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeRow {
    pub change_id: String,
    pub session: String,
    pub status: ChangeStatus,
    pub description: Option<String>,
    pub model: Option<String>,
    pub parent_commit: Option<String>,
    pub commit: Option<String>,
    pub first_seq: i64,
    pub last_seq: i64,
    pub decided_seq: Option<i64>,
    pub n: Option<i64>,
    pub mean_baseline: Option<f64>,
    pub mean_candidate: Option<f64>,
    pub mean_diff: Option<f64>,
    pub p_value: Option<f64>,
    pub peak_mem_bytes: Option<i64>,
    pub kept_ref: Option<String>,
}

/// A row of `runs`: one training job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    pub seq: i64,
    pub session: String,
    pub change_id: Option<String>,
    pub arm: String,
    pub stage: String,
    pub commit: String,
    pub seed: i64,
    pub split: String,
    pub budget: Option<String>,
    pub metric: String,
    pub metric_value: Option<f64>,
    pub exit_status: String,
    pub exit_code: Option<i64>,
    pub wall_s: Option<f64>,
    pub peak_mem_bytes: Option<i64>,
    pub log_sha256: Option<String>,
}

/// A row of `decisions`: one statistical decision and its inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRow {
    pub seq: i64,
    pub session: String,
    pub change_id: String,
    pub outcome: String,
    pub stage: Option<String>,
    pub test: Option<String>,
    pub n: Option<i64>,
    pub mean_baseline: Option<f64>,
    pub mean_candidate: Option<f64>,
    pub mean_diff: Option<f64>,
    pub sd_diff: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub p_value: Option<f64>,
    pub min_effect: Option<f64>,
    pub thresholds: String,
    pub rule_version: String,
    pub reason: Option<String>,
}
