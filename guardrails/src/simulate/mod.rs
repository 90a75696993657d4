//! The proof of the decision rule: replay the exact [`DecisionProcess`] the loop uses on
//! synthetic noise and count false accepts, power and training runs per decision.
//!
//! Noise model (per training run, metric in the metric's units, run-to-run sd `run_sd`):
//! value = level - gain(arm) + a_seed + e_run, with a_seed shared by every run on the same seed
//! (variance rho run_sd^2) and e_run independent per run (variance (1 - rho) run_sd^2). So the
//! paired-difference sd is run_sd sqrt(2 (1 - rho)). Effects are given in paired sd, or in the
//! metric's units. For Student t noise both parts are t(3) scaled to the same variances.
//!
//! The trunk moves, as in a session: every fourth decision is a clearly better change, and
//! every accepted change is merged (the trunk's level drops by its gain; under v3 its
//! screening runs become the trunk's cached runs, the other common seeds are filled lazily).
//! Rules that compare against the calibrated mean then see a stale baseline, as the loop does.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::decision::{Calibration, DecisionRule, ScreenRule};
use crate::process::{
    Arm, CommonControl, Decision, DecisionProcess, Observation, Request, RunValue, Verdict,
};
use crate::stats::clopper_pearson_upper;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseFamily {
    Normal,
    /// Student t with 3 degrees of freedom, scaled to unit variance (heavy tails).
    StudentT3,
}

impl NoiseFamily {
    fn label(self) -> &'static str {
        match self {
            NoiseFamily::Normal => "normal",
            NoiseFamily::StudentT3 => "student t(3)",
        }
    }
}

/// One noise setting: a family and the probability that any run crashes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    pub noise: NoiseFamily,
    pub crash_probability: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Decisions simulated per (scenario, effect) cell.
    pub trials: usize,
    /// True effects to simulate, in paired-difference sd; 0 is the null patch.
    pub effects: Vec<f64>,
    /// True effects in the metric's units (e.g. 0.002 bpb), simulated after `effects`.
    pub metric_effects: Vec<f64>,
    pub scenarios: Vec<Scenario>,
    /// Share of run-to-run variance from the seed (shared by both arms on a seed).
    pub rho: f64,
    /// Run-to-run sd in the metric's units (the default target's val_bpb: 0.020).
    pub run_sd: f64,
    /// Merge clearly better changes between the measured decisions (the trunk moves).
    pub trunk_moves: bool,
    /// Same code and seed give the same value, so calibration's same-seed replays measure no
    /// noise (the default CPU trainer); otherwise every run has its own noise (GPUs).
    pub deterministic: bool,
    pub seed: u64,
}

/// The default target's measured run-to-run sd of val_bpb.
pub const DEFAULT_TARGET_RUN_SD: f64 = 0.020;
/// The default target's measured seed correlation (paired sd 0.0018 against run sd 0.020).
pub const DEFAULT_TARGET_RHO: f64 = 0.996;
/// The smallest real gain the issue asks the default target's rule to find (bpb).
pub const GAIN_OF_INTEREST: f64 = 0.002;
/// Measured decisions between two calibrations (a session).
const SESSION_DECISIONS: usize = 40;
/// One decision in this many is a clearly better change that moves the trunk.
const MOVE_EVERY: usize = 4;

impl SimConfig {
    /// The configuration behind SIMULATION.md, with `trials` per cell, at seed correlation `rho`.
    pub fn standard(trials: usize) -> Self {
        Self::at_rho(trials, DEFAULT_TARGET_RHO)
    }

    pub fn at_rho(trials: usize, rho: f64) -> Self {
        SimConfig {
            trials,
            effects: vec![0.0, -1.0, 1.0, 1.5, 2.0, 3.0],
            metric_effects: vec![GAIN_OF_INTEREST],
            scenarios: vec![
                Scenario {
                    noise: NoiseFamily::Normal,
                    crash_probability: 0.0,
                },
                Scenario {
                    noise: NoiseFamily::StudentT3,
                    crash_probability: 0.0,
                },
                Scenario {
                    noise: NoiseFamily::Normal,
                    crash_probability: 0.02,
                },
                Scenario {
                    noise: NoiseFamily::StudentT3,
                    crash_probability: 0.02,
                },
            ],
            rho,
            run_sd: DEFAULT_TARGET_RUN_SD,
            trunk_moves: true,
            deterministic: rho >= DEFAULT_TARGET_RHO,
            seed: 20_260_501,
        }
    }

    /// Sd of a paired difference in the metric's units.
    pub fn paired_sd(&self) -> f64 {
        self.run_sd * (2.0 * (1.0 - self.rho.clamp(0.0, 1.0))).sqrt()
    }
}

/// Results of one (scenario, effect) cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimRow {
    pub scenario: Scenario,
    pub effect_paired_sd: f64,
    /// The same effect in the metric's units.
    pub effect_metric: f64,
    pub trials: usize,
    pub accepts: usize,
    pub crashes: usize,
    pub screen_rejects: usize,
    pub accept_rate: f64,
    /// One-sided 95% Clopper-Pearson upper bound of the accept rate.
    pub accept_upper95: f64,
    /// Accepts among decisions that did not end in a crash (the rule's power when crashes are
    /// random and unrelated to the change).
    pub accept_rate_without_crashes: f64,
    /// Training runs per decision (crashed runs, retries and lazy trunk fills included).
    pub runs_per_decision: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    pub config: SimConfig,
    pub rule: DecisionRule,
    /// The rule's per-decision false-accept bound (alpha).
    pub alpha: f64,
    pub rows: Vec<SimRow>,
}

/// The smallest effect, in paired sd, at which the report checks power >= 0.8: below it no
/// rule that drops a null change after about two runs can keep 80% of real gains
/// (guardrails/SIMULATION.md has the numbers).
pub const POWER_CHECKED_FROM_PAIRED_SD: f64 = 1.1;

/// Runs every (scenario, effect) cell of `config` under `rule`.
pub fn run(config: &SimConfig, rule: &DecisionRule) -> SimReport {
    let mut rows = Vec::new();
    let sd = config.paired_sd();
    let effects: Vec<f64> = config
        .effects
        .iter()
        .copied()
        .chain(config.metric_effects.iter().map(|m| m / sd))
        .collect();
    for (si, scenario) in config.scenarios.iter().enumerate() {
        for (ei, &effect) in effects.iter().enumerate() {
            // Each cell has its own stream, so adding a cell does not change the others.
            let stream =
                config.seed ^ ((si as u64) << 32 | ei as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut rng = ChaCha8Rng::seed_from_u64(stream);
            rows.push(run_cell(config, rule, *scenario, effect, &mut rng));
        }
    }
    SimReport {
        config: config.clone(),
        rule: rule.clone(),
        alpha: rule.false_accept_bound(),
        rows,
    }
}

struct Noise {
    family: NoiseFamily,
    seed_sd: f64,
    run_sd: f64,
}

impl Noise {
    fn draw(&self, rng: &mut ChaCha8Rng) -> f64 {
        match self.family {
            NoiseFamily::Normal => standard_normal(rng),
            NoiseFamily::StudentT3 => {
                // t(3) = Z / sqrt(chi2(3) / 3), variance 3: divide by sqrt(3) for unit variance.
                let z = standard_normal(rng);
                let chi2: f64 = (0..3).map(|_| standard_normal(rng).powi(2)).sum();
                z / (chi2 / 3.0).sqrt() / 3f64.sqrt()
            }
        }
    }
    fn seed_effect(&self, rng: &mut ChaCha8Rng) -> f64 {
        self.seed_sd * self.draw(rng)
    }
    fn run(&self, rng: &mut ChaCha8Rng) -> f64 {
        self.run_sd * self.draw(rng)
    }
}

fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller; 1 - u keeps the logarithm finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Starting level of the simulated metric (like the default target's val_bpb).
const BASE: f64 = 3.7;

/// The simulated trunk: its level, its common seeds' effects, calibration and cached runs.
struct Trunk {
    level: f64,
    seed_effects: Vec<f64>,
    calibration: Calibration,
    cached: Vec<(u64, f64)>,
    merges_since_calibration: usize,
}

/// One simulated session's world: the rule, the noise and the chance of a crash.
struct World<'a> {
    rule: &'a DecisionRule,
    noise: Noise,
    crash_probability: f64,
    /// Same code and seed give the same value (the default CPU trainer): replays add nothing.
    deterministic: bool,
}

impl World<'_> {
    fn crashed(&self, rng: &mut ChaCha8Rng) -> bool {
        rng.random::<f64>() < self.crash_probability
    }

    /// A run that must succeed (a trunk run): retried on the same seed; returns (value, tries).
    fn trunk_run(&self, level: f64, seed_effect: f64, rng: &mut ChaCha8Rng) -> (f64, usize) {
        let mut tries = 0;
        loop {
            tries += 1;
            let v = level + seed_effect + self.noise.run(rng);
            if !self.crashed(rng) {
                return (v, tries);
            }
        }
    }

    fn candidate_run(&self, level: f64, seed_effect: f64, rng: &mut ChaCha8Rng) -> RunValue {
        let v = level + seed_effect + self.noise.run(rng);
        if self.crashed(rng) {
            RunValue::Crashed
        } else {
            RunValue::Ok(v)
        }
    }

    /// A new session's trunk: common seeds and calibration (baseline seeds plus replays).
    fn new_trunk(&self, rng: &mut ChaCha8Rng) -> Trunk {
        let seeds = self.rule.min_baseline_seeds.max(2);
        let seed_effects: Vec<f64> = (0..seeds).map(|_| self.noise.seed_effect(rng)).collect();
        let mut trunk = Trunk {
            level: BASE,
            seed_effects,
            calibration: Calibration {
                baseline: Vec::new(),
                replays: Vec::new(),
                n_seeds: 0,
                baseline_mean: BASE,
                run_sd: 0.0,
                nondeterminism_sd: 0.0,
                paired_null_sd: 0.0,
            },
            cached: Vec::new(),
            merges_since_calibration: 0,
        };
        self.calibrate(&mut trunk, rng);
        trunk
    }

    /// Calibration as the loop runs it (not counted in runs per decision: it is amortized over
    /// a session). Its baseline runs are the trunk's cached runs on the common seeds.
    fn calibrate(&self, trunk: &mut Trunk, rng: &mut ChaCha8Rng) {
        let seeds = trunk.seed_effects.len();
        let run = |s: usize, rng: &mut ChaCha8Rng| {
            trunk.level + trunk.seed_effects[s % seeds] + self.noise.run(rng)
        };
        let baseline: Vec<(u64, f64)> = (0..seeds).map(|s| (s as u64, run(s, rng))).collect();
        let replays: Vec<(u64, Vec<f64>)> = (0..self.rule.min_replays.max(1))
            .map(|s| {
                let v = if self.deterministic {
                    baseline[s % seeds].1
                } else {
                    run(s, rng)
                };
                ((s % seeds) as u64, vec![v])
            })
            .collect();
        trunk.calibration = Calibration::from_runs_for(self.rule, &baseline, &replays)
            .expect("simulated calibration is valid");
        trunk.cached = baseline;
        trunk.merges_since_calibration = 0;
    }

    /// One decision on a change with true gain `gain` against `trunk`; merges it if accepted.
    /// Returns the decision and the training runs it cost (retries included).
    fn decide(&self, trunk: &mut Trunk, gain: f64, rng: &mut ChaCha8Rng) -> (Decision, usize) {
        let rule = self.rule.clone();
        let calibration = trunk.calibration.clone();
        let mut process = if rule.is_v3() {
            let common = CommonControl {
                seeds: (0..trunk.seed_effects.len() as u64).collect(),
                cached: trunk.cached.clone(),
            };
            DecisionProcess::with_common_control(rule, calibration, common)
        } else {
            DecisionProcess::new(rule, calibration)
        }
        .expect("the rule was validated by the caller");
        let candidate_level = trunk.level - gain;
        let mut retries = 0;
        let decision = loop {
            let arm = match process.next_request() {
                Request::Done(d) => break d.clone(),
                Request::NeedRuns { arm, .. } => arm,
            };
            let observation = match arm {
                Arm::Candidate => {
                    let seed = self.noise.seed_effect(rng);
                    Observation::Candidate(self.candidate_run(candidate_level, seed, rng))
                }
                Arm::Common { seed, with_trunk } => {
                    let a = trunk.seed_effects[seed as usize];
                    let filled = with_trunk.then(|| {
                        let (v, tries) = self.trunk_run(trunk.level, a, rng);
                        retries += tries - 1;
                        RunValue::Ok(v)
                    });
                    Observation::Common {
                        seed,
                        trunk: filled,
                        candidate: self.candidate_run(candidate_level, a, rng),
                    }
                }
                Arm::Paired => {
                    let a = self.noise.seed_effect(rng);
                    // A crashed baseline run is retried on the same seed (the loop's contract).
                    let (baseline, tries) = self.trunk_run(trunk.level, a, rng);
                    retries += tries - 1;
                    Observation::Pair {
                        baseline: RunValue::Ok(baseline),
                        candidate: self.candidate_run(candidate_level, a, rng),
                    }
                }
            };
            process
                .add_result(observation)
                .expect("simulated observations are valid");
        };
        // Filled trunk runs are kept, as the loop records them.
        trunk.cached.extend(decision.trunk_fills());
        if decision.verdict == Verdict::Accept {
            trunk.level -= gain;
            trunk.merges_since_calibration += 1;
            if self
                .rule
                .needs_recalibration(trunk.merges_since_calibration)
            {
                self.calibrate(trunk, rng);
            } else if self.rule.is_v3() {
                // The merged change's screening runs are the new trunk's cached runs.
                trunk.cached = decision.common_runs();
            }
        }
        let runs = decision.runs + retries;
        (decision, runs)
    }
}

fn run_cell(
    config: &SimConfig,
    rule: &DecisionRule,
    scenario: Scenario,
    effect: f64,
    rng: &mut ChaCha8Rng,
) -> SimRow {
    let rho = config.rho.clamp(0.0, 1.0);
    let world = World {
        rule,
        noise: Noise {
            family: scenario.noise,
            seed_sd: config.run_sd * rho.sqrt(),
            run_sd: config.run_sd * (1.0 - rho).sqrt(),
        },
        crash_probability: scenario.crash_probability,
        deterministic: config.deterministic,
    };
    let paired_sd = config.paired_sd();
    let gain = effect * paired_sd;
    // A clearly better change: a merge like the (several run sd on the default target).
    let mover_gain = config.run_sd.max(3.0 * paired_sd);
    let (mut accepts, mut crashes, mut screen_rejects, mut runs) = (0, 0, 0, 0usize);
    let mut trunk = world.new_trunk(rng);
    for trial in 0..config.trials {
        if trial > 0 && trial % SESSION_DECISIONS == 0 {
            trunk = world.new_trunk(rng);
        }
        if config.trunk_moves && trial % MOVE_EVERY == MOVE_EVERY - 1 {
            world.decide(&mut trunk, mover_gain, rng);
        }
        let (decision, cost) = world.decide(&mut trunk, gain, rng);
        runs += cost;
        match decision.verdict {
            Verdict::Accept => accepts += 1,
            Verdict::Crash => crashes += 1,
            Verdict::Reject => {
                if decision.stages.is_empty() {
                    screen_rejects += 1
                }
            }
        }
    }
    let trials = config.trials.max(1);
    SimRow {
        scenario,
        effect_paired_sd: effect,
        effect_metric: gain,
        trials: config.trials,
        accepts,
        crashes,
        screen_rejects,
        accept_rate: accepts as f64 / trials as f64,
        accept_upper95: clopper_pearson_upper(accepts, config.trials, 0.95),
        accept_rate_without_crashes: accepts as f64 / (config.trials - crashes).max(1) as f64,
        runs_per_decision: runs as f64 / trials as f64,
    }
}

mod session;
mod session_table;
mod table;

pub use session::*;
pub use table::*;
