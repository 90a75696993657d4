//! Guards: secondary metrics a change must not make worse (`[decision.guards]` of
//! agentloop.toml), each a one-sided non-inferiority test on the pairs the decision already ran
//! side by side (trunk and candidate on the same seed, under the same load).
//!
//! A ratio guard (`max_ratio`, `min_ratio`) tests the per-pair log-ratio candidate / trunk: a
//! one-sided 95 % t bound on its mean, turned back into a ratio, must stay within the bound. A
//! difference guard (`max_increase`) tests candidate - trunk the same way. The burden is on the
//! candidate: a guard passes only when the data show the metric within its bound. A run that
//! lacks the metric, or a ratio of non-positive values, fails the guard loudly. Every result
//! carries its inputs, so `ledger verify` recomputes it with [`evaluate`].

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::stats::mean_sd;

/// Confidence of each one-sided bound (the two bounds form a 90 % two-sided interval).
pub const GUARD_CONFIDENCE: f64 = 0.95;

/// Metrics the loop's runs do not have: they are scored on `val` only.
const NOT_EVALUATED: [&str; 1] = ["holdout_gap"];

/// What a guard bounds: the candidate / trunk ratio from above or below, or the difference
/// candidate - trunk from above.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GuardBound {
    MaxRatio(f64),
    MinRatio(f64),
    MaxIncrease(f64),
}

/// One `[decision.guards]` entry: `peak_mem_bytes = { max_ratio = 1.10 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// A numeric key of the runs' metrics.json.
    pub metric: String,
    pub bound: GuardBound,
}

impl Guard {
    /// Parses one entry of the `[decision.guards]` table; the error says what is wrong.
    pub fn parse(metric: &str, value: &toml::Value) -> Result<Guard, String> {
        if NOT_EVALUATED.contains(&metric) {
            return Err(format!(
                "`{metric}` is not evaluated yet: the loop's runs are scored on val only, so they have no holdout metrics"
            ));
        }
        let toml::Value::Table(table) = value else {
            return Err("must be a table such as { max_ratio = 1.10 }".into());
        };
        let mut entries = table.iter();
        let (Some((kind, number)), None) = (entries.next(), entries.next()) else {
            return Err("needs exactly one of max_ratio, min_ratio, max_increase".into());
        };
        let number = number
            .as_float()
            .or_else(|| number.as_integer().map(|i| i as f64))
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("{kind} must be a finite number"))?;
        let bound = match kind.as_str() {
            "max_ratio" | "min_ratio" if number <= 0.0 => {
                return Err(format!("{kind} must be positive"))
            }
            "max_ratio" => GuardBound::MaxRatio(number),
            "min_ratio" => GuardBound::MinRatio(number),
            "max_increase" => GuardBound::MaxIncrease(number),
            other => {
                return Err(format!(
                    "unknown bound `{other}`: expected max_ratio, min_ratio or max_increase"
                ))
            }
        };
        Ok(Guard {
            metric: metric.to_string(),
            bound,
        })
    }
}

/// One pair's values of the guarded metric (`None`: the run's metrics.json lacks it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GuardPair {
    pub seed: u64,
    pub trunk: Option<f64>,
    pub candidate: Option<f64>,
}

/// A guard's test, with its inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardResult {
    pub metric: String,
    pub bound: GuardBound,
    pub pairs: Vec<GuardPair>,
    pub confidence: f64,
    /// Mean ratio (geometric) or mean difference; `None` when the test could not be made.
    pub estimate: Option<f64>,
    /// The one-sided lower and upper bounds at `confidence` (ratio or difference).
    pub interval: Option<(f64, f64)>,
    pub pass: bool,
    /// One line: what was measured against what, or why the test could not be made.
    pub reason: String,
}

impl GuardResult {
    /// `guard:<metric>`, the reject reason's prefix.
    pub fn tag(&self) -> String {
        format!("guard:{}", self.metric)
    }
}

/// Tests `guard` on `pairs` (see the module doc).
pub fn evaluate(guard: &Guard, pairs: Vec<GuardPair>) -> GuardResult {
    let metric = &guard.metric;
    let ratio = !matches!(guard.bound, GuardBound::MaxIncrease(_));
    let failed = |reason: String| GuardResult {
        metric: metric.clone(),
        bound: guard.bound,
        pairs: pairs.clone(),
        confidence: GUARD_CONFIDENCE,
        estimate: None,
        interval: None,
        pass: false,
        reason,
    };
    let mut values = Vec::with_capacity(pairs.len());
    for p in &pairs {
        let (Some(t), Some(c)) = (p.trunk, p.candidate) else {
            let which = if p.trunk.is_none() {
                "trunk"
            } else {
                "candidate"
            };
            return failed(format!(
                "the {which} run on seed {} has no `{metric}` in its metrics.json",
                p.seed
            ));
        };
        if !(t.is_finite() && c.is_finite()) || (ratio && (t <= 0.0 || c <= 0.0)) {
            return failed(format!(
                "seed {}: `{metric}` is {t} (trunk) and {c} (candidate); a ratio needs positive values",
                p.seed
            ));
        }
        values.push(if ratio { (c / t).ln() } else { c - t });
    }
    if values.len() < 2 {
        return failed(format!(
            "`{metric}` needs at least 2 pairs run side by side, the decision has {}",
            values.len()
        ));
    }
    let (mean, sd) = mean_sd(&values);
    let n = values.len() as f64;
    let t = StudentsT::new(0.0, 1.0, n - 1.0)
        .expect("df >= 1")
        .inverse_cdf(GUARD_CONFIDENCE);
    let half = t * sd / n.sqrt();
    let back = |x: f64| if ratio { x.exp() } else { x };
    let (estimate, low, high) = (back(mean), back(mean - half), back(mean + half));
    let (pass, tested, side, limit) = match guard.bound {
        GuardBound::MaxRatio(b) => (high <= b, high, "upper", format!("max_ratio {b}")),
        GuardBound::MinRatio(b) => (low >= b, low, "lower", format!("min_ratio {b}")),
        GuardBound::MaxIncrease(b) => (high <= b, high, "upper", format!("max_increase {b}")),
    };
    let what = if ratio { "ratio" } else { "increase" };
    let verdict = if pass { "within" } else { "violates" };
    GuardResult {
        metric: metric.clone(),
        bound: guard.bound,
        pairs,
        confidence: GUARD_CONFIDENCE,
        estimate: Some(estimate),
        interval: Some((low, high)),
        pass,
        reason: format!(
            "{metric} {what} {estimate:.4} over {} pairs, {:.0} % {side} bound {tested:.4} {verdict} {limit}",
            values.len(),
            GUARD_CONFIDENCE * 100.0
        ),
    }
}

/// The first failed guard of `results`, if any.
pub fn first_failure(results: &[GuardResult]) -> Option<&GuardResult> {
    results.iter().find(|r| !r.pass)
}

/// `ledger verify`'s check: each stored guard result recomputed from its own inputs.
pub fn recompute(results: &[GuardResult]) -> Result<(), String> {
    for stored in results {
        let guard = Guard {
            metric: stored.metric.clone(),
            bound: stored.bound,
        };
        let again = evaluate(&guard, stored.pairs.clone());
        let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
            (None, None) => true,
            _ => false,
        };
        let same = again.pass == stored.pass
            && close(again.estimate, stored.estimate)
            && close(again.interval.map(|i| i.0), stored.interval.map(|i| i.0))
            && close(again.interval.map(|i| i.1), stored.interval.map(|i| i.1))
            && again.confidence == stored.confidence;
        if !same {
            return Err(format!(
                "guard {} does not recompute: stored {:?} (pass {}), recomputed {:?} (pass {})",
                stored.metric, stored.interval, stored.pass, again.interval, again.pass
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(values: &[(f64, f64)]) -> Vec<GuardPair> {
        values
            .iter()
            .enumerate()
            .map(|(i, &(t, c))| GuardPair {
                seed: i as u64,
                trunk: Some(t),
                candidate: Some(c),
            })
            .collect()
    }

    fn guard(metric: &str, bound: GuardBound) -> Guard {
        Guard {
            metric: metric.into(),
            bound,
        }
    }

    /// The bound is a one-sided 95 % t bound on the mean log-ratio, computed by hand here:
    /// log-ratios ln 2, ln 2.2, ln 1.8; t(0.95, 2 df) = 2.919986.
    #[test]
    fn a_doubled_metric_violates_max_ratio_with_the_hand_computed_bound() {
        let r = evaluate(
            &guard("peak_mem_bytes", GuardBound::MaxRatio(1.10)),
            pairs(&[(100.0, 200.0), (100.0, 220.0), (100.0, 180.0)]),
        );
        let logs = [2f64.ln(), 2.2f64.ln(), 1.8f64.ln()];
        let mean = logs.iter().sum::<f64>() / 3.0;
        let sd = (logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        let upper = (mean + 2.919986 * sd / 3f64.sqrt()).exp();
        let (low, high) = r.interval.unwrap();
        assert!((high - upper).abs() < 1e-5, "{high} vs {upper}");
        assert!(low < r.estimate.unwrap() && r.estimate.unwrap() < high);
        assert!((r.estimate.unwrap() - mean.exp()).abs() < 1e-12);
        assert!(!r.pass, "{}", r.reason);
        assert!(r.reason.contains("violates max_ratio 1.1"), "{}", r.reason);
        assert_eq!(r.tag(), "guard:peak_mem_bytes");
    }

    #[test]
    fn non_inferiority_needs_the_whole_bound_inside_not_only_the_estimate() {
        // Mean ratio ~1.0 with little noise: passes both ratio guards.
        let steady = pairs(&[(100.0, 101.0), (100.0, 99.0), (100.0, 100.5), (100.0, 99.5)]);
        assert!(evaluate(&guard("m", GuardBound::MaxRatio(1.10)), steady.clone()).pass);
        assert!(evaluate(&guard("tokens_per_s", GuardBound::MinRatio(0.90)), steady).pass);
        // Mean ratio 0.95 (inside 0.90) but so noisy that the lower bound falls below: fails.
        let noisy = pairs(&[(100.0, 120.0), (100.0, 75.0), (100.0, 110.0), (100.0, 80.0)]);
        let r = evaluate(&guard("tokens_per_s", GuardBound::MinRatio(0.90)), noisy);
        assert!(r.estimate.unwrap() > 0.90 && !r.pass, "{}", r.reason);
        // A slower candidate, clearly: fails.
        let slow = pairs(&[(100.0, 60.0), (100.0, 62.0), (100.0, 58.0)]);
        assert!(!evaluate(&guard("tokens_per_s", GuardBound::MinRatio(0.90)), slow).pass);
    }

    #[test]
    fn max_increase_bounds_the_difference() {
        let small = pairs(&[(1.0, 1.005), (1.0, 1.006), (1.0, 1.004)]);
        assert!(evaluate(&guard("gap", GuardBound::MaxIncrease(0.02)), small).pass);
        let large = pairs(&[(1.0, 1.05), (1.0, 1.06), (1.0, 1.04)]);
        assert!(!evaluate(&guard("gap", GuardBound::MaxIncrease(0.02)), large).pass);
    }

    #[test]
    fn a_missing_key_or_too_few_pairs_fails_loudly_naming_the_key() {
        let mut p = pairs(&[(100.0, 100.0), (100.0, 100.0)]);
        p[1].candidate = None;
        let r = evaluate(&guard("peak_mem_bytes", GuardBound::MaxRatio(1.1)), p);
        assert!(!r.pass);
        assert!(
            r.reason
                .contains("candidate run on seed 1 has no `peak_mem_bytes`"),
            "{}",
            r.reason
        );
        let one = evaluate(
            &guard("peak_mem_bytes", GuardBound::MaxRatio(1.1)),
            pairs(&[(1.0, 1.0)]),
        );
        assert!(
            !one.pass && one.reason.contains("at least 2 pairs"),
            "{}",
            one.reason
        );
        let zero = evaluate(
            &guard("peak_mem_bytes", GuardBound::MaxRatio(1.1)),
            pairs(&[(0.0, 1.0), (1.0, 1.0)]),
        );
        assert!(
            !zero.pass && zero.reason.contains("positive"),
            "{}",
            zero.reason
        );
    }

    #[test]
    fn parsing_names_what_is_wrong() {
        let v = |s: &str| s.parse::<toml::Table>().unwrap()["g"].clone();
        let g = Guard::parse("peak_mem_bytes", &v("g = { max_ratio = 1.10 }")).unwrap();
        assert_eq!(g.bound, GuardBound::MaxRatio(1.10));
        let g = Guard::parse("tokens_per_s", &v("g = { min_ratio = 1 }")).unwrap();
        assert_eq!(g.bound, GuardBound::MinRatio(1.0));
        for (text, needle) in [
            ("g = 1.1", "must be a table"),
            ("g = { max_ratio = 1.1, min_ratio = 0.9 }", "exactly one"),
            ("g = { ratio = 1.1 }", "unknown bound `ratio`"),
            ("g = { max_ratio = -1.0 }", "positive"),
            ("g = { max_ratio = \"big\" }", "finite number"),
        ] {
            let err = Guard::parse("m", &v(text)).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
        let err = Guard::parse("holdout_gap", &v("g = { max_increase = 0.02 }")).unwrap_err();
        assert!(err.contains("not evaluated yet"), "{err}");
    }

    #[test]
    fn recompute_detects_an_edited_result() {
        let r = evaluate(
            &guard("peak_mem_bytes", GuardBound::MaxRatio(1.10)),
            pairs(&[(100.0, 200.0), (100.0, 210.0)]),
        );
        recompute(std::slice::from_ref(&r)).unwrap();
        let mut flipped = r.clone();
        flipped.pass = true;
        assert!(recompute(&[flipped]).is_err());
        let mut edited = r;
        edited.pairs[0].candidate = Some(100.0);
        assert!(recompute(&[edited]).is_err());
    }
}
