//! Screening: v1's single run, v2's sequential test, v3's paired sequential test.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScreenVerdict {
    Pass,
    Reject,
}

/// Outcome of screening one candidate run against the calibrated baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScreenOutcome {
    pub verdict: ScreenVerdict,
    #[serde(with = "crate::stats::lossless_f64")]
    pub candidate: f64,
    pub baseline_mean: f64,
    pub run_sd: f64,
    /// baseline_mean - candidate.
    #[serde(with = "crate::stats::lossless_f64")]
    pub gain: f64,
    /// gain / run_sd (+/-inf when run_sd is 0 and the gain is not).
    #[serde(with = "crate::stats::lossless_f64")]
    pub z: f64,
    pub threshold_z: f64,
    pub reason: String,
    /// The sequential screen's evidence (v2); absent for a single-run screen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<SequentialEvidence>,
    /// The paired screen's evidence (v3): every pair and the sd the test used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paired: Option<PairedScreenEvidence>,
    /// The greedy rules' one run and the trunk value (no statistical test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greedy: Option<GreedyEvidence>,
}

/// What the paired screen (v3) saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedScreenEvidence {
    /// (seed, trunk, candidate) per screening run, in order.
    pub pairs: Vec<(u64, f64, f64)>,
    /// Sample sd of the differences (0 with one pair).
    pub sample_sd: f64,
    /// max(calibration's paired null sd, minimum effect): the least sd the test assumes.
    pub sd_floor: f64,
    /// The paired sd the test used: max(sample_sd, sd_floor).
    pub sd_used: f64,
    /// log L(H1) / L(H0) after the last pair (+/-inf when sd_used is 0).
    #[serde(with = "crate::stats::lossless_f64")]
    pub log_lr: f64,
    pub pass_at: f64,
    pub reject_at: f64,
    pub max_runs: usize,
}

/// What the sequential screen saw: every run, and the log likelihood ratio against its bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequentialEvidence {
    /// The screening runs' values, in order.
    pub values: Vec<f64>,
    /// log L(H1) / L(H0) after the last run (+/-inf when the run-to-run sd is 0).
    #[serde(with = "crate::stats::lossless_f64")]
    pub log_lr: f64,
    /// Pass at or above this: ln((1 - beta) / alpha).
    pub pass_at: f64,
    /// Reject at or below this: ln(beta / (1 - alpha)).
    pub reject_at: f64,
    pub max_runs: usize,
}

/// The sequential screen after `values` (candidate runs so far, in order): `None` while the
/// evidence is between the bounds and runs are left. The single-run screen for a v1 rule.
pub fn screen_runs(
    calibration: &Calibration,
    rule: &DecisionRule,
    values: &[f64],
) -> Option<ScreenOutcome> {
    let ScreenRule::Sequential {
        effect_sd,
        alpha,
        beta,
        max_runs,
    } = rule.screen
    else {
        return values.last().map(|&v| screen(calibration, rule, v));
    };
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let gain = calibration.baseline_mean - mean;
    let z_of = |g: f64| {
        if calibration.run_sd > 0.0 {
            g / calibration.run_sd
        } else if g > 0.0 {
            f64::INFINITY
        } else if g < 0.0 {
            f64::NEG_INFINITY
        } else {
            0.0
        }
    };
    // Each run's gain in run sd is N(0, 1) under H0 and N(effect, 1) under H1.
    let log_lr: f64 = values
        .iter()
        .map(|v| effect_sd * z_of(calibration.baseline_mean - v) - effect_sd * effect_sd / 2.0)
        .sum();
    let pass_at = ((1.0 - beta) / alpha).ln();
    let reject_at = (beta / (1.0 - alpha)).ln();
    let z = z_of(gain);
    let (verdict, reason) = if log_lr >= pass_at {
        (
            ScreenVerdict::Pass,
            format!(
                "mean gain {z:.2} run sd over {n} screening run(s): log LR {log_lr:.2} >= {pass_at:.2}"
            ),
        )
    } else if log_lr <= reject_at {
        (
            ScreenVerdict::Reject,
            format!(
                "mean gain {z:.2} run sd over {n} screening run(s): log LR {log_lr:.2} <= {reject_at:.2}, no sign of a {effect_sd} sd gain"
            ),
        )
    } else if n >= max_runs {
        if log_lr >= 0.0 {
            (
                ScreenVerdict::Pass,
                format!("after {n} screening runs the evidence leans to a gain (log LR {log_lr:.2} >= 0, mean gain {z:.2} run sd)"),
            )
        } else {
            (
                ScreenVerdict::Reject,
                format!("after {n} screening runs the evidence leans to no gain (log LR {log_lr:.2} < 0, mean gain {z:.2} run sd)"),
            )
        }
    } else {
        return None;
    };
    Some(ScreenOutcome {
        verdict,
        candidate: mean,
        baseline_mean: calibration.baseline_mean,
        run_sd: calibration.run_sd,
        gain,
        z,
        // The mean gain at which the log LR is 0.
        threshold_z: effect_sd / 2.0,
        reason,
        sequential: Some(SequentialEvidence {
            values: values.to_vec(),
            log_lr,
            pass_at,
            reject_at,
            max_runs,
        }),
        paired: None,
        greedy: None,
    })
}

/// v3's paired screen after `pairs` ((seed, trunk, candidate) per screening run, in order):
/// `None` while the evidence is between the bounds and runs are left. `min_effect` is the
/// rule's minimum effect in the metric's units; `max_runs` is already capped by the number of
/// common seeds.
pub fn screen_paired(
    calibration: &Calibration,
    rule: &DecisionRule,
    min_effect: f64,
    max_runs: usize,
    pairs: &[(u64, f64, f64)],
) -> Option<ScreenOutcome> {
    let ScreenRule::Paired {
        effect_sd,
        alpha,
        beta,
        ..
    } = rule.screen
    else {
        return None;
    };
    let n = pairs.len();
    if n == 0 {
        return None;
    }
    let gains: Vec<f64> = pairs.iter().map(|(_, t, c)| t - c).collect();
    let (gain, sample_sd) = mean_sd(&gains);
    // With one or two pairs the sample sd says little: the replays' paired sd (what a no-op
    // change shows) and the minimum effect (differences below it do not matter) floor it.
    let sd_floor = calibration.paired_null_sd.max(min_effect);
    let sd_used = sample_sd.max(sd_floor);
    let z = if sd_used > 0.0 {
        gain / sd_used
    } else if gain > 0.0 {
        f64::INFINITY
    } else if gain < 0.0 {
        f64::NEG_INFINITY
    } else {
        0.0
    };
    // Each difference in paired sd is N(0, 1) under H0 and N(effect, 1) under H1.
    let log_lr = n as f64 * (effect_sd * z - effect_sd * effect_sd / 2.0);
    let pass_at = ((1.0 - beta) / alpha).ln();
    let reject_at = (beta / (1.0 - alpha)).ln();
    // One pair says nothing about its own spread: passing (which costs fresh pairs) waits for
    // a second one; rejecting does not.
    let may_pass = n >= 2 || max_runs < 2;
    // Bit-identical metrics on a seed: the change did not alter training at all (a comment on
    // a deterministic trainer). Dropping it costs nothing in false accepts.
    let identical = gains.iter().all(|g| *g == 0.0);
    let (verdict, reason) = if identical {
        (
            ScreenVerdict::Reject,
            format!("the candidate's metric equals the trunk's on {n} common seed(s): the change does not alter training"),
        )
    } else if log_lr >= pass_at && may_pass {
        (
            ScreenVerdict::Pass,
            format!(
                "mean paired gain {gain:.6} ({z:.2} paired sd) over {n} screening pair(s): log LR {log_lr:.2} >= {pass_at:.2}"
            ),
        )
    } else if log_lr <= reject_at {
        (
            ScreenVerdict::Reject,
            format!(
                "mean paired gain {gain:.6} ({z:.2} paired sd) over {n} screening pair(s): log LR {log_lr:.2} <= {reject_at:.2}, no sign of a {effect_sd} paired sd gain"
            ),
        )
    } else if n >= max_runs {
        if log_lr >= 0.0 {
            (
                ScreenVerdict::Pass,
                format!("after {n} screening pairs the evidence leans to a gain (log LR {log_lr:.2} >= 0, mean gain {gain:.6})"),
            )
        } else {
            (
                ScreenVerdict::Reject,
                format!("after {n} screening pairs the evidence leans to no gain (log LR {log_lr:.2} < 0, mean gain {gain:.6})"),
            )
        }
    } else {
        return None;
    };
    let mean = |f: fn(&(u64, f64, f64)) -> f64| pairs.iter().map(f).sum::<f64>() / n as f64;
    Some(ScreenOutcome {
        verdict,
        candidate: mean(|p| p.2),
        baseline_mean: mean(|p| p.1),
        run_sd: calibration.run_sd,
        gain,
        z,
        threshold_z: effect_sd / 2.0,
        reason,
        sequential: None,
        paired: Some(PairedScreenEvidence {
            pairs: pairs.to_vec(),
            sample_sd,
            sd_floor,
            sd_used,
            log_lr,
            pass_at,
            reject_at,
            max_runs,
        }),
        greedy: None,
    })
}

/// Screens one candidate run: reject early when it is clearly worse than the baseline.
pub fn screen(calibration: &Calibration, rule: &DecisionRule, candidate: f64) -> ScreenOutcome {
    let gain = calibration.baseline_mean - candidate;
    let z = if calibration.run_sd > 0.0 {
        gain / calibration.run_sd
    } else if gain > 0.0 {
        f64::INFINITY
    } else if gain < 0.0 {
        f64::NEG_INFINITY
    } else {
        0.0
    };
    let threshold_z = rule.screen_reject_below_sd;
    let (verdict, reason) = if !rule.screen_enabled {
        (
            ScreenVerdict::Pass,
            "screening is disabled by the rule".to_string(),
        )
    } else if !candidate.is_finite() {
        (
            ScreenVerdict::Reject,
            format!("candidate value {candidate} is not finite"),
        )
    } else if z < threshold_z {
        (
            ScreenVerdict::Reject,
            format!(
                "candidate is {:.2} run-to-run sd worse than the baseline (limit {:.2})",
                -z, -threshold_z
            ),
        )
    } else {
        (
            ScreenVerdict::Pass,
            format!("candidate gain is {z:.2} run-to-run sd (screen limit {threshold_z:.2})"),
        )
    };
    ScreenOutcome {
        verdict,
        candidate,
        baseline_mean: calibration.baseline_mean,
        run_sd: calibration.run_sd,
        gain,
        z,
        threshold_z,
        reason,
        sequential: None,
        paired: None,
        greedy: None,
    }
}
