//! Small statistical helpers on top of `statrs`: the one-sample (paired) t-test and bounds.

use serde::{Deserialize, Serialize};
use statrs::distribution::{Beta, ContinuousCDF, StudentsT};

/// Sample mean and sample standard deviation (n - 1 in the denominator; 0 when n < 2).
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let ss: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
    (mean, (ss / (n - 1) as f64).sqrt())
}

/// Result of a one-sided one-sample t-test of H1: mean > 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TTest {
    pub n: usize,
    pub mean: f64,
    pub sd: f64,
    /// Standard error of the mean.
    pub se: f64,
    /// t statistic; +/- infinity when all values are identical and non-zero.
    #[serde(with = "lossless_f64")]
    pub t: f64,
    pub df: f64,
    /// One-sided p-value for H1: mean > 0.
    pub p: f64,
    /// Two-sided 95% confidence interval of the mean.
    pub ci_low: f64,
    pub ci_high: f64,
}

/// One-sided one-sample t-test on `values` (for paired data: the differences).
///
/// `statrs` has no paired test, so this is the paired test. The small p is taken from the
/// survival function, never `1 - cdf`, which loses all precision below ~1e-16.
/// Requires n >= 2; zero variance is handled explicitly (t is +/-inf or 0).
pub fn one_sample_t(values: &[f64]) -> Option<TTest> {
    let n = values.len();
    if n < 2 || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let (mean, sd) = mean_sd(values);
    let df = (n - 1) as f64;
    let se = sd / (n as f64).sqrt();
    let dist = StudentsT::new(0.0, 1.0, df).expect("df >= 1");
    let (t, p) = if se > 0.0 {
        let t = mean / se;
        (t, dist.sf(t))
    } else if mean > 0.0 {
        (f64::INFINITY, 0.0)
    } else if mean < 0.0 {
        (f64::NEG_INFINITY, 1.0)
    } else {
        (0.0, 0.5)
    };
    let half_width = dist.inverse_cdf(0.975) * se;
    Some(TTest {
        n,
        mean,
        sd,
        se,
        t,
        df,
        p,
        ci_low: mean - half_width,
        ci_high: mean + half_width,
    })
}

/// One-sided Clopper-Pearson upper bound at `confidence` for `successes` out of `trials`.
pub fn clopper_pearson_upper(successes: usize, trials: usize, confidence: f64) -> f64 {
    if trials == 0 || successes >= trials {
        return 1.0;
    }
    Beta::new(successes as f64 + 1.0, (trials - successes) as f64)
        .expect("positive shape parameters")
        .inverse_cdf(confidence)
}

/// One-sided Clopper-Pearson lower bound at `confidence`.
pub fn clopper_pearson_lower(successes: usize, trials: usize, confidence: f64) -> f64 {
    if trials == 0 || successes == 0 {
        return 0.0;
    }
    Beta::new(successes as f64, (trials - successes) as f64 + 1.0)
        .expect("positive shape parameters")
        .inverse_cdf(1.0 - confidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_t_matches_hand_computation_and_t_table() {
        // Differences 1, 2, 3, 4: mean 2.5, sd sqrt(5/3) = 1.290994, se = 0.645497,
        // t = 3.872983 with df 3. t-table (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2):
        // t_{0.975,3} = 3.182 and t_{0.99,3} = 4.541, so 0.01 < p < 0.025.
        let r = one_sample_t(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((r.mean - 2.5).abs() < 1e-12);
        assert!((r.sd - 1.290_994_448_7).abs() < 1e-9);
        assert!((r.t - 3.872_983_346_2).abs() < 1e-9);
        assert_eq!(r.df, 3.0);
        assert!(r.p > 0.01 && r.p < 0.025, "p = {}", r.p);
        // p is 0.01522 (closed form for df 3).
        assert!((r.p - 0.015_22).abs() < 5e-5, "p = {}", r.p);
        // CI: 2.5 -/+ 3.182446 * 0.645497 = [0.445741, 4.554259].
        assert!((r.ci_low - 0.445_741).abs() < 1e-5);
        assert!((r.ci_high - 4.554_259).abs() < 1e-5);
    }

    #[test]
    fn t_at_table_critical_value_gives_its_tail_probability() {
        // t-table: t_{0.95,5} = 2.015 (one-sided 0.05, df 5). Values chosen so t = 2.015 exactly:
        // any sample with mean/se = 2.015. Use d = [m + k*e] with known sd.
        let base = [-1.0, -0.5, 0.0, 0.5, 1.0, 0.0];
        let (_, sd) = mean_sd(&base);
        let shift = 2.015 * sd / 6f64.sqrt();
        let d: Vec<f64> = base.iter().map(|b| b + shift).collect();
        let r = one_sample_t(&d).unwrap();
        assert!((r.t - 2.015).abs() < 1e-9);
        assert!((r.p - 0.05).abs() < 5e-4, "p = {}", r.p);
    }

    #[test]
    fn tiny_p_values_keep_precision() {
        let d: Vec<f64> = (0..30).map(|i| 10.0 + (i % 3) as f64 * 0.01).collect();
        let r = one_sample_t(&d).unwrap();
        assert!(r.p > 0.0 && r.p < 1e-30, "p = {}", r.p);
    }

    #[test]
    fn zero_variance_and_small_samples() {
        assert_eq!(one_sample_t(&[0.5, 0.5, 0.5]).unwrap().p, 0.0);
        assert_eq!(one_sample_t(&[-0.5, -0.5]).unwrap().p, 1.0);
        assert_eq!(one_sample_t(&[0.0, 0.0]).unwrap().p, 0.5);
        assert!(one_sample_t(&[1.0]).is_none());
        assert!(one_sample_t(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn clopper_pearson_matches_rule_of_three() {
        // 0 successes in n: one-sided 95% upper bound is 1 - 0.05^(1/n) (~3/n).
        let u = clopper_pearson_upper(0, 2000, 0.95);
        assert!((u - (1.0 - 0.05f64.powf(1.0 / 2000.0))).abs() < 1e-9);
        assert!(clopper_pearson_lower(5, 10, 0.95) < 0.5);
    }
}

/// Serde for f64 values that may be infinite or NaN (JSON has no such numbers):
/// finite values stay numbers, others become the strings "inf", "-inf", "nan".
pub mod lossless_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("nan")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrText {
        Num(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::Num(v) => Ok(v),
            NumOrText::Text(t) => match t.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                other => Err(serde::de::Error::custom(format!(
                    "expected a number, \"inf\", \"-inf\" or \"nan\", found {other:?}"
                ))),
            },
        }
    }
}
