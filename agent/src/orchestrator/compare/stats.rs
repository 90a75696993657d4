//! The statistics of a comparison, a pure function of its per-seed values, so `ledger verify`
//! recomputes them from the recorded pairs (the same paired t-test the decision rule uses).

use std::collections::BTreeSet;

use agentloop_guardrails::decision::paired_test;
use agentloop_ledger::payload::{Compare, ComparePair};
use serde_json::Value;

/// B - A (the metric is minimized: negative means B is better).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub n: u32,
    pub mean_diff: f64,
    pub sd_diff: f64,
    /// Two-sided 95% interval of the mean of B - A.
    pub ci_low: f64,
    pub ci_high: f64,
    /// One-sided paired t-test of "B is better than A" (lower metric).
    pub p_value: f64,
}

/// The statistics of `pairs`: at least two, finite, one per seed.
pub fn of(pairs: &[ComparePair]) -> Result<Stats, String> {
    let mut seeds = BTreeSet::new();
    if let Some(p) = pairs.iter().find(|p| !seeds.insert(p.seed)) {
        return Err(format!("seed {} appears in more than one pair", p.seed));
    }
    if pairs.len() < 2 {
        return Err(format!(
            "a comparison needs at least 2 pairs, got {}",
            pairs.len()
        ));
    }
    // The decision rule's test with A as the baseline: its gain is A - B.
    let values: Vec<(f64, f64)> = pairs.iter().map(|p| (p.a, p.b)).collect();
    let t = paired_test(0, values.len(), &values).map_err(|e| e.to_string())?;
    Ok(Stats {
        n: t.n as u32,
        mean_diff: -t.mean,
        sd_diff: t.sd,
        ci_low: -t.ci_high,
        ci_high: -t.ci_low,
        p_value: t.p,
    })
}

/// What the interval says, in words a user acts on.
pub fn verdict(s: &Stats) -> &'static str {
    if s.ci_high < 0.0 {
        "b_better"
    } else if s.ci_low > 0.0 {
        "a_better"
    } else {
        "no_difference"
    }
}

/// `ledger verify`'s check of a `compare` event: its headline statistics are what its pairs give.
pub fn recheck(payload: &Value) -> Result<(), String> {
    let c: Compare =
        serde_json::from_value(payload.clone()).map_err(|e| format!("not a compare event: {e}"))?;
    let s = of(&c.pairs)?;
    let stored = [
        ("n", c.n as f64, s.n as f64),
        ("mean_diff", c.mean_diff, s.mean_diff),
        ("sd_diff", c.sd_diff, s.sd_diff),
        ("ci_low", c.ci_low, s.ci_low),
        ("ci_high", c.ci_high, s.ci_high),
        ("p_value", c.p_value, s.p_value),
    ];
    for (name, recorded, recomputed) in stored {
        if recorded != recomputed {
            return Err(format!(
                "compare {name} is {recorded} but its {} pairs give {recomputed}",
                c.pairs.len()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(values: &[(f64, f64)]) -> Vec<ComparePair> {
        values
            .iter()
            .enumerate()
            .map(|(i, &(a, b))| ComparePair {
                seed: i as u64 + 1,
                a,
                b,
            })
            .collect()
    }

    #[test]
    fn a_lower_b_is_a_negative_difference_and_a_small_p() {
        let s = of(&pairs(&[
            (1.0, 0.9),
            (1.1, 0.98),
            (0.95, 0.86),
            (1.02, 0.93),
        ]))
        .unwrap();
        assert!(s.mean_diff < -0.08 && s.mean_diff > -0.11, "{s:?}");
        assert!(s.ci_high < 0.0 && s.ci_low < s.mean_diff, "{s:?}");
        assert!(s.p_value < 0.01, "{s:?}");
        assert_eq!(verdict(&s), "b_better");
        let worse = of(&pairs(&[(0.9, 1.0), (0.98, 1.1), (0.86, 0.95)])).unwrap();
        assert_eq!(verdict(&worse), "a_better");
        assert!(worse.p_value > 0.99);
    }

    #[test]
    fn identical_arms_give_an_interval_holding_zero() {
        let s = of(&pairs(&[(1.0, 1.0), (1.2, 1.2), (0.9, 0.9)])).unwrap();
        assert_eq!(
            (s.mean_diff, s.ci_low, s.ci_high, s.p_value),
            (0.0, 0.0, 0.0, 0.5)
        );
        assert_eq!(verdict(&s), "no_difference");
    }

    #[test]
    fn too_few_repeated_or_non_finite_pairs_are_refused() {
        assert!(of(&pairs(&[(1.0, 0.9)]))
            .unwrap_err()
            .contains("at least 2"));
        let mut p = pairs(&[(1.0, 0.9), (1.0, 0.8)]);
        p[1].seed = p[0].seed;
        assert!(of(&p).unwrap_err().contains("more than one pair"));
        assert!(of(&pairs(&[(1.0, f64::NAN), (1.0, 0.8)])).is_err());
    }

    #[test]
    fn verify_recomputes_and_catches_an_edited_headline_or_value() {
        let p = pairs(&[(1.0, 0.9), (1.1, 0.98), (0.95, 0.86)]);
        let s = of(&p).unwrap();
        let mut event = serde_json::json!({
            "a_rev": "main", "b_rev": "HEAD", "a_commit": "a", "b_commit": "b",
            "split": "holdout", "metric": "val_bpb", "pairs": p, "n": s.n,
            "mean_diff": s.mean_diff, "sd_diff": s.sd_diff, "ci_low": s.ci_low,
            "ci_high": s.ci_high, "p_value": s.p_value,
        });
        recheck(&event).unwrap();
        let mut edited = event.clone();
        edited["ci_high"] = serde_json::json!(-1.0);
        assert!(recheck(&edited).unwrap_err().contains("ci_high"));
        // A per-seed value changed after the fact: the headline no longer follows from it.
        event["pairs"][0]["b"] = serde_json::json!(0.5);
        assert!(recheck(&event).unwrap_err().contains("mean_diff"));
    }
}
