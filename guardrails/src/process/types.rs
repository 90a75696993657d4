//! What a decision asks for and observes, and the decision it records.

use super::*;

/// Which arm(s) a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// Candidate runs only (the screen), on any fresh seed.
    Candidate,
    /// Baseline and candidate on the same fresh seed, once per pair.
    Paired,
    /// v3's screen: the candidate on the trunk's common seed `seed`, plus the trunk's own run
    /// on it when `with_trunk` (its cached value is missing).
    Common { seed: u64, with_trunk: bool },
}

/// The trunk's common control (v3): its seeds, in the order the screen uses them, and the
/// trunk's recorded run on each seed that has one. Calibration's baseline seeds start it; after
/// a merge the merged change's screening runs on those seeds become the new trunk's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommonControl {
    pub seeds: Vec<u64>,
    /// (seed, value) of the trunk's cached runs; every seed is in `seeds`.
    pub cached: Vec<(u64, f64)>,
}

impl CommonControl {
    /// Calibration's baseline runs: the trunk's seeds and its value on each.
    pub fn from_calibration(calibration: &Calibration) -> CommonControl {
        CommonControl {
            seeds: calibration.baseline.iter().map(|(s, _)| *s).collect(),
            cached: calibration.baseline.clone(),
        }
    }

    /// The trunk's cached value on `seed`.
    pub fn value(&self, seed: u64) -> Option<f64> {
        self.cached
            .iter()
            .find(|(s, _)| *s == seed)
            .map(|(_, v)| *v)
    }

    pub(super) fn validate(&self) -> Result<(), ProcessError> {
        let bad = |m: String| Err(ProcessError::InvalidCommonControl(m));
        if self.seeds.is_empty() {
            return bad("no common seeds".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(s) = self.seeds.iter().find(|s| !seen.insert(**s)) {
            return bad(format!("seed {s} is listed twice"));
        }
        let mut cached = std::collections::BTreeSet::new();
        for &(seed, value) in &self.cached {
            if !self.seeds.contains(&seed) {
                return bad(format!("cached seed {seed} is not a common seed"));
            }
            if !cached.insert(seed) {
                return bad(format!("seed {seed} has two cached values"));
            }
            if !value.is_finite() {
                return bad(format!("cached value {value} of seed {seed} is not finite"));
            }
        }
        Ok(())
    }
}

/// The value of one finished run, or the fact that it did not produce one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunValue {
    Ok(f64),
    Crashed,
}

/// What the process needs next.
#[derive(Debug, Clone, PartialEq)]
pub enum Request<'a> {
    NeedRuns { arm: Arm, count: usize },
    Done(&'a Decision),
}

/// One result fed back to the process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Observation {
    Candidate(RunValue),
    Pair {
        baseline: RunValue,
        candidate: RunValue,
    },
    /// v3's screening run on common seed `seed`; `trunk` is the trunk's run made to fill a
    /// missing cached value (None when the value was cached).
    Common {
        seed: u64,
        trunk: Option<RunValue>,
        candidate: RunValue,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accept,
    Reject,
    Crash,
}

/// Where the decision was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedAt {
    Screen,
    Stage(usize),
}

/// A finished decision: verdict, every input and statistic, the rule and the calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub rule_version: String,
    pub verdict: Verdict,
    pub decided_at: DecidedAt,
    pub reason: String,
    pub rule: DecisionRule,
    pub calibration: Calibration,
    pub screen: Option<ScreenOutcome>,
    pub stages: Vec<StageOutcome>,
    /// Observations in the order they were fed (including the crash, if any).
    pub observations: Vec<Observation>,
    /// Training runs this decision used (a crashed run counts; baseline retries are the loop's).
    pub runs: usize,
    /// v3: the trunk's common control as the decision started (seeds and cached runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common: Option<CommonControl>,
    /// v3: the minimum effect in the metric's units, as resolved for this decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_effect: Option<f64>,
}

impl Decision {
    /// v3: the trunk runs this decision made to fill missing cached values, (seed, value).
    pub fn trunk_fills(&self) -> Vec<(u64, f64)> {
        self.observations
            .iter()
            .filter_map(|o| match o {
                Observation::Common {
                    seed,
                    trunk: Some(RunValue::Ok(v)),
                    ..
                } => Some((*seed, *v)),
                _ => None,
            })
            .collect()
    }

    /// v3: the candidate's screening runs on the common seeds, (seed, value): the new trunk's
    /// cached runs if this change is merged.
    /// greedy-fresh: its one run, on a fresh seed, becomes the trunk's last recorded value,
    /// kept in the slot of the trunk's seed.
    pub fn common_runs(&self) -> Vec<(u64, f64)> {
        if self.rule.is_greedy_fresh() {
            let slot = self.common.as_ref().and_then(|c| c.seeds.first().copied());
            return self
                .observations
                .iter()
                .filter_map(|o| match (o, slot) {
                    (Observation::Candidate(RunValue::Ok(v)), Some(seed)) => Some((seed, *v)),
                    _ => None,
                })
                .collect();
        }
        self.observations
            .iter()
            .filter_map(|o| match o {
                Observation::Common {
                    seed,
                    candidate: RunValue::Ok(v),
                    ..
                } => Some((*seed, *v)),
                _ => None,
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum ProcessError {
    #[error(transparent)]
    Decision(#[from] DecisionError),
    #[error("the decision is already made")]
    AlreadyDone,
    #[error("expected {expected:?} results, got {got}")]
    WrongObservation { expected: Arm, got: &'static str },
    #[error("the baseline run crashed: retry it on the same seed before submitting the pair")]
    BaselineCrashed,
    #[error("run value {0} is not finite: report a run with a non-finite metric as crashed")]
    NonFiniteValue(f64),
    #[error("invalid common control: {0}")]
    InvalidCommonControl(String),
    #[error("expected the screening run on common seed {expected}, got seed {got}")]
    WrongSeed { expected: u64, got: u64 },
    #[error("common seed {seed}: the trunk's run {}", if *.cached { "is cached; do not submit it again" } else { "is not cached; submit it with the candidate's" })]
    TrunkRun { seed: u64, cached: bool },
}
