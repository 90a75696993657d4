//! The rule as configured: versions, stages, thresholds, and their validation.

use super::*;

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
    /// greedy: the one seed every greedy run uses (the trunk's calibration run too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_seed: Option<u64>,
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
            fixed_seed: None,
        }
    }

    /// The popular loop's rule (`fresh`: its fresh-seed variant): calibration is one trunk run
    /// on the fixed seed, each candidate one run, kept if its metric is below the trunk's last
    /// recorded value. Never recalibrated after a merge: the merged run is the trunk's value.
    pub fn greedy(fresh: bool) -> DecisionRule {
        DecisionRule {
            rule_version: if fresh {
                RULE_VERSION_GREEDY_FRESH
            } else {
                RULE_VERSION_GREEDY
            }
            .to_string(),
            min_baseline_seeds: 1,
            min_replays: 0,
            recalibrate_every_merges: 1_000_000,
            screen: ScreenRule::Greedy,
            confirm: None,
            min_effect: None,
            stages: Vec::new(),
            min_effect_sd: 0.0,
            audit: AuditRule {
                every_merges: 0,
                ..AuditRule::default()
            },
            fixed_seed: Some(GREEDY_SEED),
            ..DecisionRule::v3_default()
        }
    }

    /// True for the greedy rules (no statistical test), fixed-seed or fresh-seed.
    pub fn is_greedy(&self) -> bool {
        self.rule_version == RULE_VERSION_GREEDY || self.is_greedy_fresh()
    }

    /// True for greedy-fresh: each candidate on a fresh seed.
    pub fn is_greedy_fresh(&self) -> bool {
        self.rule_version == RULE_VERSION_GREEDY_FRESH
    }

    /// Rules whose decisions start from the trunk's recorded runs ([`crate::process::CommonControl`]):
    /// v3's common seeds, greedy's one fixed seed (greedy-fresh: the trunk's last value).
    pub fn uses_common_control(&self) -> bool {
        self.is_v3() || self.is_greedy()
    }

    /// The fewest distinct trunk seeds a calibration may have (a sd needs two; greedy needs
    /// only its one fixed-seed run).
    pub fn least_calibration_seeds(&self) -> usize {
        if self.is_greedy() {
            1
        } else {
            2
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
            RULE_VERSION_GREEDY => DecisionRule::greedy(false),
            RULE_VERSION_GREEDY_FRESH => DecisionRule::greedy(true),
            _ => DecisionRule::v3_default(),
        }
    }

    /// The rule version a `[decision] rule = NAME` names: "greedy", "greedy-fresh",
    /// "paired-sequential" (v3), or a full version string.
    pub fn version_named(name: &str) -> Option<&'static str> {
        [
            ("greedy", RULE_VERSION_GREEDY),
            ("greedy-fresh", RULE_VERSION_GREEDY_FRESH),
            ("paired-sequential", RULE_VERSION),
            ("sequential-screen", RULE_VERSION_V2),
            ("paired-two-stage", RULE_VERSION_V1),
        ]
        .into_iter()
        .find(|(short, full)| name == *short || name == *full)
        .map(|(_, full)| full)
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
            | (RULE_VERSION_V1, ScreenRule::Single)
            | (RULE_VERSION_GREEDY | RULE_VERSION_GREEDY_FRESH, ScreenRule::Greedy) => {}
            (RULE_VERSION_GREEDY | RULE_VERSION_GREEDY_FRESH, _) => {
                return bad(format!(
                    "rule_version {:?} runs one candidate and keeps it if lower: screen = {{ kind = \"greedy\" }}",
                    self.rule_version
                ))
            }
            (_, ScreenRule::Greedy) => {
                return bad(format!(
                    "the greedy screen belongs to rule_version {RULE_VERSION_GREEDY:?} or {RULE_VERSION_GREEDY_FRESH:?}"
                ))
            }
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
                    "rule_version {other:?} is not implemented (this build knows {RULE_VERSION:?}, {RULE_VERSION_V2:?}, {RULE_VERSION_V1:?}, {RULE_VERSION_GREEDY:?} and {RULE_VERSION_GREEDY_FRESH:?})"
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
        if self.is_greedy() {
            if self.fixed_seed.is_none() {
                return bad(format!(
                    "rule_version {:?} needs fixed_seed (the seed of every greedy run)",
                    self.rule_version
                ));
            }
            if self.min_baseline_seeds != 1 || !self.stages.is_empty() {
                return bad(format!(
                    "rule_version {:?} calibrates on one seed (min_baseline_seeds = 1) and has no stages",
                    self.rule_version
                ));
            }
        } else if self.fixed_seed.is_some() {
            return bad("fixed_seed belongs to the greedy rules".into());
        }
        if self.stages.is_empty() && !self.is_v3() && !self.is_greedy() {
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
        if self.min_baseline_seeds < self.least_calibration_seeds() {
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
