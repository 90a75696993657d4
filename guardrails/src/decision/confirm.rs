//! Confirmation on fresh pairs: v1/v2 stages and v3 group-sequential looks.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageVerdict {
    Continue,
    Accept,
    Reject,
}

/// Outcome of one confirmation stage, with its inputs and statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageOutcome {
    pub stage_index: usize,
    pub final_stage: bool,
    pub verdict: StageVerdict,
    /// (baseline, candidate) values on the same seed.
    pub pairs: Vec<(f64, f64)>,
    pub mean_baseline: f64,
    pub mean_candidate: f64,
    /// Paired t-test on gain = baseline - candidate (one-sided, H1: gain > 0).
    pub test: TTest,
    pub p_threshold: f64,
    /// Minimum mean gain (only enforced at the final stage).
    pub min_effect: f64,
    pub reason: String,
}

/// Runs confirmation stage `stage_index` on its own fresh pairs (earlier stages' pairs are
/// not pooled, so the stages' false-accept probabilities multiply).
pub fn confirm_stage(
    rule: &DecisionRule,
    calibration: &Calibration,
    stage_index: usize,
    pairs: &[(f64, f64)],
) -> Result<StageOutcome, DecisionError> {
    let stage = rule
        .stages
        .get(stage_index)
        .ok_or(DecisionError::NoSuchStage {
            index: stage_index,
            stages: rule.stages.len(),
        })?;
    let test = paired_test(stage_index, stage.pairs, pairs)?;
    let n = pairs.len() as f64;
    let final_stage = stage_index + 1 == rule.stages.len();
    let min_effect = calibration.min_effect(rule);
    let significant = test.p < stage.p_threshold;
    let (verdict, reason) = match (final_stage, significant) {
        (false, true) => (
            StageVerdict::Continue,
            format!(
                "p = {:.4} < {}: run the next stage",
                test.p, stage.p_threshold
            ),
        ),
        (_, false) => (
            StageVerdict::Reject,
            format!(
                "p = {:.4} is not below {} (mean gain {:.6})",
                test.p, stage.p_threshold, test.mean
            ),
        ),
        (true, true) if test.mean >= min_effect => (
            StageVerdict::Accept,
            format!(
                "p = {:.4} < {} and mean gain {:.6} >= minimum effect {:.6}",
                test.p, stage.p_threshold, test.mean, min_effect
            ),
        ),
        (true, true) => (
            StageVerdict::Reject,
            format!(
                "significant (p = {:.4}) but mean gain {:.6} is below the minimum effect {:.6}",
                test.p, test.mean, min_effect
            ),
        ),
    };
    Ok(StageOutcome {
        stage_index,
        final_stage,
        verdict,
        pairs: pairs.to_vec(),
        mean_baseline: pairs.iter().map(|p| p.0).sum::<f64>() / n,
        mean_candidate: pairs.iter().map(|p| p.1).sum::<f64>() / n,
        test,
        p_threshold: stage.p_threshold,
        min_effect,
        reason,
    })
}

/// v3's look `look_index` of the group-sequential confirmation on *all* fresh pairs so far
/// (`pairs.len()` must be that look's cumulative size). Accept when p < the look's alpha and the
/// mean gain is at least `min_effect`; at the last look reject otherwise; before it, drop for
/// futility (t <= `futility_t`, or the 95% interval's upper end below `min_effect`), else go on.
pub fn confirm_look(
    rule: &DecisionRule,
    min_effect: f64,
    look_index: usize,
    pairs: &[(f64, f64)],
) -> Result<StageOutcome, DecisionError> {
    let confirm = rule
        .confirm
        .as_ref()
        .ok_or_else(|| DecisionError::InvalidRule("the rule has no confirm looks".into()))?;
    let look = confirm
        .looks
        .get(look_index)
        .ok_or(DecisionError::NoSuchStage {
            index: look_index,
            stages: confirm.looks.len(),
        })?;
    let test = paired_test(look_index, look.pairs, pairs)?;
    let n = pairs.len() as f64;
    let final_stage = look_index + 1 == confirm.looks.len();
    let (verdict, reason) = if test.p < look.alpha && test.mean >= min_effect {
        (
            StageVerdict::Accept,
            format!(
                "look {} ({} pairs): p = {:.3e} < {} and mean gain {:.6} >= minimum effect {:.6}",
                look_index + 1,
                pairs.len(),
                test.p,
                look.alpha,
                test.mean,
                min_effect
            ),
        )
    } else if final_stage {
        let why = if test.p < look.alpha {
            format!(
                "significant (p = {:.3e}) but mean gain {:.6} is below the minimum effect {:.6}",
                test.p, test.mean, min_effect
            )
        } else {
            format!(
                "p = {:.4} is not below {} (mean gain {:.6})",
                test.p, look.alpha, test.mean
            )
        };
        (
            StageVerdict::Reject,
            format!("last look ({} pairs): {why}", pairs.len()),
        )
    } else if test.t <= confirm.futility_t {
        (
            StageVerdict::Reject,
            format!(
                "look {} ({} pairs): futility, t = {:.2} <= {} (mean gain {:.6})",
                look_index + 1,
                pairs.len(),
                test.t,
                confirm.futility_t,
                test.mean
            ),
        )
    } else if test.ci_high < min_effect {
        (
            StageVerdict::Reject,
            format!(
                "look {} ({} pairs): futility, the gain's 95% interval ends at {:.6}, below the minimum effect {:.6}",
                look_index + 1,
                pairs.len(),
                test.ci_high,
                min_effect
            ),
        )
    } else {
        (
            StageVerdict::Continue,
            format!(
                "look {} ({} pairs): p = {:.4} (needs < {}), mean gain {:.6}: more pairs",
                look_index + 1,
                pairs.len(),
                test.p,
                look.alpha,
                test.mean
            ),
        )
    };
    Ok(StageOutcome {
        stage_index: look_index,
        final_stage,
        verdict,
        pairs: pairs.to_vec(),
        mean_baseline: pairs.iter().map(|p| p.0).sum::<f64>() / n,
        mean_candidate: pairs.iter().map(|p| p.1).sum::<f64>() / n,
        test,
        p_threshold: look.alpha,
        min_effect,
        reason,
    })
}

/// The one-sided paired t-test on a stage's or look's pairs (gain = baseline - candidate),
/// after checking there are exactly `needed` of them and all are finite.
pub fn paired_test(
    index: usize,
    needed: usize,
    pairs: &[(f64, f64)],
) -> Result<TTest, DecisionError> {
    if pairs.len() != needed {
        return Err(DecisionError::WrongPairCount {
            index,
            needed,
            got: pairs.len(),
        });
    }
    if let Some((index, &(baseline, candidate))) = pairs
        .iter()
        .enumerate()
        .find(|(_, (b, c))| !b.is_finite() || !c.is_finite())
    {
        return Err(DecisionError::NonFinitePair {
            index,
            baseline,
            candidate,
        });
    }
    let gains: Vec<f64> = pairs.iter().map(|(b, c)| b - c).collect();
    Ok(one_sample_t(&gains).expect("validated: >= 2 finite values"))
}
