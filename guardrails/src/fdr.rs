//! Error control across a session: LORD++ online FDR and the expected number of false merges.
//!
//! LORD++ (Ramdas, Yang, Wainwright, Jordan 2017, "Online control of the false discovery rate
//! with decaying memory", eq. for LORD++): test t gets level
//! alpha_t = gamma_t W0 + (alpha - W0) gamma_{t - tau_1} + alpha * sum_{j >= 2} gamma_{t - tau_j},
//! where tau_j are the times of earlier discoveries (merges) and gamma is a fixed sequence that
//! sums to 1. In FDR mode the loop uses alpha_t as the last stage's p threshold.

use serde::{Deserialize, Serialize};

use crate::decision::DecisionRule;

/// The default gamma sequence of Javanmard & Montanari (2018), normalized to sum to ~1.
pub fn gamma(j: u64) -> f64 {
    if j == 0 {
        return 0.0;
    }
    let jf = j as f64;
    0.072_2 * (jf.max(2.0)).ln() / (jf * (jf.ln()).sqrt().exp())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LordPlusPlus {
    /// Target FDR level.
    pub alpha: f64,
    /// Initial wealth, 0 < w0 <= alpha.
    pub w0: f64,
    /// Tests recorded so far.
    pub tests: u64,
    /// 1-based times of the discoveries so far.
    pub discoveries: Vec<u64>,
}

impl LordPlusPlus {
    /// A fresh state; `w0` defaults to alpha / 2 when `None`.
    pub fn new(alpha: f64, w0: Option<f64>) -> Result<Self, String> {
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(format!("FDR alpha {alpha} is not in (0, 1)"));
        }
        let w0 = w0.unwrap_or(alpha / 2.0);
        if !(w0 > 0.0 && w0 <= alpha) {
            return Err(format!("LORD++ initial wealth {w0} must be in (0, alpha]"));
        }
        Ok(LordPlusPlus {
            alpha,
            w0,
            tests: 0,
            discoveries: Vec::new(),
        })
    }

    /// The level for the next test.
    pub fn next_level(&self) -> f64 {
        let t = self.tests + 1;
        let mut level = gamma(t) * self.w0;
        for (j, &tau) in self.discoveries.iter().enumerate() {
            let weight = if j == 0 {
                self.alpha - self.w0
            } else {
                self.alpha
            };
            level += weight * gamma(t - tau);
        }
        level
    }

    /// Records the outcome of the next test; returns the level it was tested at.
    pub fn record(&mut self, discovered: bool) -> f64 {
        let level = self.next_level();
        self.tests += 1;
        if discovered {
            self.discoveries.push(self.tests);
        }
        level
    }

    /// The rule for the next decision in FDR mode: `base` with its last stage's threshold
    /// replaced by the LORD++ level (never loosened). The decision records this rule, so it
    /// recomputes from the ledger; afterwards call `record(accepted)`.
    pub fn rule_for_next(&self, base: &DecisionRule) -> DecisionRule {
        let mut rule = base.clone();
        let level = self.next_level();
        if let (true, Some(confirm)) = (rule.is_v3(), rule.confirm.as_mut()) {
            // v3's bound is the sum of the looks' alphas: scale them down to the level.
            let sum = confirm.alpha();
            if sum > level {
                for look in &mut confirm.looks {
                    look.alpha *= level / sum;
                }
            }
        } else if let Some(last) = rule.stages.last_mut() {
            last.p_threshold = last.p_threshold.min(level);
        }
        rule
    }

    /// Tests with `p` at the next level and records the result; true means discovery.
    pub fn test(&mut self, p: f64) -> bool {
        let discovered = p <= self.next_level();
        self.record(discovered);
        discovered
    }
}

/// What a session's decisions imply about false merges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRisk {
    pub decisions: usize,
    pub merges: usize,
    /// Per-decision false-accept bound of the rule (product of stage thresholds).
    pub per_decision_bound: f64,
    /// Upper bound on the expected number of false merges: every decision could be a null patch.
    pub expected_false_merges: f64,
    /// The same bound as a share of the merges (0 when nothing merged).
    pub expected_false_share: f64,
}

impl SessionRisk {
    /// Risk for `decisions` statistical decisions (screen rejects included) and `merges` accepts.
    pub fn new(rule: &DecisionRule, decisions: usize, merges: usize) -> Self {
        let per_decision_bound = rule.false_accept_bound();
        let expected_false_merges = per_decision_bound * decisions as f64;
        SessionRisk {
            decisions,
            merges,
            per_decision_bound,
            expected_false_merges,
            expected_false_share: if merges == 0 {
                0.0
            } else {
                (expected_false_merges / merges as f64).min(1.0)
            },
        }
    }

    /// One line for a report.
    pub fn summary(&self) -> String {
        format!(
            "{} decisions, {} merges: expected false merges <= {:.3} (per decision <= {})",
            self.decisions, self.merges, self.expected_false_merges, self.per_decision_bound
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_matches_its_formula_and_decreases() {
        // gamma_1 = 0.0722 ln 2 = 0.050046; gamma_2 = 0.0722 ln 2 / (2 e^sqrt(ln 2)) = 0.010884.
        assert!((gamma(1) - 0.050_046).abs() < 1e-6);
        assert!((gamma(2) - 0.010_884).abs() < 1e-6);
        assert!((2..10_000).all(|j| gamma(j + 1) < gamma(j)));
        // The series converges slowly towards 1; partial sums never exceed it.
        let partial: f64 = (1..100_000).map(gamma).sum();
        assert!(partial < 1.0);
    }

    #[test]
    fn levels_follow_the_lord_plus_plus_formula() {
        let mut lord = LordPlusPlus::new(0.1, Some(0.05)).unwrap();
        // Test 1: gamma_1 * w0.
        assert!((lord.next_level() - gamma(1) * 0.05).abs() < 1e-15);
        assert!(lord.test(0.0001)); // discovery at t = 1
                                    // Test 2: gamma_2 w0 + (alpha - w0) gamma_1.
        let expected = gamma(2) * 0.05 + 0.05 * gamma(1);
        assert!((lord.next_level() - expected).abs() < 1e-15);
        assert!(!lord.test(0.5));
        assert!(lord.test(1e-6)); // discovery at t = 3
                                  // Test 4: gamma_4 w0 + (alpha - w0) gamma_3 + alpha gamma_1.
        let expected = gamma(4) * 0.05 + 0.05 * gamma(3) + 0.1 * gamma(1);
        assert!((lord.next_level() - expected).abs() < 1e-15);
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut lord = LordPlusPlus::new(0.05, None).unwrap();
        lord.test(1e-5);
        lord.test(0.3);
        let json = serde_json::to_string(&lord).unwrap();
        let back: LordPlusPlus = serde_json::from_str(&json).unwrap();
        assert_eq!(back, lord);
        assert_eq!(back.next_level(), lord.next_level());
    }

    /// The v1 default: 4 pairs at p < 0.25, then 8 at p < 0.05.
    fn two_stage_rule() -> DecisionRule {
        DecisionRule {
            stages: vec![
                crate::decision::StageRule {
                    pairs: 4,
                    p_threshold: 0.25,
                },
                crate::decision::StageRule {
                    pairs: 8,
                    p_threshold: 0.05,
                },
            ],
            ..DecisionRule::v2_default()
        }
    }

    #[test]
    fn fdr_mode_scales_v3_looks_to_the_level() {
        let lord = LordPlusPlus::new(0.05, None).unwrap();
        let rule = lord.rule_for_next(&DecisionRule::default());
        // First level gamma_1 * w0 = 0.050046 * 0.025 = 0.0012512 < 0.025: every look is
        // scaled by 0.0012512 / 0.025 = 0.050046.
        assert!((rule.false_accept_bound() - 0.050_046 * 0.025).abs() < 1e-6);
        assert!(rule.validate().is_ok());
        let looks = &rule.confirm.as_ref().unwrap().looks;
        assert!((looks[0].alpha - 0.002 * 0.050_046).abs() < 1e-6);
    }

    #[test]
    fn fdr_mode_tightens_only_the_last_stage() {
        let lord = LordPlusPlus::new(0.05, None).unwrap();
        let base = two_stage_rule();
        let rule = lord.rule_for_next(&base);
        // First level: gamma_1 * w0 = 0.050046 * 0.025 = 0.0012512.
        assert!((rule.stages[1].p_threshold - 0.050_046 * 0.025).abs() < 1e-6);
        assert_eq!(rule.stages[0], base.stages[0]);
        assert!(rule.validate().is_ok());
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(LordPlusPlus::new(0.0, None).is_err());
        assert!(LordPlusPlus::new(0.1, Some(0.2)).is_err());
    }

    #[test]
    fn session_risk_multiplies_the_per_decision_bound() {
        let rule = two_stage_rule();
        let risk = SessionRisk::new(&rule, 200, 5);
        // 0.25 * 0.05 = 0.0125 per decision -> 2.5 expected false merges at most.
        assert!((risk.per_decision_bound - 0.0125).abs() < 1e-12);
        assert!((risk.expected_false_merges - 2.5).abs() < 1e-9);
        assert!((risk.expected_false_share - 0.5).abs() < 1e-9);
        // The default: one stage at p < 0.025 -> at most 5 of 200 decisions.
        let risk = SessionRisk::new(&DecisionRule::default(), 200, 5);
        assert!((risk.expected_false_merges - 5.0).abs() < 1e-9);
    }
}
