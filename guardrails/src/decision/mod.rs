//! The decision rule: calibration, screening and the staged one-sided paired t-test.
//!
//! Everything here is a pure function of run values and a [`DecisionRule`], and every output
//! carries its inputs, so the ledger can store a decision and `ledger verify` can recompute it
//! (see [`crate::process::recompute`]). Lower metric is better: gain = baseline - candidate.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::audit::AuditRule;
use crate::stats::{mean_sd, one_sample_t, TTest};

/// Version of the decision logic; bump whenever the same inputs could give a different outcome.
/// v3 (the default) screens on pairs against the trunk's cached runs ([`ScreenRule::Paired`])
/// and confirms with a group-sequential paired test ([`ConfirmRule`]); v2 added the sequential
/// screen ([`ScreenRule::Sequential`]); v1 decisions (a single screening run) stay
/// recomputable, so all three are implemented.
pub const RULE_VERSION: &str = "paired-sequential/v3";
pub const RULE_VERSION_V2: &str = "sequential-screen/v2";
pub const RULE_VERSION_V1: &str = "paired-two-stage/v1";
/// The popular loop's rule, for comparison: one candidate run on the same fixed seed as the
/// trunk's recorded run, kept if lower. No statistical test.
pub const RULE_VERSION_GREEDY: &str = "greedy/v1";
/// Like greedy, but each candidate runs on a fresh seed (compared with the trunk's last value).
pub const RULE_VERSION_GREEDY_FRESH: &str = "greedy-fresh/v1";

mod calibration;
mod confirm;
mod greedy;
mod min_effect;
mod rule;
mod screen;
mod screen_rule;

pub use calibration::*;
pub use confirm::*;
pub use greedy::*;
pub use min_effect::*;
pub use rule::*;
pub use screen::*;
pub use screen_rule::*;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum DecisionError {
    #[error("invalid decision rule: {0}")]
    InvalidRule(String),
    #[error("calibration needs at least {needed} distinct baseline seeds, got {got}")]
    TooFewBaselineSeeds { needed: usize, got: usize },
    #[error("calibration needs at least {needed} same-seed replays, got {got}")]
    TooFewReplays { needed: usize, got: usize },
    #[error(
        "baseline seed {0} appears more than once; put repeated runs of a seed in the replays"
    )]
    DuplicateSeed(u64),
    #[error(
        "run value {value} for seed {seed} is not finite (a crashed run must not be calibrated)"
    )]
    NonFiniteValue { seed: u64, value: f64 },
    #[error("stage {index} does not exist: the rule has {stages} stages")]
    NoSuchStage { index: usize, stages: usize },
    #[error("stage {index} needs exactly {needed} pairs, got {got}")]
    WrongPairCount {
        index: usize,
        needed: usize,
        got: usize,
    },
    #[error("pair {index} holds a non-finite value ({baseline}, {candidate})")]
    NonFinitePair {
        index: usize,
        baseline: f64,
        candidate: f64,
    },
}
