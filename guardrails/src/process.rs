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

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::decision::{
    confirm_stage, screen_runs, Calibration, DecisionError, DecisionRule, ScreenOutcome,
    ScreenVerdict, StageOutcome, StageVerdict,
};

/// Which arm(s) a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// Candidate runs only (the screen), on any fresh seed.
    Candidate,
    /// Baseline and candidate on the same fresh seed, once per pair.
    Paired,
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
}

impl DecisionProcess {
    pub fn new(rule: DecisionRule, calibration: Calibration) -> Result<Self, ProcessError> {
        rule.validate()?;
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
        })
    }

    /// The runs needed next, or the decision once made.
    pub fn next_request(&self) -> Request<'_> {
        match &self.phase {
            Phase::Screen => Request::NeedRuns {
                arm: Arm::Candidate,
                count: 1,
            },
            Phase::Stage { index, pairs } => Request::NeedRuns {
                arm: Arm::Paired,
                count: self.rule.stages[*index].pairs - pairs.len(),
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
        match (&mut self.phase, observation) {
            (Phase::Done(_), _) => Err(ProcessError::AlreadyDone),
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
                if pairs.len() < self.rule.stages[index].pairs {
                    return Ok(());
                }
                let pairs = std::mem::take(pairs);
                let outcome = confirm_stage(&self.rule, &self.calibration, index, &pairs)?;
                let verdict = outcome.verdict;
                let reason = outcome.reason.clone();
                self.stages.push(outcome);
                match verdict {
                    StageVerdict::Continue => {
                        self.phase = Phase::Stage {
                            index: index + 1,
                            pairs: Vec::new(),
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
    let mut process = DecisionProcess::new(stored.rule.clone(), calibration)
        .map_err(|e| format!("stored rule is invalid: {e}"))?;
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
