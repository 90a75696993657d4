use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::LedgerError;

/// What an event records. Stored as its snake_case name; the schema's CHECK constraint
/// refuses anything else, so adding a kind means a schema migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    SessionStart,
    Calibration,
    Propose,
    Policy,
    Build,
    RunResult,
    Decision,
    Merge,
    Discard,
    Audit,
    Rollback,
    Budget,
    Error,
    SessionEnd,
    /// A paired measurement of two commits (`agentloop compare`, the session's final verdict).
    Compare,
}

impl EventKind {
    pub const ALL: [EventKind; 15] = [
        EventKind::SessionStart,
        EventKind::Calibration,
        EventKind::Propose,
        EventKind::Policy,
        EventKind::Build,
        EventKind::RunResult,
        EventKind::Decision,
        EventKind::Merge,
        EventKind::Discard,
        EventKind::Audit,
        EventKind::Rollback,
        EventKind::Budget,
        EventKind::Error,
        EventKind::SessionEnd,
        EventKind::Compare,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SessionStart => "session_start",
            EventKind::Calibration => "calibration",
            EventKind::Propose => "propose",
            EventKind::Policy => "policy",
            EventKind::Build => "build",
            EventKind::RunResult => "run_result",
            EventKind::Decision => "decision",
            EventKind::Merge => "merge",
            EventKind::Discard => "discard",
            EventKind::Audit => "audit",
            EventKind::Rollback => "rollback",
            EventKind::Budget => "budget",
            EventKind::Error => "error",
            EventKind::SessionEnd => "session_end",
            EventKind::Compare => "compare",
        }
    }

    /// Kinds that only make sense about one change, so the event must name it.
    pub fn requires_change(self) -> bool {
        matches!(
            self,
            EventKind::Propose
                | EventKind::Policy
                | EventKind::Build
                | EventKind::Decision
                | EventKind::Merge
                | EventKind::Discard
                | EventKind::Rollback
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = LedgerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| LedgerError::UnknownKind(s.to_string()))
    }
}
