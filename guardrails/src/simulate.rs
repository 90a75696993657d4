//! The proof of the decision rule: replay the exact [`DecisionProcess`] the loop uses on
//! synthetic noise and count false accepts, power and training runs per decision.
//!
//! Noise model (per training run, metric in units of the run-to-run sd sigma_r = 1):
//! value = base - gain(arm) + a_seed + e_run, with a_seed shared by both arms on the same seed
//! (variance rho) and e_run independent per run (variance 1 - rho). So the run-to-run sd is 1
//! and the paired-difference sd is sqrt(2 (1 - rho)). Effects are given in paired sd, as the
//! issue states them. For Student t noise both parts are t(3) scaled to the same variances.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::decision::{Calibration, DecisionRule, ScreenRule};
use crate::process::{Arm, DecisionProcess, Observation, Request, RunValue, Verdict};
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
    pub scenarios: Vec<Scenario>,
    /// Share of run-to-run variance from the seed (shared by both arms on a seed).
    pub rho: f64,
    pub seed: u64,
}

impl SimConfig {
    /// The configuration behind SIMULATION.md, with `trials` per cell.
    pub fn standard(trials: usize) -> Self {
        SimConfig {
            trials,
            effects: vec![0.0, 1.0, 1.5, 2.0],
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
            rho: 0.5,
            seed: 20_260_501,
        }
    }
}

/// Results of one (scenario, effect) cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimRow {
    pub scenario: Scenario,
    pub effect_paired_sd: f64,
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
    /// Training runs per decision (crashed runs and baseline retries included).
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

/// Runs every (scenario, effect) cell of `config` under `rule`.
pub fn run(config: &SimConfig, rule: &DecisionRule) -> SimReport {
    let mut rows = Vec::new();
    for (si, scenario) in config.scenarios.iter().enumerate() {
        for (ei, &effect) in config.effects.iter().enumerate() {
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

/// Baseline level of the simulated metric (like a val_bpb); results do not depend on it.
const BASE: f64 = 1.5;

fn run_cell(
    config: &SimConfig,
    rule: &DecisionRule,
    scenario: Scenario,
    effect: f64,
    rng: &mut ChaCha8Rng,
) -> SimRow {
    let rho = config.rho.clamp(0.0, 1.0);
    let noise = Noise {
        family: scenario.noise,
        seed_sd: rho.sqrt(),
        run_sd: (1.0 - rho).sqrt(),
    };
    let gain = effect * (2.0 * (1.0 - rho)).sqrt();
    let (mut accepts, mut crashes, mut screen_rejects, mut runs) = (0, 0, 0, 0usize);
    for _ in 0..config.trials {
        let calibration = calibrate(rule, &noise, rng);
        let mut process = DecisionProcess::new(rule.clone(), calibration)
            .expect("the rule was validated by the caller");
        let mut retries = 0;
        let crashed = |rng: &mut ChaCha8Rng| rng.random::<f64>() < scenario.crash_probability;
        let decision = loop {
            let (arm, count) = match process.next_request() {
                Request::Done(d) => break d.clone(),
                Request::NeedRuns { arm, count } => (arm, count),
            };
            let observation = match arm {
                Arm::Candidate => {
                    let v = BASE - gain + noise.seed_effect(rng) + noise.run(rng);
                    Observation::Candidate(if crashed(rng) {
                        RunValue::Crashed
                    } else {
                        RunValue::Ok(v)
                    })
                }
                Arm::Paired => {
                    let _ = count;
                    let seed = noise.seed_effect(rng);
                    // A crashed baseline run is retried on the same seed (the loop's contract).
                    let baseline = loop {
                        let v = BASE + seed + noise.run(rng);
                        if !crashed(rng) {
                            break v;
                        }
                        retries += 1;
                    };
                    let c = BASE - gain + seed + noise.run(rng);
                    Observation::Pair {
                        baseline: RunValue::Ok(baseline),
                        candidate: if crashed(rng) {
                            RunValue::Crashed
                        } else {
                            RunValue::Ok(c)
                        },
                    }
                }
            };
            process
                .add_result(observation)
                .expect("simulated observations are valid");
        };
        runs += decision.runs + retries;
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

/// The screen in words, for the table's header.
pub fn describe_screen(rule: &DecisionRule) -> String {
    match (&rule.screen, rule.screen_enabled) {
        (_, false) => "no screen".into(),
        (ScreenRule::Single, true) => format!(
            "one screening run, rejected below {} run sd",
            rule.screen_reject_below_sd
        ),
        (
            ScreenRule::Sequential {
                effect_sd,
                alpha,
                beta,
                max_runs,
            },
            true,
        ) => format!(
            "sequential screen (SPRT, H1 = {effect_sd} run sd, alpha {alpha}, beta {beta}, at most {max_runs} runs)"
        ),
    }
}

/// A session's calibration on the simulated noise (baseline seeds plus same-seed replays).
fn calibrate(rule: &DecisionRule, noise: &Noise, rng: &mut ChaCha8Rng) -> Calibration {
    let seeds = rule.min_baseline_seeds.max(2);
    let effects: Vec<f64> = (0..seeds).map(|_| noise.seed_effect(rng)).collect();
    let baseline: Vec<(u64, f64)> = effects
        .iter()
        .enumerate()
        .map(|(s, a)| (s as u64, BASE + a + noise.run(rng)))
        .collect();
    let replays: Vec<(u64, Vec<f64>)> = (0..rule.min_replays.max(1))
        .map(|s| (s as u64, vec![BASE + effects[s % seeds] + noise.run(rng)]))
        .collect();
    Calibration::from_runs_for(rule, &baseline, &replays).expect("simulated calibration is valid")
}

impl SimReport {
    /// Null rows: the false-accept rate is within alpha and its upper bound within 2 alpha.
    pub fn false_accept_ok(&self) -> bool {
        self.false_accept_within(self.alpha)
    }

    /// Null rows: the false-accept rate is within `alpha` and its upper bound within 2 `alpha`.
    pub fn false_accept_within(&self, alpha: f64) -> bool {
        self.rows
            .iter()
            .filter(|r| r.effect_paired_sd == 0.0)
            .all(|r| r.accept_rate <= alpha && r.accept_upper95 <= 2.0 * alpha)
    }

    /// Power at `effect` for every scenario: the accept rate among decisions that did not
    /// crash (random crashes end a decision as a crash, whatever the rule).
    pub fn power_at(&self, effect: f64) -> Vec<(Scenario, f64)> {
        self.rows
            .iter()
            .filter(|r| (r.effect_paired_sd - effect).abs() < 1e-12)
            .map(|r| (r.scenario, r.accept_rate_without_crashes))
            .collect()
    }

    /// Markdown table of every cell.
    pub fn render_table(&self) -> String {
        let mut out = format!(
            "Rule `{}`: {}; stages {}; min effect {} run sd; \
             alpha (product of stage thresholds) = {}. rho = {}, {} trials per row, seed {}.\n\n",
            self.rule.rule_version,
            describe_screen(&self.rule),
            self.rule
                .stages
                .iter()
                .map(|s| format!("{} pairs @ p < {}", s.pairs, s.p_threshold))
                .collect::<Vec<_>>()
                .join(", "),
            self.rule.min_effect_sd,
            self.alpha,
            self.config.rho,
            self.config.trials,
            self.config.seed,
        );
        out.push_str(
            "| noise | crash p | effect (paired sd) | accept rate | 95% upper | accept w/o crashes | screen rejects | crash decisions | runs / decision | check |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let check = if r.effect_paired_sd == 0.0 {
                if r.accept_rate <= self.alpha && r.accept_upper95 <= 2.0 * self.alpha {
                    "false accepts <= alpha, bound <= 2 alpha: ok"
                } else {
                    "FALSE ACCEPTS TOO HIGH"
                }
            } else if (r.effect_paired_sd - 1.5).abs() < 1e-12 {
                if r.accept_rate_without_crashes >= 0.8 {
                    "power >= 0.8: ok"
                } else {
                    "POWER BELOW 0.8"
                }
            } else {
                ""
            };
            out.push_str(&format!(
                "| {} | {} | {} | {:.4} | {:.4} | {:.4} | {:.3} | {:.3} | {:.2} | {} |\n",
                r.scenario.noise.label(),
                r.scenario.crash_probability,
                r.effect_paired_sd,
                r.accept_rate,
                r.accept_upper95,
                r.accept_rate_without_crashes,
                r.screen_rejects as f64 / r.trials.max(1) as f64,
                r.crashes as f64 / r.trials.max(1) as f64,
                r.runs_per_decision,
                check
            ));
        }
        out
    }
}
