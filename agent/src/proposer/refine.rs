//! Finer steps once a setting's grid is used up on the current trunk: the midpoint between the
//! current value and the nearest value already known on each side (a grid value or an earlier
//! refinement), so repeated rejections bisect towards the current value. Float settings only
//! (an integer midpoint can be a shape the model refuses), and never finer than an eighth of
//! the grid's finest step or 3 % of the current value: below that a change is noise.

use std::collections::BTreeSet;

use super::toml_edit::{as_f64, format_value};

/// Smallest relative step worth a training run.
const RELATIVE_FLOOR: f64 = 0.03;
/// The finest refinement, as a share of the grid's finest step.
const GRID_FRACTION: f64 = 1.0 / 8.0;

/// One refinement: the value to try, and the known value on the far side of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refinement {
    pub value: f64,
    pub towards: f64,
    /// |value - current| relative to the current value (or to the grid's finest step when
    /// the current value is 0): larger is coarser, and coarser steps are tried first.
    pub step: f64,
}

/// The refinements of one float setting around `current`, given its grid and the values
/// already tried on this trunk (formatted as in the config file).
pub fn refinements(
    grid: &[toml::Value],
    current: f64,
    tried: &BTreeSet<String>,
) -> Vec<Refinement> {
    let mut known: Vec<f64> = grid.iter().filter_map(as_f64).collect();
    known.extend(tried.iter().filter_map(|t| t.parse::<f64>().ok()));
    let finest = finest_step(grid);
    let Some(finest) = finest else {
        return Vec::new();
    };
    let floor = (finest * GRID_FRACTION).max(RELATIVE_FLOOR * current.abs());
    let below = known
        .iter()
        .copied()
        .filter(|&v| v < current)
        .fold(None, nearest(current));
    let above = known
        .iter()
        .copied()
        .filter(|&v| v > current)
        .fold(None, nearest(current));
    [below, above]
        .into_iter()
        .flatten()
        .filter_map(|towards| {
            let value = round_significant(midpoint(current, towards), 3);
            let gap = (value - current).abs();
            let fresh =
                value != towards && !tried.contains(&format_value(&toml::Value::Float(value)));
            (gap >= floor && fresh).then(|| Refinement {
                value,
                towards,
                step: gap / current.abs().max(finest),
            })
        })
        .collect()
}

fn nearest(current: f64) -> impl Fn(Option<f64>, f64) -> Option<f64> {
    move |best, v| match best {
        Some(b) if (b - current).abs() <= (v - current).abs() => Some(b),
        _ => Some(v),
    }
}

/// The smallest gap between distinct grid values.
fn finest_step(grid: &[toml::Value]) -> Option<f64> {
    let mut values: Vec<f64> = grid.iter().filter_map(as_f64).collect();
    values.sort_by(f64::total_cmp);
    values
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|&d| d > 0.0)
        .min_by(f64::total_cmp)
}

/// Geometric between two positive values (learning rates live on a log scale), arithmetic
/// otherwise (a fraction or a decay that may be 0).
fn midpoint(a: f64, b: f64) -> f64 {
    if a > 0.0 && b > 0.0 {
        (a * b).sqrt()
    } else {
        (a + b) / 2.0
    }
}

/// `x` to `digits` significant digits, so the config file reads `0.0141`, not
/// `0.01414213562373095`.
fn round_significant(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = digits - 1 - x.abs().log10().floor() as i32;
    if scale >= 0 {
        let f = 10f64.powi(scale);
        (x * f).round() / f
    } else {
        let f = 10f64.powi(-scale);
        (x / f).round() * f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(v: &[f64]) -> Vec<toml::Value> {
        v.iter().map(|&f| toml::Value::Float(f)).collect()
    }

    fn tried(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn midpoints_on_both_sides_then_bisection_towards_the_current_value() {
        let grid = floats(&[0.0025, 0.005, 0.01, 0.02]);
        let first = refinements(&grid, 0.01, &tried(&[]));
        let values: Vec<f64> = first.iter().map(|r| r.value).collect();
        assert_eq!(values, vec![0.00707, 0.0141]);
        // 0.0141 was tried (and rejected): the next step up halves the gap again.
        let next = refinements(&grid, 0.01, &tried(&["0.0141", "0.00707"]));
        let values: Vec<f64> = next.iter().map(|r| r.value).collect();
        assert_eq!(values, vec![0.00841, 0.0119]);
        assert!(next[1].step < first[1].step);
    }

    #[test]
    fn bisection_stops_at_the_floor_so_the_space_ends() {
        let grid = floats(&[0.0025, 0.005, 0.01, 0.02]);
        let mut seen = BTreeSet::new();
        for _ in 0..100 {
            let r = refinements(&grid, 0.01, &seen);
            if r.is_empty() {
                break;
            }
            for x in r {
                assert!((x.value - 0.01).abs() >= 0.0003, "{x:?}");
                seen.insert(format_value(&toml::Value::Float(x.value)));
            }
        }
        assert!(refinements(&grid, 0.01, &seen).is_empty());
        assert!((4..=12).contains(&seen.len()), "{seen:?}");
    }

    #[test]
    fn zero_uses_the_arithmetic_midpoint_and_integer_grids_are_left_alone() {
        let grid = floats(&[0.0, 0.05, 0.1]);
        let r = refinements(&grid, 0.0, &tried(&[]));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].value, 0.025);
        // One value: no step to refine.
        assert!(refinements(&floats(&[0.5]), 0.5, &tried(&[])).is_empty());
    }

    #[test]
    fn significant_digits() {
        assert_eq!(round_significant(0.014142135, 3), 0.0141);
        assert_eq!(round_significant(12345.0, 3), 12300.0);
        assert_eq!(
            format_value(&toml::Value::Float(round_significant(0.70749, 3))),
            "0.707"
        );
    }
}
