//! The decision process: screen, then confirm, one request at a time.

use super::*;

/// The value of a run already known not to have crashed.
fn v_of(value: RunValue) -> f64 {
    match value {
        RunValue::Ok(v) => v,
        RunValue::Crashed => f64::NAN,
    }
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
            .uses_common_control()
            .then(|| CommonControl::from_calibration(&calibration));
        Self::create(rule, calibration, common)
    }

    /// A v3 decision screening against the trunk's `common` control.
    pub fn with_common_control(
        rule: DecisionRule,
        calibration: Calibration,
        common: CommonControl,
    ) -> Result<Self, ProcessError> {
        if !rule.uses_common_control() {
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
            if rule.is_greedy_fresh() && c.value(c.seeds[0]).is_none() {
                return Err(ProcessError::InvalidCommonControl(format!(
                    "greedy-fresh compares with the trunk's last recorded value, and seed {} has none",
                    c.seeds[0]
                )));
            }
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
        if self.rule.is_greedy_fresh() {
            return None; // its one run is on a fresh seed
        }
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
                if self.rule.is_greedy_fresh() {
                    let (seed, trunk) = self.trunk_last_value();
                    let outcome = screen_greedy(&self.calibration, seed, true, trunk, v_of(value));
                    self.finish_greedy(outcome);
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
        if self.rule.is_greedy() {
            let outcome = screen_greedy(&self.calibration, seed, false, trunk_value, c);
            self.finish_greedy(outcome);
            return Ok(());
        }
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

    /// greedy-fresh: the trunk's last recorded value (validated present at creation).
    fn trunk_last_value(&self) -> (u64, f64) {
        let c = self
            .common
            .as_ref()
            .expect("greedy keeps the trunk's value");
        let seed = c.seeds[0];
        (seed, c.value(seed).expect("validated at creation"))
    }

    /// The greedy rules decide on their one run: keep when lower, else drop.
    fn finish_greedy(&mut self, outcome: ScreenOutcome) {
        let verdict = match outcome.verdict {
            ScreenVerdict::Pass => Verdict::Accept,
            ScreenVerdict::Reject => Verdict::Reject,
        };
        let reason = outcome.reason.clone();
        self.screen = Some(outcome);
        self.finish(verdict, DecidedAt::Screen, &reason);
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
