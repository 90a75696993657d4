//! How a candidate is screened and how the v3 confirmation looks are laid out (rule config).

use super::*;

/// How candidates are screened before the paired stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScreenRule {
    /// One candidate run; reject when its gain is below `screen_reject_below_sd` run sd (v1).
    Single,
    /// Wald's sequential probability ratio test, one candidate run at a time against the
    /// calibrated baseline: H0 "no gain" against H1 "a gain of `effect_sd` run sd". Most
    /// proposals are no better than the trunk, and this drops them after about 2 runs instead
    /// of a full paired stage. It only filters: acceptance is still decided by the paired
    /// stages on fresh seeds, so their p thresholds bound the false-accept rate whatever the
    /// screen does.
    Sequential {
        /// The gain H1 assumes, in run-to-run sd.
        effect_sd: f64,
        /// Wald's type I error: chance a no-gain candidate passes (before truncation).
        alpha: f64,
        /// Wald's type II error: chance a candidate with the H1 gain is dropped.
        beta: f64,
        /// At most this many screening runs; then pass when the evidence leans to H1.
        max_runs: usize,
    },
    /// v3: Wald's SPRT on *paired* differences, one candidate run at a time on the trunk's
    /// common seeds, each against the trunk's cached run on the same seed (one run, one pair).
    /// H1 is a gain of `effect_sd` paired sd, where the paired sd is estimated from the
    /// differences so far, floored by calibration's same-seed replays and the minimum effect:
    /// so a null change is dropped after about two runs whatever the seed correlation. It only
    /// filters: the confirmation's fresh pairs bound the false-accept rate.
    Paired {
        /// The gain H1 assumes, in (estimated) paired-difference sd.
        effect_sd: f64,
        /// Wald's type I error: chance a no-gain candidate passes (before truncation).
        alpha: f64,
        /// Wald's type II error: chance a candidate with the H1 gain is dropped.
        beta: f64,
        /// At most this many screening runs (and no more than the trunk has common seeds);
        /// then pass when the evidence leans to H1.
        max_runs: usize,
    },
    /// The greedy rules' "screen", which is the whole decision: one candidate run, kept when
    /// its metric is below the trunk's last recorded value. No statistical test.
    Greedy,
}

/// One look of the group-sequential confirmation: after `pairs` fresh pairs in all
/// (cumulative), accept when the one-sided paired t-test gives p < `alpha` and the mean gain is
/// at least the minimum effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Look {
    pub pairs: usize,
    pub alpha: f64,
}

/// v3's confirmation: fresh seeds, both arms, looks at growing numbers of pairs. The looks'
/// alphas add up to the per-decision false-accept bound (a union bound, valid however the
/// looks' tests depend on each other). Between looks the change is dropped for futility when
/// its t statistic is at most `futility_t`, or when the 95% interval's upper end is below the
/// minimum effect (the gain is surely too small to merge).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRule {
    pub looks: Vec<Look>,
    pub futility_t: f64,
}

impl ConfirmRule {
    /// The default looks, chosen with the simulation (guardrails/SIMULATION.md).
    pub fn v3_default() -> ConfirmRule {
        ConfirmRule {
            looks: vec![
                Look {
                    pairs: 3,
                    alpha: 0.002,
                },
                Look {
                    pairs: 6,
                    alpha: 0.005,
                },
                Look {
                    pairs: 16,
                    alpha: 0.018,
                },
            ],
            futility_t: 0.0,
        }
    }

    /// Sum of the looks' alphas: the per-decision false-accept bound.
    pub fn alpha(&self) -> f64 {
        self.looks.iter().map(|l| l.alpha).sum()
    }

    pub fn max_pairs(&self) -> usize {
        self.looks.last().map_or(0, |l| l.pairs)
    }
}

impl ScreenRule {
    /// Decisions recorded before v2 have no `screen` field: they used the single run.
    pub(super) fn recorded_before_v2() -> ScreenRule {
        ScreenRule::Single
    }

    /// v3's default paired screen (chosen with the simulation, guardrails/SIMULATION.md).
    pub fn paired_default() -> ScreenRule {
        ScreenRule::Paired {
            effect_sd: 1.2,
            alpha: 0.1,
            beta: 0.05,
            max_runs: 6,
        }
    }

    /// v2's default screen: H1 = 1.5 run sd, alpha 0.05, beta 0.1, at most 8 runs
    /// (chosen with the simulation, guardrails/SIMULATION.md).
    pub fn sequential_default() -> ScreenRule {
        ScreenRule::Sequential {
            effect_sd: 1.5,
            alpha: 0.05,
            beta: 0.1,
            max_runs: 8,
        }
    }
}
