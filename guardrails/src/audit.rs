//! Holdout audits: does the trunk's cumulative gain since the last audit hold up on the
//! sealed holdout split? And, when it does not, which merged change to roll back (bisection).

use serde::{Deserialize, Serialize};

use crate::stats::{one_sample_t, TTest};

/// Audit configuration: `[decision.audit]` in `agentloop.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditRule {
    /// Audit after this many merges (not rolled back) since the last audit; 0 disables audits.
    pub every_merges: usize,
    /// Fresh holdout seeds per audit (each runs both commits).
    pub pairs: usize,
    /// The gain holds up when the holdout data are consistent with at least this share of the
    /// claimed gain: the upper 95% confidence bound of the holdout gain must reach it.
    pub min_share_of_claim: f64,
    /// What the loop does when an audit is flagged.
    pub on_flag: OnFlag,
}

/// The loop's policy for a flagged audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFlag {
    /// Bisect the merges since the reference on holdout and roll back the first bad one.
    BisectRollback,
    /// Record the flag and change nothing.
    FlagOnly,
}

impl Default for AuditRule {
    fn default() -> Self {
        AuditRule {
            every_merges: 5,
            pairs: 6,
            min_share_of_claim: 0.5,
            on_flag: OnFlag::BisectRollback,
        }
    }
}

impl AuditRule {
    /// Checks that audits can run as configured (a t-test needs two pairs).
    pub fn validate(&self) -> Result<(), String> {
        if self.every_merges > 0 && self.pairs < 2 {
            return Err(format!(
                "audit.pairs is {}; a holdout audit needs >= 2 pairs",
                self.pairs
            ));
        }
        if !(self.min_share_of_claim.is_finite() && self.min_share_of_claim >= 0.0) {
            return Err(format!(
                "audit.min_share_of_claim {} must be a number >= 0",
                self.min_share_of_claim
            ));
        }
        Ok(())
    }

    /// True when an audit is due after this many merges since the last audit.
    pub fn is_due(&self, merges_since_audit: usize) -> bool {
        self.every_merges > 0 && merges_since_audit >= self.every_merges
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditOutcome {
    pub holds_up: bool,
    /// Sum of the mean gains the merges since the last audit claimed (validation split).
    pub claimed_gain: f64,
    /// Paired test of gain = audited - trunk on the holdout split.
    pub test: TTest,
    /// Holdout mean gain / claimed gain.
    pub share_of_claim: f64,
    pub reason: String,
}

/// Assesses one audit. `pairs` are (last audited commit, trunk) holdout values on the same
/// fresh seeds; lower is better. Returns `None` with fewer than 2 finite pairs.
pub fn assess(rule: &AuditRule, claimed_gain: f64, pairs: &[(f64, f64)]) -> Option<AuditOutcome> {
    let gains: Vec<f64> = pairs.iter().map(|(a, t)| a - t).collect();
    let test = one_sample_t(&gains)?;
    let needed = rule.min_share_of_claim * claimed_gain.max(0.0);
    let share_of_claim = if claimed_gain != 0.0 {
        test.mean / claimed_gain
    } else {
        0.0
    };
    // The upper bound of a one-sided 95% interval: mean + t_{0.95} * se.
    let upper = test.mean + (test.ci_high - test.mean) * t95_over_t975(test.df);
    let (holds_up, reason) = if test.mean <= 0.0 && claimed_gain > 0.0 {
        (
            false,
            format!(
                "holdout shows no gain (mean {:.6}) against a claimed {:.6}",
                test.mean, claimed_gain
            ),
        )
    } else if upper < needed {
        (
            false,
            format!(
                "holdout gain {:.6} (95% upper bound {:.6}) is below {:.0}% of the claimed {:.6}",
                test.mean,
                upper,
                rule.min_share_of_claim * 100.0,
                claimed_gain
            ),
        )
    } else {
        (
            true,
            format!(
                "holdout gain {:.6} is consistent with the claimed {:.6}",
                test.mean, claimed_gain
            ),
        )
    };
    Some(AuditOutcome {
        holds_up,
        claimed_gain,
        test,
        share_of_claim,
        reason,
    })
}

fn t95_over_t975(df: f64) -> f64 {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    let d = StudentsT::new(0.0, 1.0, df).expect("df >= 1");
    d.inverse_cdf(0.95) / d.inverse_cdf(0.975)
}

/// Bisection over the changes merged since the last good audit, to find the first change after
/// which the cumulative gain no longer holds up.
///
/// Probing index k means: audit the trunk as of `changes[k]` (inclusive) against the last
/// audited commit, and report whether it held up. The last index is known bad (the failed
/// audit); "bad" is assumed monotone (once a bad change is in, later prefixes stay bad).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bisection {
    pub changes: Vec<String>,
    /// Lowest index not yet known good.
    low: usize,
    /// Lowest index known bad.
    high: usize,
    pub probes: Vec<(usize, bool)>,
}

impl Bisection {
    /// Starts a bisection over `changes` (oldest first); `None` when there are none.
    pub fn new(changes: Vec<String>) -> Option<Self> {
        let high = changes.len().checked_sub(1)?;
        Some(Bisection {
            changes,
            low: 0,
            high,
            probes: Vec::new(),
        })
    }

    /// The change whose prefix to audit next, or `None` when the culprit is found.
    pub fn next_probe(&self) -> Option<(usize, &str)> {
        if self.low >= self.high {
            return None;
        }
        let mid = self.low + (self.high - self.low) / 2;
        Some((mid, &self.changes[mid]))
    }

    /// Records the audit of the prefix ending at `index`.
    pub fn record(&mut self, index: usize, holds_up: bool) -> Result<(), String> {
        if index < self.low || index >= self.high {
            return Err(format!(
                "index {index} is outside the open range [{}, {})",
                self.low, self.high
            ));
        }
        self.probes.push((index, holds_up));
        if holds_up {
            self.low = index + 1;
        } else {
            self.high = index;
        }
        Ok(())
    }

    /// The first change whose prefix fails: the one to roll back (once `next_probe` is `None`).
    pub fn culprit(&self) -> Option<&str> {
        (self.low >= self.high).then(|| self.changes[self.high].as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gain_that_reproduces_holds_up() {
        let pairs = [(1.00, 0.90), (1.02, 0.93), (0.98, 0.87), (1.01, 0.90)];
        let out = assess(&AuditRule::default(), 0.1, &pairs).unwrap();
        assert!(out.holds_up, "{}", out.reason);
        assert!((out.test.mean - 0.1025).abs() < 1e-12);
    }

    #[test]
    fn a_gain_that_vanishes_on_holdout_is_flagged() {
        // Claimed 0.1; holdout gains 0.01, -0.01, -0.01, 0.005, -0.01, -0.005: mean -0.0033.
        let pairs = [
            (1.0, 0.99),
            (1.0, 1.01),
            (1.0, 1.01),
            (1.0, 0.995),
            (1.0, 1.01),
            (1.0, 1.005),
        ];
        let out = assess(&AuditRule::default(), 0.1, &pairs).unwrap();
        assert!(!out.holds_up);
        assert!(out.reason.contains("no gain"), "{}", out.reason);
        // Gains 0.01 0.02 0.015 0.01 0.02 0.015: mean 0.015, sd 0.004472, se 0.001826;
        // t-table t_{0.95,5} = 2.015: upper bound 0.015 + 2.015 * 0.001826 = 0.01868 < 0.05.
        let pairs = [
            (1.0, 0.99),
            (1.0, 0.98),
            (1.0, 0.985),
            (1.0, 0.99),
            (1.0, 0.98),
            (1.0, 0.985),
        ];
        let out = assess(&AuditRule::default(), 0.1, &pairs).unwrap();
        assert!(out.reason.contains("0.018"), "{}", out.reason);
        assert!(!out.holds_up, "{}", out.reason);
        assert!(out.reason.contains("below 50%"), "{}", out.reason);
    }

    #[test]
    fn audits_are_due_every_k_merges() {
        let rule = AuditRule::default();
        assert!(!rule.is_due(4));
        assert!(rule.is_due(5));
    }

    #[test]
    fn bisection_finds_the_first_bad_change() {
        let changes: Vec<String> = (0..7).map(|i| format!("c{i}")).collect();
        // Prefixes ending at index >= 4 fail.
        let mut b = Bisection::new(changes).unwrap();
        let mut probes = 0;
        while let Some((k, _)) = b.next_probe() {
            b.record(k, k < 4).unwrap();
            probes += 1;
        }
        assert_eq!(b.culprit(), Some("c4"));
        assert!(
            probes <= 3,
            "binary search over 7 needs <= 3 probes, used {probes}"
        );
        assert!(Bisection::new(Vec::new()).is_none());
    }

    #[test]
    fn bisection_refuses_out_of_range_probes() {
        let mut b = Bisection::new(vec!["a".into(), "b".into()]).unwrap();
        assert!(b.record(1, true).is_err());
        assert_eq!(b.next_probe(), Some((0, "a")));
        b.record(0, true).unwrap();
        assert_eq!(b.culprit(), Some("b"));
    }
}
