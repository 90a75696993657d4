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
}

/// The smallest mean gain worth merging, in the metric's units: a number (`0.001`) or a
/// share of the trunk's level (`"0.05%"`, resolved against the calibrated baseline mean).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinEffect {
    Absolute(f64),
    /// Percent of the trunk's metric level.
    RelativePercent(f64),
}

impl MinEffect {
    /// The minimum effect in the metric's units for a trunk at `level`.
    pub fn resolve(self, level: f64) -> f64 {
        match self {
            MinEffect::Absolute(v) => v,
            MinEffect::RelativePercent(p) => p / 100.0 * level.abs(),
        }
    }

    fn is_valid(self) -> bool {
        let v = match self {
            MinEffect::Absolute(v) | MinEffect::RelativePercent(v) => v,
        };
        v.is_finite() && v >= 0.0
    }
}

impl std::fmt::Display for MinEffect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MinEffect::Absolute(v) => write!(f, "{v}"),
            MinEffect::RelativePercent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for MinEffect {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MinEffect::Absolute(v) => s.serialize_f64(*v),
            MinEffect::RelativePercent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for MinEffect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NumOrText {
            Num(f64),
            Text(String),
        }
        let bad = |t: &str| {
            serde::de::Error::custom(format!(
                "min_effect {t:?}: expected a number in the metric's units (0.001) or a percent of the trunk's level (\"0.05%\")"
            ))
        };
        let effect = match NumOrText::deserialize(d)? {
            NumOrText::Num(v) => MinEffect::Absolute(v),
            NumOrText::Text(t) => {
                let p = t
                    .trim()
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse::<f64>().ok())
                    .ok_or_else(|| bad(&t))?;
                MinEffect::RelativePercent(p)
            }
        };
        if !effect.is_valid() {
            return Err(bad(&effect.to_string()));
        }
        Ok(effect)
    }
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
    fn recorded_before_v2() -> ScreenRule {
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

/// One confirmation stage: `pairs` fresh paired seeds, then compare p with `p_threshold`
/// (continue below it at an intermediate stage; accept below it at the last stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRule {
    pub pairs: usize,
    pub p_threshold: f64,
}

/// The pre-registered decision rule. All sizes and thresholds are configuration and are
/// recorded in every decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionRule {
    pub rule_version: String,
    /// Distinct baseline seeds required by calibration.
    pub min_baseline_seeds: usize,
    /// Same-seed replays required by calibration (for the nondeterminism floor).
    pub min_replays: usize,
    /// Recalibrate the baseline after this many merges.
    pub recalibrate_every_merges: usize,
    /// Run the one-run screen before the paired stages.
    pub screen_enabled: bool,
    /// Single screen: rejects when (baseline mean - candidate) / run-to-run sd is below this.
    /// Negative: only candidates that look clearly worse are dropped.
    pub screen_reject_below_sd: f64,
    /// Which screen runs (when `screen_enabled`).
    #[serde(default = "ScreenRule::recorded_before_v2")]
    pub screen: ScreenRule,
    /// Confirmation stages, in order; the last one decides accept / reject (v1, v2).
    pub stages: Vec<StageRule>,
    /// Minimum mean gain to accept, as a multiple of the calibrated run-to-run sd (v1, v2).
    pub min_effect_sd: f64,
    /// v3's group-sequential confirmation (`[decision.confirm]`); absent for v1 and v2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<ConfirmRule>,
    /// v3's minimum effect in the metric's units (`min_effect = 0.001` or `"0.05%"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_effect: Option<MinEffect>,
    /// Holdout audits of the trunk's cumulative gain (`[decision.audit]`).
    pub audit: AuditRule,
}

impl Default for DecisionRule {
    fn default() -> Self {
        DecisionRule::v3_default()
    }
}

impl DecisionRule {
    /// The default rule, v3: a paired sequential screen against the trunk's cached runs, then
    /// group-sequential confirmation on fresh pairs. Sizes chosen with the simulation
    /// (guardrails/SIMULATION.md): false accepts far below alpha = 2.5%, power >= 0.8 at a gain
    /// of 0.002 bpb with the default target's noise.
    pub fn v3_default() -> DecisionRule {
        DecisionRule {
            rule_version: RULE_VERSION.to_string(),
            min_baseline_seeds: 10,
            min_replays: 3,
            recalibrate_every_merges: 25,
            screen_enabled: true,
            screen_reject_below_sd: -0.5,
            screen: ScreenRule::paired_default(),
            stages: Vec::new(),
            min_effect_sd: 0.0,
            confirm: Some(ConfirmRule::v3_default()),
            min_effect: Some(MinEffect::Absolute(0.001)),
            audit: AuditRule::default(),
        }
    }

    /// Rule v2 as it was the default: sequential screen against the calibrated mean, then 12
    /// fresh pairs at p < 0.025 and a mean gain of at least one run sd.
    pub fn v2_default() -> DecisionRule {
        DecisionRule {
            rule_version: RULE_VERSION_V2.to_string(),
            screen: ScreenRule::sequential_default(),
            stages: vec![StageRule {
                pairs: 12,
                p_threshold: 0.025,
            }],
            min_effect_sd: 1.0,
            confirm: None,
            min_effect: None,
            ..DecisionRule::v3_default()
        }
    }

    /// The defaults a `[decision]` table starts from when it names `rule_version`.
    pub fn defaults_for(rule_version: &str) -> DecisionRule {
        match rule_version {
            RULE_VERSION_V2 => DecisionRule::v2_default(),
            RULE_VERSION_V1 => DecisionRule {
                rule_version: RULE_VERSION_V1.to_string(),
                screen: ScreenRule::Single,
                stages: vec![
                    StageRule {
                        pairs: 4,
                        p_threshold: 0.25,
                    },
                    StageRule {
                        pairs: 8,
                        p_threshold: 0.05,
                    },
                ],
                ..DecisionRule::v2_default()
            },
            _ => DecisionRule::v3_default(),
        }
    }

    /// True for rule v3 (paired screen on the trunk's cached runs, group-sequential confirm).
    pub fn is_v3(&self) -> bool {
        self.rule_version == RULE_VERSION
    }

    /// Checks that the rule can be applied (stage sizes, thresholds in range).
    pub fn validate(&self) -> Result<(), DecisionError> {
        let bad = |m: String| Err(DecisionError::InvalidRule(m));
        match (self.rule_version.as_str(), &self.screen) {
            (RULE_VERSION, ScreenRule::Paired { .. })
            | (RULE_VERSION_V2, ScreenRule::Sequential { .. } | ScreenRule::Single)
            | (RULE_VERSION_V1, ScreenRule::Single) => {}
            (RULE_VERSION, _) => {
                return bad(format!(
                    "rule_version {RULE_VERSION:?} screens on pairs: screen = {{ kind = \"paired\", .. }}"
                ))
            }
            (RULE_VERSION_V2, _) => {
                return bad(format!(
                    "rule_version {RULE_VERSION_V2:?} has the single or the sequential screen; the paired screen is {RULE_VERSION:?}'s"
                ))
            }
            (RULE_VERSION_V1, _) => {
                return bad(format!(
                    "rule_version {RULE_VERSION_V1:?} has only the single-run screen; use {RULE_VERSION:?}"
                ))
            }
            (other, _) => {
                return bad(format!(
                    "rule_version {other:?} is not implemented (this build knows {RULE_VERSION:?}, {RULE_VERSION_V2:?} and {RULE_VERSION_V1:?})"
                ))
            }
        }
        if self.is_v3() {
            self.validate_v3()?;
        } else if self.confirm.is_some() || self.min_effect.is_some() {
            return bad(format!(
                "confirm and min_effect belong to {RULE_VERSION:?}; rule_version {:?} uses stages and min_effect_sd",
                self.rule_version
            ));
        }
        if let ScreenRule::Sequential {
            effect_sd,
            alpha,
            beta,
            max_runs,
        } = self.screen
        {
            if !(effect_sd.is_finite() && effect_sd > 0.0) {
                return bad(format!("screen effect_sd {effect_sd} must be > 0"));
            }
            if !(alpha > 0.0 && beta > 0.0 && alpha + beta < 1.0) {
                return bad(format!(
                    "screen alpha {alpha} and beta {beta} must be > 0 with alpha + beta < 1"
                ));
            }
            if max_runs == 0 {
                return bad("screen max_runs must be >= 1".into());
            }
        }
        if self.stages.is_empty() && !self.is_v3() {
            return bad("at least one confirmation stage is needed".into());
        }
        for (i, s) in self.stages.iter().enumerate() {
            if s.pairs < 2 {
                return bad(format!(
                    "stage {i} has {} pairs; a t-test needs >= 2",
                    s.pairs
                ));
            }
            if !(s.p_threshold > 0.0 && s.p_threshold < 1.0) {
                return bad(format!(
                    "stage {i} p_threshold {} is not in (0, 1)",
                    s.p_threshold
                ));
            }
        }
        if self.min_baseline_seeds < 2 {
            return bad("min_baseline_seeds must be >= 2 to estimate a standard deviation".into());
        }
        if !(self.min_effect_sd.is_finite() && self.min_effect_sd >= 0.0) {
            return bad(format!("min_effect_sd {} must be >= 0", self.min_effect_sd));
        }
        if !self.screen_reject_below_sd.is_finite() {
            return bad("screen_reject_below_sd must be finite".into());
        }
        self.audit.validate().map_err(DecisionError::InvalidRule)?;
        Ok(())
    }

    /// Upper bound on the probability that a null patch is accepted: stages use fresh seeds,
    /// so under the null their p-values are independent and the thresholds multiply.
    /// (Screening and the minimum effect only lower it further.)
    /// v3: the sum of the confirmation looks' alphas (a union bound over the looks).
    pub fn false_accept_bound(&self) -> f64 {
        match &self.confirm {
            Some(c) if self.is_v3() => c.alpha(),
            _ => self.stages.iter().map(|s| s.p_threshold).product(),
        }
    }

    fn validate_v3(&self) -> Result<(), DecisionError> {
        let bad = |m: String| Err(DecisionError::InvalidRule(m));
        if let ScreenRule::Paired {
            effect_sd,
            alpha,
            beta,
            max_runs,
        } = self.screen
        {
            if !(effect_sd.is_finite() && effect_sd > 0.0) {
                return bad(format!("screen effect_sd {effect_sd} must be > 0"));
            }
            if !(alpha > 0.0 && beta > 0.0 && alpha + beta < 1.0) {
                return bad(format!(
                    "screen alpha {alpha} and beta {beta} must be > 0 with alpha + beta < 1"
                ));
            }
            if max_runs == 0 {
                return bad("screen max_runs must be >= 1".into());
            }
        }
        let Some(confirm) = &self.confirm else {
            return bad(format!(
                "rule_version {RULE_VERSION:?} needs confirm = {{ looks = [..], futility_t = .. }}"
            ));
        };
        if confirm.looks.is_empty() {
            return bad("confirm needs at least one look".into());
        }
        let mut previous = 1;
        for (i, look) in confirm.looks.iter().enumerate() {
            if look.pairs <= previous {
                return bad(format!(
                    "confirm look {i} at {} pairs: looks need >= 2 pairs and must grow",
                    look.pairs
                ));
            }
            previous = look.pairs;
            if !(look.alpha > 0.0 && look.alpha < 1.0) {
                return bad(format!(
                    "confirm look {i} alpha {} is not in (0, 1)",
                    look.alpha
                ));
            }
        }
        if confirm.alpha() >= 1.0 {
            return bad(format!(
                "the looks' alphas add up to {} >= 1",
                confirm.alpha()
            ));
        }
        if !confirm.futility_t.is_finite() {
            return bad("confirm futility_t must be finite".into());
        }
        match self.min_effect {
            Some(m) if m.is_valid() => Ok(()),
            Some(m) => bad(format!("min_effect {m} must be a finite number >= 0")),
            None => bad(format!(
                "rule_version {RULE_VERSION:?} needs min_effect (0.001 or \"0.05%\")"
            )),
        }
    }

    /// True when the baseline must be recalibrated after this many merges since the last one.
    pub fn needs_recalibration(&self, merges_since_calibration: usize) -> bool {
        self.recalibrate_every_merges > 0
            && merges_since_calibration >= self.recalibrate_every_merges
    }

    /// Total paired seeds if every stage runs.
    pub fn max_pairs(&self) -> usize {
        match &self.confirm {
            Some(c) if self.is_v3() => c.max_pairs(),
            _ => self.stages.iter().map(|s| s.pairs).sum(),
        }
    }
}

/// The calibrated noise of the current trunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Inputs, kept so the calibration can be recomputed from the ledger.
    pub baseline: Vec<(u64, f64)>,
    pub replays: Vec<(u64, Vec<f64>)>,
    pub n_seeds: usize,
    pub baseline_mean: f64,
    /// Across-seed standard deviation of one run (the run-to-run sd).
    pub run_sd: f64,
    /// Pooled within-seed sd of same-seed replays (the nondeterminism floor).
    pub nondeterminism_sd: f64,
    /// Sd of a paired difference for a no-op change: sqrt(2) * nondeterminism floor.
    pub paired_null_sd: f64,
}

impl Calibration {
    /// Calibrates with the default requirements (>= 10 seeds, >= 3 replays).
    pub fn from_runs(
        baseline: &[(u64, f64)],
        replays: &[(u64, Vec<f64>)],
    ) -> Result<Calibration, DecisionError> {
        Self::from_runs_for(&DecisionRule::default(), baseline, replays)
    }

    /// Calibrates with the requirements of `rule`. `baseline` holds one run per distinct
    /// seed; `replays` holds extra runs of seeds (a replay's seed may also be in `baseline`).
    pub fn from_runs_for(
        rule: &DecisionRule,
        baseline: &[(u64, f64)],
        replays: &[(u64, Vec<f64>)],
    ) -> Result<Calibration, DecisionError> {
        let mut seen = std::collections::BTreeSet::new();
        for &(seed, value) in baseline {
            if !value.is_finite() {
                return Err(DecisionError::NonFiniteValue { seed, value });
            }
            if !seen.insert(seed) {
                return Err(DecisionError::DuplicateSeed(seed));
            }
        }
        for (seed, values) in replays {
            if let Some(&value) = values.iter().find(|v| !v.is_finite()) {
                return Err(DecisionError::NonFiniteValue { seed: *seed, value });
            }
        }
        if baseline.len() < rule.min_baseline_seeds.max(2) {
            return Err(DecisionError::TooFewBaselineSeeds {
                needed: rule.min_baseline_seeds.max(2),
                got: baseline.len(),
            });
        }
        let replay_count: usize = replays.iter().map(|(_, v)| v.len()).sum();
        // Each group: every value we have for one seed (its baseline run plus its replays).
        let groups: Vec<Vec<f64>> = replays
            .iter()
            .map(|(seed, values)| {
                let mut g: Vec<f64> = baseline
                    .iter()
                    .filter(|(s, _)| s == seed)
                    .map(|(_, v)| *v)
                    .collect();
                g.extend(values);
                g
            })
            .collect();
        let (ss, dof) =
            groups
                .iter()
                .filter(|g| g.len() >= 2)
                .fold((0.0, 0usize), |(ss, dof), g| {
                    let (m, _) = mean_sd(g);
                    (
                        ss + g.iter().map(|v| (v - m).powi(2)).sum::<f64>(),
                        dof + g.len() - 1,
                    )
                });
        if replay_count < rule.min_replays || (rule.min_replays > 0 && dof == 0) {
            return Err(DecisionError::TooFewReplays {
                needed: rule.min_replays,
                got: if dof == 0 { 0 } else { replay_count },
            });
        }
        let values: Vec<f64> = baseline.iter().map(|(_, v)| *v).collect();
        let (baseline_mean, run_sd) = mean_sd(&values);
        let nondeterminism_sd = if dof > 0 {
            (ss / dof as f64).sqrt()
        } else {
            0.0
        };
        Ok(Calibration {
            baseline: baseline.to_vec(),
            replays: replays.to_vec(),
            n_seeds: baseline.len(),
            baseline_mean,
            run_sd,
            nondeterminism_sd,
            paired_null_sd: std::f64::consts::SQRT_2 * nondeterminism_sd,
        })
    }

    /// The minimum mean gain an accepted change must show under `rule`.
    /// v3: `min_effect` in the metric's units (a percentage resolved against the baseline mean).
    pub fn min_effect(&self, rule: &DecisionRule) -> f64 {
        match rule.min_effect {
            Some(m) if rule.is_v3() => m.resolve(self.baseline_mean),
            _ => rule.min_effect_sd * self.run_sd,
        }
    }
}

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
    }
}

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
    if pairs.len() != stage.pairs {
        return Err(DecisionError::WrongPairCount {
            index: stage_index,
            needed: stage.pairs,
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
    let test = one_sample_t(&gains).expect("validated: >= 2 finite values");
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
    if pairs.len() != look.pairs {
        return Err(DecisionError::WrongPairCount {
            index: look_index,
            needed: look.pairs,
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
    let test = one_sample_t(&gains).expect("validated: >= 2 finite values");
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
