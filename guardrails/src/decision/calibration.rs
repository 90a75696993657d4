//! The calibrated noise of the trunk.

use super::*;

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
        if baseline.len() < rule.min_baseline_seeds.max(rule.least_calibration_seeds()) {
            return Err(DecisionError::TooFewBaselineSeeds {
                needed: rule.min_baseline_seeds.max(rule.least_calibration_seeds()),
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
