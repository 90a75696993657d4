//! The screen + stages driver as a pure state machine.
//!
//! The loop and the simulation both drive a [`DecisionProcess`]: ask [`DecisionProcess::next_request`]
//! which runs are needed, run them, feed them back with [`DecisionProcess::add_result`], until it
//! returns [`Request::Done`]. Crash handling (the documented contract):
//! - a crashed (or diverged, timed-out, out-of-memory) **candidate** run ends the decision as
//!   [`Verdict::Crash`];
//! - a crashed **baseline** run says nothing about the candidate: the loop retries it on the same
//!   seed and submits the pair only when the baseline run succeeded. Submitting a crashed
//!   baseline is refused ([`ProcessError::BaselineCrashed`]) and leaves the state unchanged.
//!   The same holds for a trunk run v3 asks for to fill a common seed.
//!
//! Rule v3 screens against the trunk's *common control* ([`CommonControl`]): a fixed list of
//! seeds with the trunk's cached run on each. A screening request names the seed
//! ([`Arm::Common`]) and whether the trunk's run on it must be made too (a missing cached value
//! is filled lazily); each screening run thus yields a pair for the price of one run.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::decision::{
    confirm_look, confirm_stage, screen_paired, screen_runs, Calibration, DecisionError,
    DecisionRule, ScreenOutcome, ScreenRule, ScreenVerdict, StageOutcome, StageVerdict,
};

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

    fn validate(&self) -> Result<(), ProcessError> {
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
    pub fn common_runs(&self) -> Vec<(u64, f64)> {
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Phase {
    Screen,
    Stage {
        index: usize,
        pairs: Vec<(f64, f64)>,
    },
    Done(Box<Decision>),
}

/// The decision state machine. Serde-serializable, so the loop can persist it mid-decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionProcess {
    rule: DecisionRule,
    calibration: Calibration,
    phase: Phase,
    screen: Option<ScreenOutcome>,
    stages: Vec<StageOutcome>,
    observations: Vec<Observation>,
    runs: usize,
    /// v3: the common control as given, and the screening pairs (seed, trunk, candidate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    common: Option<CommonControl>,
    #[serde(default)]
    screen_pairs: Vec<(u64, f64, f64)>,
}

impl DecisionProcess {
    /// A decision under `rule`; for v3 the common control is calibration's baseline runs
    /// (use [`DecisionProcess::with_common_control`] once the trunk has moved).
    pub fn new(rule: DecisionRule, calibration: Calibration) -> Result<Self, ProcessError> {
        let common = rule
            .is_v3()
            .then(|| CommonControl::from_calibration(&calibration));
        Self::create(rule, calibration, common)
    }

    /// A v3 decision screening against the trunk's `common` control.
    pub fn with_common_control(
        rule: DecisionRule,
        calibration: Calibration,
        common: CommonControl,
    ) -> Result<Self, ProcessError> {
        if !rule.is_v3() {
            return Err(ProcessError::InvalidCommonControl(format!(
                "rule_version {:?} does not screen on common seeds",
                rule.rule_version
            )));
        }
        Self::create(rule, calibration, Some(common))
    }

    fn create(
        rule: DecisionRule,
        calibration: Calibration,
        common: Option<CommonControl>,
    ) -> Result<Self, ProcessError> {
        rule.validate()?;
        if let Some(c) = &common {
            c.validate()?;
        }
        let phase = if rule.screen_enabled {
            Phase::Screen
        } else {
            Phase::Stage {
                index: 0,
                pairs: Vec::new(),
            }
        };
        Ok(DecisionProcess {
            rule,
            calibration,
            phase,
            screen: None,
            stages: Vec::new(),
            observations: Vec::new(),
            runs: 0,
            common,
            screen_pairs: Vec::new(),
        })
    }

    /// The minimum effect in the metric's units this decision uses.
    pub fn min_effect(&self) -> f64 {
        self.calibration.min_effect(&self.rule)
    }

    /// v3: how many screening runs the paired screen may take (capped by the common seeds).
    fn screen_limit(&self) -> usize {
        match (&self.rule.screen, &self.common) {
            (ScreenRule::Paired { max_runs, .. }, Some(c)) => (*max_runs).min(c.seeds.len()),
            _ => 0,
        }
    }

    /// v3: the next common seed to screen on and the trunk's cached value on it.
    fn next_common(&self) -> Option<(u64, Option<f64>)> {
        let c = self.common.as_ref()?;
        let seed = *c.seeds.get(self.screen_pairs.len())?;
        Some((seed, c.value(seed)))
    }

    /// Pairs the current phase still needs before its next test.
    fn pairs_needed(&self, index: usize, have: usize) -> usize {
        match &self.rule.confirm {
            Some(c) if self.rule.is_v3() => c.looks[index].pairs - have,
            _ => self.rule.stages[index].pairs - have,
        }
    }

    /// The runs needed next, or the decision once made.
    pub fn next_request(&self) -> Request<'_> {
        match &self.phase {
            Phase::Screen => match self.next_common() {
                Some((seed, cached)) => Request::NeedRuns {
                    arm: Arm::Common {
                        seed,
                        with_trunk: cached.is_none(),
                    },
                    count: 1,
                },
                None => Request::NeedRuns {
                    arm: Arm::Candidate,
                    count: 1,
                },
            },
            Phase::Stage { index, pairs } => Request::NeedRuns {
                arm: Arm::Paired,
                count: self.pairs_needed(*index, pairs.len()),
            },
            Phase::Done(d) => Request::Done(d),
        }
    }

    /// The decision, once made.
    pub fn decision(&self) -> Option<&Decision> {
        match &self.phase {
            Phase::Done(d) => Some(d),
            _ => None,
        }
    }

    /// Feeds one result back (one candidate run for the screen, one pair for a stage).
    pub fn add_result(&mut self, observation: Observation) -> Result<(), ProcessError> {
        if let Some((seed, cached)) = self.next_common() {
            if matches!(self.phase, Phase::Screen) {
                return self.add_common(observation, seed, cached);
            }
        }
        match (&mut self.phase, observation) {
            (Phase::Done(_), _) => Err(ProcessError::AlreadyDone),
            (_, Observation::Common { .. }) => Err(ProcessError::WrongObservation {
                expected: match self.phase {
                    Phase::Screen => Arm::Candidate,
                    _ => Arm::Paired,
                },
                got: "a run on a common seed",
            }),
            (Phase::Screen, Observation::Candidate(value)) => {
                if let RunValue::Ok(v) = value {
                    if !v.is_finite() {
                        // A NaN metric is a diverged run: the loop reports it as a crash.
                        return Err(ProcessError::NonFiniteValue(v));
                    }
                }
                self.observations.push(observation);
                self.runs += 1;
                if value == RunValue::Crashed {
                    self.finish(
                        Verdict::Crash,
                        DecidedAt::Screen,
                        "the screening run crashed",
                    );
                    return Ok(());
                }
                // The screening runs so far: every candidate observation (a crash ended above).
                let values: Vec<f64> = self
                    .observations
                    .iter()
                    .filter_map(|o| match o {
                        Observation::Candidate(RunValue::Ok(v)) => Some(*v),
                        _ => None,
                    })
                    .collect();
                let Some(outcome) = screen_runs(&self.calibration, &self.rule, &values) else {
                    return Ok(()); // the sequential screen wants another run
                };
                let verdict = outcome.verdict;
                let reason = outcome.reason.clone();
                self.screen = Some(outcome);
                match verdict {
                    ScreenVerdict::Reject => {
                        self.finish(Verdict::Reject, DecidedAt::Screen, &reason)
                    }
                    ScreenVerdict::Pass => {
                        self.phase = Phase::Stage {
                            index: 0,
                            pairs: Vec::new(),
                        }
                    }
                }
                Ok(())
            }
            (Phase::Screen, Observation::Pair { .. }) => Err(ProcessError::WrongObservation {
                expected: Arm::Candidate,
                got: "a pair",
            }),
            (Phase::Stage { .. }, Observation::Candidate(_)) => {
                Err(ProcessError::WrongObservation {
                    expected: Arm::Paired,
                    got: "a single candidate run",
                })
            }
            (
                Phase::Stage { index, pairs },
                Observation::Pair {
                    baseline,
                    candidate,
                },
            ) => {
                let index = *index;
                let RunValue::Ok(b) = baseline else {
                    return Err(ProcessError::BaselineCrashed);
                };
                let RunValue::Ok(c) = candidate else {
                    self.observations.push(observation);
                    self.runs += 2;
                    let reason = format!("a candidate run crashed in stage {index}");
                    self.finish(Verdict::Crash, DecidedAt::Stage(index), &reason);
                    return Ok(());
                };
                if !b.is_finite() || !c.is_finite() {
                    return Err(DecisionError::NonFinitePair {
                        index: pairs.len(),
                        baseline: b,
                        candidate: c,
                    }
                    .into());
                }
                pairs.push((b, c));
                self.observations.push(observation);
                self.runs += 2;
                let have = pairs.len();
                if self.pairs_needed(index, 0) > have {
                    return Ok(());
                }
                let Phase::Stage { pairs, .. } = &mut self.phase else {
                    unreachable!("in a stage")
                };
                // v3's looks are cumulative: every fresh pair so far; v1/v2's stages are not
                // pooled, so their false-accept probabilities multiply.
                let v3 = self.rule.is_v3();
                let pairs = if v3 {
                    pairs.clone()
                } else {
                    std::mem::take(pairs)
                };
                let outcome = if v3 {
                    confirm_look(&self.rule, self.min_effect(), index, &pairs)?
                } else {
                    confirm_stage(&self.rule, &self.calibration, index, &pairs)?
                };
                let verdict = outcome.verdict;
                let reason = outcome.reason.clone();
                self.stages.push(outcome);
                match verdict {
                    StageVerdict::Continue => {
                        self.phase = Phase::Stage {
                            index: index + 1,
                            pairs: if v3 { pairs } else { Vec::new() },
                        }
                    }
                    StageVerdict::Accept => {
                        self.finish(Verdict::Accept, DecidedAt::Stage(index), &reason)
                    }
                    StageVerdict::Reject => {
                        self.finish(Verdict::Reject, DecidedAt::Stage(index), &reason)
                    }
                }
                Ok(())
            }
        }
    }

    /// v3's screening run on the expected common seed `seed` (`cached`: the trunk's value).
    fn add_common(
        &mut self,
        observation: Observation,
        seed: u64,
        cached: Option<f64>,
    ) -> Result<(), ProcessError> {
        let Observation::Common {
            seed: got,
            trunk,
            candidate,
        } = observation
        else {
            return Err(ProcessError::WrongObservation {
                expected: Arm::Common {
                    seed,
                    with_trunk: cached.is_none(),
                },
                got: match observation {
                    Observation::Pair { .. } => "a pair",
                    _ => "a candidate run on a fresh seed",
                },
            });
        };
        if got != seed {
            return Err(ProcessError::WrongSeed {
                expected: seed,
                got,
            });
        }
        let trunk_value = match (cached, trunk) {
            (Some(v), None) => v,
            (None, Some(RunValue::Ok(v))) => v,
            (None, Some(RunValue::Crashed)) => return Err(ProcessError::BaselineCrashed),
            (Some(_), Some(_)) => return Err(ProcessError::TrunkRun { seed, cached: true }),
            (None, None) => {
                return Err(ProcessError::TrunkRun {
                    seed,
                    cached: false,
                })
            }
        };
        if !trunk_value.is_finite() {
            return Err(ProcessError::NonFiniteValue(trunk_value));
        }
        if let RunValue::Ok(v) = candidate {
            if !v.is_finite() {
                return Err(ProcessError::NonFiniteValue(v));
            }
        }
        self.observations.push(observation);
        self.runs += 1 + usize::from(trunk.is_some());
        let RunValue::Ok(c) = candidate else {
            self.finish(
                Verdict::Crash,
                DecidedAt::Screen,
                &format!("the screening run on common seed {seed} crashed"),
            );
            return Ok(());
        };
        self.screen_pairs.push((seed, trunk_value, c));
        let Some(outcome) = screen_paired(
            &self.calibration,
            &self.rule,
            self.min_effect(),
            self.screen_limit(),
            &self.screen_pairs,
        ) else {
            return Ok(()); // the paired screen wants another run
        };
        let verdict = outcome.verdict;
        let reason = outcome.reason.clone();
        self.screen = Some(outcome);
        match verdict {
            ScreenVerdict::Reject => self.finish(Verdict::Reject, DecidedAt::Screen, &reason),
            ScreenVerdict::Pass => {
                self.phase = Phase::Stage {
                    index: 0,
                    pairs: Vec::new(),
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, verdict: Verdict, decided_at: DecidedAt, reason: &str) {
        self.phase = Phase::Done(Box::new(Decision {
            rule_version: self.rule.rule_version.clone(),
            verdict,
            decided_at,
            reason: reason.to_string(),
            rule: self.rule.clone(),
            calibration: self.calibration.clone(),
            screen: self.screen.clone(),
            stages: self.stages.clone(),
            observations: self.observations.clone(),
            runs: self.runs,
            common: self.common.clone(),
            min_effect: self.rule.is_v3().then(|| self.min_effect()),
        }));
    }
}

/// Re-runs the rule on the inputs stored in a decision (as the ledger holds it) and checks
/// that the calibration, every statistic and the verdict come out the same.
pub fn recompute(decision_json: &serde_json::Value) -> Result<(), String> {
    let stored: Decision = serde_json::from_value(decision_json.clone())
        .map_err(|e| format!("not a decision record: {e}"))?;
    if stored.rule_version != stored.rule.rule_version {
        return Err(format!(
            "rule_version {:?} differs from the stored rule's {:?}",
            stored.rule_version, stored.rule.rule_version
        ));
    }
    let calibration = Calibration::from_runs_for(
        &stored.rule,
        &stored.calibration.baseline,
        &stored.calibration.replays,
    )
    .map_err(|e| format!("calibration does not recompute: {e}"))?;
    let process = match (&stored.common, stored.rule.is_v3()) {
        (Some(common), true) => {
            DecisionProcess::with_common_control(stored.rule.clone(), calibration, common.clone())
        }
        (None, true) => return Err("a v3 decision without its common control".into()),
        (Some(_), false) => {
            return Err(format!(
                "rule_version {:?} has no common control, but the record holds one",
                stored.rule_version
            ))
        }
        (None, false) => DecisionProcess::new(stored.rule.clone(), calibration),
    };
    let mut process = process.map_err(|e| format!("stored rule is invalid: {e}"))?;
    for (i, obs) in stored.observations.iter().enumerate() {
        process
            .add_result(*obs)
            .map_err(|e| format!("observation {i} cannot be replayed: {e}"))?;
    }
    let Some(recomputed) = process.decision() else {
        return Err("the stored observations do not reach a decision".into());
    };
    let a = serde_json::to_value(recomputed).map_err(|e| e.to_string())?;
    let b = serde_json::to_value(&stored).map_err(|e| e.to_string())?;
    match first_difference(&a, &b, "") {
        None => Ok(()),
        Some(path) => Err(format!(
            "recomputed decision differs at {path}: stored {}, recomputed {}",
            lookup(&b, &path),
            lookup(&a, &path)
        )),
    }
}

/// Floats may lose their last bit through JSON text, so numbers compare with a relative tolerance.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value as V;
    match (a, b) {
        (V::Number(x), V::Number(y)) => {
            let (x, y) = (x.as_f64()?, y.as_f64()?);
            let close = x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs());
            (!close).then(|| path.to_string())
        }
        (V::Object(x), V::Object(y)) => {
            if x.len() != y.len() {
                return Some(path.to_string());
            }
            x.iter().find_map(|(k, v)| match y.get(k) {
                None => Some(format!("{path}/{k}")),
                Some(w) => first_difference(v, w, &format!("{path}/{k}")),
            })
        }
        (V::Array(x), V::Array(y)) => {
            if x.len() != y.len() {
                return Some(path.to_string());
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (v, w))| first_difference(v, w, &format!("{path}/{i}")))
        }
        _ => (a != b).then(|| path.to_string()),
    }
}

fn lookup(v: &serde_json::Value, path: &str) -> String {
    v.pointer(path)
        .map(|x| x.to_string())
        .unwrap_or_else(|| "nothing".into())
}
