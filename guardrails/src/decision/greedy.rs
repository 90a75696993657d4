//! The greedy rules: what the popular loop does, for comparison. One candidate run, kept when
//! its metric is below the trunk's last recorded value. There is no statistical test: nothing
//! bounds how often a change that does nothing (or harm) is kept.

use super::*;

/// The seed every greedy run uses unless `[decision] fixed_seed` says otherwise (the popular
/// loop's training script fixes its seed the same way).
pub const GREEDY_SEED: u64 = 42;

/// What a greedy decision saw: the one candidate run and the trunk value it was compared with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GreedyEvidence {
    /// The seed of the trunk's recorded value (greedy: the candidate's seed too).
    pub trunk_seed: u64,
    /// greedy-fresh: the candidate ran on a fresh seed, not on `trunk_seed`.
    pub fresh_seed: bool,
    #[serde(with = "crate::stats::lossless_f64")]
    pub trunk: f64,
    #[serde(with = "crate::stats::lossless_f64")]
    pub candidate: f64,
}

/// The greedy decision on one candidate run: pass (keep) when it is strictly below the trunk.
pub fn screen_greedy(
    calibration: &Calibration,
    trunk_seed: u64,
    fresh_seed: bool,
    trunk: f64,
    candidate: f64,
) -> ScreenOutcome {
    let gain = trunk - candidate;
    let keep = candidate < trunk;
    let on = if fresh_seed {
        format!("a fresh seed, against the trunk's last recorded value (seed {trunk_seed})")
    } else {
        format!("seed {trunk_seed}, the trunk's seed")
    };
    let reason = format!(
        "no statistical test: one run on {on}: candidate {candidate:.6} {} trunk {trunk:.6} (gain {gain:.6}), {}",
        if keep { "<" } else { ">=" },
        if keep { "kept because lower" } else { "dropped because not lower" }
    );
    ScreenOutcome {
        verdict: if keep {
            ScreenVerdict::Pass
        } else {
            ScreenVerdict::Reject
        },
        candidate,
        baseline_mean: trunk,
        run_sd: calibration.run_sd,
        gain,
        // No spread is estimated: only the sign counts.
        z: if gain > 0.0 {
            f64::INFINITY
        } else if gain < 0.0 {
            f64::NEG_INFINITY
        } else {
            0.0
        },
        threshold_z: 0.0,
        reason,
        sequential: None,
        paired: None,
        greedy: Some(GreedyEvidence {
            trunk_seed,
            fresh_seed,
            trunk,
            candidate,
        }),
    }
}
