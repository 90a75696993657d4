//! Whole sessions under a fixed budget of training runs: how much true gain each rule merges,
//! how many of its merges are false or harmful, and how much its own measurements overstate
//! what it merged. The rules are driven through the same [`DecisionProcess`] the loop uses.
//!
//! The world, per session:
//! - proposals come from an [`EffectMix`]: a true effect (gain, positive helps) that is 0 for
//!   most, negative for some, positive for a few, with heavy-tailed sizes. The same stream of
//!   proposals is offered to every rule (its own random stream), so rules differ only in
//!   what they do with it;
//! - a run of code `k` on seed `s` on the validation set gives
//!   `level_val(k) + a_s + e_(k,s)`: `a_s` is the seed's effect, shared by every program run on
//!   that seed (variance `rho run_sd^2`), `e` the per-(program, seed) residual (variance
//!   `(1 - rho) run_sd^2`), so a same-seed pair differs by sd `run_sd sqrt(2 (1 - rho))`;
//! - a change's effect on the validation set is its true effect plus `u`, a per-(change,
//!   validation set) term with sd `val_sd`: what the change does to these particular held-out
//!   documents beyond what it does in general. A rule that keeps what looked best on one val
//!   set selects on `u` as well as on the seeds' noise; the true final quality (on fresh seeds
//!   and a second, holdout set) is the sum of the merged changes' true effects;
//! - a change that does something (true effect not 0) also interacts with the seed: on seed `s`
//!   it adds `i_(c,s)`, sd `sigma_c`, drawn per change as `interaction_sd` times an Exp(1) (some
//!   changes barely depend on the seed, some a lot). Measured on the default target: same-seed
//!   pairs of the 27 changes merged in the 2026-11-29 head-to-head had sd 0.0002-0.049 on
//!   holdout, median 0.011, where beta2 alone (the calibration of `rho`) gave 0.0018. A rule
//!   that tests on one seed keeps changes that happen to suit that seed. Once merged, the
//!   change's terms belong to the trunk on every seed. Null changes (effect 0: a comment, a
//!   rename) have none;
//! - the trunk moves as in the loop: calibration measures it (v3: 10 common seeds and 3
//!   replays; greedy: one run on its fixed seed), and when a change is merged its runs on the
//!   trunk's seeds become the trunk's recorded runs (missing ones are filled lazily by the next
//!   screen). Every run, calibration included, is paid from the session's budget.
//!
//! Not modelled: holdout audits and their rollbacks (rule v3 runs one every 5 merges), crashes,
//! changes that interact, and proposers that learn from history.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::standard_normal;
use crate::decision::{Calibration, DecisionRule};
use crate::process::{
    Arm, CommonControl, Decision, DecisionProcess, Observation, Request, RunValue, Verdict,
};

/// Shape of the effect sizes' tail.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tail {
    /// |Laplace|: exponential sizes with mean `scale`.
    Laplace,
    /// |Student t(3)| times `scale`: rarer but much larger outliers.
    StudentT3,
}

/// The distribution of proposals' true effects (in the metric's units; gain > 0 helps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectMix {
    pub name: String,
    /// Share of proposals with no true effect (they still change training: new residuals).
    pub null: f64,
    /// Share that hurt; the rest help.
    pub harmful: f64,
    pub harmful_scale: f64,
    pub helpful_scale: f64,
    pub tail: Tail,
}

impl EffectMix {
    /// The named mixes README.md shows (`agentloop simulate --session --mix NAME`).
    pub fn preset(name: &str) -> Option<EffectMix> {
        let mix = |null, harmful, harmful_scale, helpful_scale, tail| EffectMix {
            name: name.to_string(),
            null,
            harmful,
            harmful_scale,
            helpful_scale,
            tail,
        };
        Some(match name {
            // The quick simulation: half null, 30% harmful, 20% helpful.
            "issue" => mix(0.5, 0.3, 0.005, 0.002, Tail::Laplace),
            // What an agent mostly proposes: 70% null, 20% harmful, 10% helpful.
            "mostly-null" => mix(0.7, 0.2, 0.005, 0.002, Tail::Laplace),
            // Helpful changes are small (mean 0.0007 bpb, below one paired sd of 0.0018).
            "small-wins" => mix(0.5, 0.2, 0.005, 0.0007, Tail::Laplace),
            // The shares with Student t(3) sizes: rare large wins and large harms.
            "heavy-tail" => mix(0.5, 0.3, 0.004, 0.0015, Tail::StudentT3),
            _ => return None,
        })
    }

    pub const PRESETS: [&'static str; 4] = ["issue", "mostly-null", "small-wins", "heavy-tail"];

    fn draw(&self, rng: &mut ChaCha8Rng) -> f64 {
        let u: f64 = rng.random();
        let size = |scale: f64, rng: &mut ChaCha8Rng| match self.tail {
            Tail::Laplace => -scale * (1.0 - rng.random::<f64>()).ln(),
            Tail::StudentT3 => {
                let z = standard_normal(rng);
                let chi2: f64 = (0..3).map(|_| standard_normal(rng).powi(2)).sum();
                scale * (z / (chi2 / 3.0).sqrt()).abs()
            }
        };
        if u < self.null {
            0.0
        } else if u < self.null + self.harmful {
            -size(self.harmful_scale, rng)
        } else {
            size(self.helpful_scale, rng)
        }
    }

    pub fn describe(&self) -> String {
        let tail = match self.tail {
            Tail::Laplace => "Laplace (exponential) sizes",
            Tail::StudentT3 => "|Student t(3)| sizes",
        };
        format!(
            "{}: {:.0}% null, {:.0}% harmful (scale {}), {:.0}% helpful (scale {}), {tail}",
            self.name,
            self.null * 100.0,
            self.harmful * 100.0,
            self.harmful_scale,
            (1.0 - self.null - self.harmful) * 100.0,
            self.helpful_scale
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSimConfig {
    pub sessions: usize,
    /// Training runs per session, calibration included.
    pub budget_runs: usize,
    pub run_sd: f64,
    pub rho: f64,
    /// Sd of a change's validation-set-specific effect (the per-(change, val set) term).
    pub val_sd: f64,
    /// Mean over changes of the sd of their per-(change, seed) effect (0: every change shifts
    /// every seed alike, the model before 2026-11-29's measurement).
    #[serde(default)]
    pub interaction_sd: f64,
    /// A merge whose true effect is below minus this is counted as harmful.
    pub harm_threshold: f64,
    pub mix: EffectMix,
    pub seed: u64,
}

impl SessionSimConfig {
    /// The default target's noise (run sd 0.020, paired sd 0.0018), 500 runs per session.
    pub fn default_target(sessions: usize, mix: EffectMix) -> SessionSimConfig {
        SessionSimConfig {
            sessions,
            budget_runs: 500,
            run_sd: super::DEFAULT_TARGET_RUN_SD,
            rho: super::DEFAULT_TARGET_RHO,
            // A change's effect on 32,768 particular validation tokens differs from its effect
            // in general by its per-token spread / sqrt(tokens): ~0.05 bits / 181 = 0.0003.
            val_sd: 0.0003,
            // Median same-seed pair sd of the changes merged in the real head-to-head
            // (README.md); the Exp(1) spread around it covers their 0.0002-0.049.
            interaction_sd: 0.01,
            harm_threshold: 0.0005,
            mix,
            seed: 20_261_129,
        }
    }
}

/// One rule over all sessions (means per session unless said otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    pub rule_version: String,
    pub decisions: f64,
    pub runs_per_decision: f64,
    pub merges: f64,
    /// Merges with a true effect <= 0.
    pub false_merges: f64,
    /// Merges with a true effect below -harm_threshold.
    pub harmful_merges: f64,
    /// The merged changes' gains as the rule measured them (its decision's mean gain).
    pub measured_gain: f64,
    /// The part of `measured_gain` claimed by false merges (their true sum is <= 0).
    pub false_claimed: f64,
    /// The merged changes' effects on the validation set (true + val-set term), fresh seeds.
    pub val_gain: f64,
    /// The sum of the merged changes' true effects (fresh seeds, holdout set).
    pub true_gain: f64,
    /// Share of sessions whose true gain is negative (ended worse than they began).
    pub sessions_worse: f64,
}

impl SessionRow {
    pub fn true_gain_per_1000_runs(&self) -> f64 {
        self.true_gain / (self.decisions * self.runs_per_decision).max(1.0) * 1000.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionReport {
    pub config: SessionSimConfig,
    pub rows: Vec<SessionRow>,
}

/// Runs `config.sessions` sessions under each rule (the same proposals for every rule).
pub fn run_sessions(config: &SessionSimConfig, rules: &[DecisionRule]) -> SessionReport {
    let rows = rules
        .iter()
        .enumerate()
        .map(|(ri, rule)| {
            rule.validate().expect("a valid rule");
            let mut sum = Totals::default();
            for s in 0..config.sessions as u64 {
                let stream = config.seed ^ s.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let proposals = ChaCha8Rng::seed_from_u64(stream);
                let noise = ChaCha8Rng::seed_from_u64(stream ^ (0xA5A5 + ri as u64) << 40);
                sum.add(&Session::new(config, rule, proposals, noise).run());
            }
            sum.row(rule, config.sessions)
        })
        .collect();
    SessionReport {
        config: config.clone(),
        rows,
    }
}

#[derive(Default)]
struct Totals {
    decisions: usize,
    runs: usize,
    merges: usize,
    false_merges: usize,
    harmful_merges: usize,
    measured_gain: f64,
    false_claimed: f64,
    val_gain: f64,
    true_gain: f64,
    worse: usize,
}

impl Totals {
    fn add(&mut self, t: &Totals) {
        self.decisions += t.decisions;
        self.runs += t.runs;
        self.merges += t.merges;
        self.false_merges += t.false_merges;
        self.harmful_merges += t.harmful_merges;
        self.measured_gain += t.measured_gain;
        self.false_claimed += t.false_claimed;
        self.val_gain += t.val_gain;
        self.true_gain += t.true_gain;
        self.worse += usize::from(t.true_gain < 0.0);
    }

    fn row(&self, rule: &DecisionRule, sessions: usize) -> SessionRow {
        let n = sessions.max(1) as f64;
        SessionRow {
            rule_version: rule.rule_version.clone(),
            decisions: self.decisions as f64 / n,
            runs_per_decision: self.runs as f64 / self.decisions.max(1) as f64,
            merges: self.merges as f64 / n,
            false_merges: self.false_merges as f64 / n,
            harmful_merges: self.harmful_merges as f64 / n,
            measured_gain: self.measured_gain / n,
            false_claimed: self.false_claimed / n,
            val_gain: self.val_gain / n,
            true_gain: self.true_gain / n,
            sessions_worse: self.worse as f64 / n,
        }
    }
}

/// One session of one rule.
struct Session<'a> {
    config: &'a SessionSimConfig,
    rule: &'a DecisionRule,
    proposals: ChaCha8Rng,
    noise: ChaCha8Rng,
    seed_sd: f64,
    residual_sd: f64,
    /// The trunk's mean on the validation set.
    val_level: f64,
    /// Common seeds (id, shared seed effect), calibration and the trunk's recorded runs.
    seeds: Vec<(u64, f64)>,
    calibration: Option<Calibration>,
    cached: Vec<(u64, f64)>,
    merges_since_calibration: usize,
    totals: Totals,
}

impl<'a> Session<'a> {
    fn new(
        config: &'a SessionSimConfig,
        rule: &'a DecisionRule,
        proposals: ChaCha8Rng,
        noise: ChaCha8Rng,
    ) -> Self {
        let rho = config.rho.clamp(0.0, 1.0);
        Session {
            config,
            rule,
            proposals,
            noise,
            seed_sd: config.run_sd * rho.sqrt(),
            residual_sd: config.run_sd * (1.0 - rho).sqrt(),
            val_level: 3.7,
            seeds: Vec::new(),
            calibration: None,
            cached: Vec::new(),
            merges_since_calibration: 0,
            totals: Totals::default(),
        }
    }

    fn run(mut self) -> Totals {
        self.calibrate();
        while self.totals.runs < self.config.budget_runs {
            let effect = self.config.mix.draw(&mut self.proposals);
            let val_term = self.config.val_sd * standard_normal(&mut self.proposals);
            // Drawn for every proposal, so every rule sees the same stream.
            let spread = self.config.interaction_sd * exponential(&mut self.proposals);
            let interaction_sd = if effect == 0.0 { 0.0 } else { spread };
            self.decide(effect, val_term, interaction_sd);
        }
        self.totals
    }

    /// A run of a program whose validation-set mean is `level`, on a seed with effect `a`.
    fn run_value(&mut self, level: f64, a: f64) -> f64 {
        self.totals.runs += 1;
        level + a + self.residual_sd * standard_normal(&mut self.noise)
    }

    fn fresh_seed_effect(&mut self) -> f64 {
        self.seed_sd * standard_normal(&mut self.noise)
    }

    /// As the loop calibrates: the rule's baseline seeds (greedy: its fixed seed) and its
    /// same-seed replays, which give the same value on a deterministic trainer.
    fn calibrate(&mut self) {
        let n = self
            .rule
            .min_baseline_seeds
            .max(self.rule.least_calibration_seeds());
        self.seeds = (0..n as u64)
            .map(|i| {
                let id = match (self.rule.fixed_seed, i) {
                    (Some(fixed), 0) => fixed,
                    _ => 1000 + i,
                };
                (id, self.fresh_seed_effect())
            })
            .collect();
        let level = self.val_level;
        let baseline: Vec<(u64, f64)> = self
            .seeds
            .clone()
            .into_iter()
            .map(|(id, a)| (id, self.run_value(level, a)))
            .collect();
        let replays: Vec<(u64, Vec<f64>)> = (0..self.rule.min_replays)
            .map(|i| {
                self.totals.runs += 1;
                let (id, v) = baseline[i % baseline.len()];
                (id, vec![v])
            })
            .collect();
        self.calibration = Some(
            Calibration::from_runs_for(self.rule, &baseline, &replays)
                .expect("simulated calibration is valid"),
        );
        self.cached = baseline;
        self.merges_since_calibration = 0;
    }

    fn seed_effect(&self, id: u64) -> f64 {
        self.seeds
            .iter()
            .find(|(s, _)| *s == id)
            .map(|(_, a)| *a)
            .expect("a common seed")
    }

    /// One decision on a change with true effect `effect`, val-set term `val_term` and
    /// per-seed effects of sd `interaction_sd`.
    fn decide(&mut self, effect: f64, val_term: f64, interaction_sd: f64) {
        // The change's effect on each common seed it ran on (the others are drawn at a merge).
        let mut on_seed: Vec<(u64, f64)> = Vec::new();
        let common = CommonControl {
            seeds: self.seeds.iter().map(|(s, _)| *s).collect(),
            cached: self.cached.clone(),
        };
        let calibration = self.calibration.clone().expect("calibrated");
        let mut process = if self.rule.uses_common_control() {
            DecisionProcess::with_common_control(self.rule.clone(), calibration, common)
        } else {
            DecisionProcess::new(self.rule.clone(), calibration)
        }
        .expect("the rule was validated");
        let trunk = self.val_level;
        let candidate = trunk - effect - val_term;
        let decision = loop {
            let arm = match process.next_request() {
                Request::Done(d) => break d.clone(),
                Request::NeedRuns { arm, .. } => arm,
            };
            let observation = match arm {
                Arm::Candidate => {
                    let a = self.fresh_seed_effect();
                    let i = interaction_sd * standard_normal(&mut self.noise);
                    Observation::Candidate(RunValue::Ok(self.run_value(candidate + i, a)))
                }
                Arm::Common { seed, with_trunk } => {
                    let a = self.seed_effect(seed);
                    let i = interaction_sd * standard_normal(&mut self.noise);
                    on_seed.push((seed, i));
                    let filled = with_trunk.then(|| RunValue::Ok(self.run_value(trunk, a)));
                    Observation::Common {
                        seed,
                        trunk: filled,
                        candidate: RunValue::Ok(self.run_value(candidate + i, a)),
                    }
                }
                Arm::Paired => {
                    let a = self.fresh_seed_effect();
                    let i = interaction_sd * standard_normal(&mut self.noise);
                    Observation::Pair {
                        baseline: RunValue::Ok(self.run_value(trunk, a)),
                        candidate: RunValue::Ok(self.run_value(candidate + i, a)),
                    }
                }
            };
            process
                .add_result(observation)
                .expect("simulated observations are valid");
        };
        self.totals.decisions += 1;
        self.cached.extend(decision.trunk_fills());
        if decision.verdict == Verdict::Accept {
            // From now on the trunk carries the change's effect on each common seed.
            for k in 0..self.seeds.len() {
                let id = self.seeds[k].0;
                let i = match on_seed.iter().find(|(s, _)| *s == id) {
                    Some((_, i)) => *i,
                    None => interaction_sd * standard_normal(&mut self.noise),
                };
                self.seeds[k].1 += i;
            }
            self.merge(&decision, effect, val_term, candidate);
        }
    }

    fn merge(&mut self, decision: &Decision, effect: f64, val_term: f64, candidate: f64) {
        let t = &mut self.totals;
        t.merges += 1;
        t.false_merges += usize::from(effect <= 0.0);
        t.harmful_merges += usize::from(effect < -self.config.harm_threshold);
        let claimed = measured_gain(decision);
        t.measured_gain += claimed;
        if effect <= 0.0 {
            t.false_claimed += claimed;
        }
        t.val_gain += effect + val_term;
        t.true_gain += effect;
        self.val_level = candidate;
        self.merges_since_calibration += 1;
        if self.rule.needs_recalibration(self.merges_since_calibration) {
            self.calibrate();
        } else {
            // The merged change's runs on the trunk's seeds are the new trunk's recorded runs.
            self.cached = decision.common_runs();
        }
    }
}

/// Exp(1), by inversion.
fn exponential(rng: &mut ChaCha8Rng) -> f64 {
    -(1.0 - rng.random::<f64>()).ln()
}

/// The gain a decision claimed: its last confirmation look's mean, else its screen's.
fn measured_gain(d: &Decision) -> f64 {
    d.stages
        .last()
        .map(|s| s.test.mean)
        .or(d.screen.as_ref().map(|s| s.gain))
        .unwrap_or(0.0)
}
