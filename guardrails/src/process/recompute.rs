//! `ledger verify`'s check: a stored decision recomputed from its own inputs.

use super::*;

/// Re-runs the rule on the inputs stored in a decision (as the ledger holds it) and checks
/// that the calibration, every statistic and the verdict come out the same.
pub fn recompute(decision_json: &serde_json::Value) -> Result<(), String> {
    let stored: Decision = serde_json::from_value(decision_json.clone())
        .map_err(|e| format!("not a decision record: {e}"))?;
    if stored.rule_version != stored.rule.rule_version {
        return Err(format!(
            "rule_version {:?} differs from the stored rule's {:?}",
            stored.rule_version, stored.rule.rule_version
        ));
    }
    let calibration = Calibration::from_runs_for(
        &stored.rule,
        &stored.calibration.baseline,
        &stored.calibration.replays,
    )
    .map_err(|e| format!("calibration does not recompute: {e}"))?;
    let process = match (&stored.common, stored.rule.uses_common_control()) {
        (Some(common), true) => {
            DecisionProcess::with_common_control(stored.rule.clone(), calibration, common.clone())
        }
        (None, true) => {
            return Err(format!(
                "a {} decision without its common control",
                stored.rule_version
            ))
        }
        (Some(_), false) => {
            return Err(format!(
                "rule_version {:?} has no common control, but the record holds one",
                stored.rule_version
            ))
        }
        (None, false) => DecisionProcess::new(stored.rule.clone(), calibration),
    };
    let mut process = process.map_err(|e| format!("stored rule is invalid: {e}"))?;
    for (i, obs) in stored.observations.iter().enumerate() {
        process
            .add_result(*obs)
            .map_err(|e| format!("observation {i} cannot be replayed: {e}"))?;
    }
    let Some(recomputed) = process.decision() else {
        return Err("the stored observations do not reach a decision".into());
    };
    let a = serde_json::to_value(recomputed).map_err(|e| e.to_string())?;
    let b = serde_json::to_value(&stored).map_err(|e| e.to_string())?;
    match first_difference(&a, &b, "") {
        None => Ok(()),
        Some(path) => Err(format!(
            "recomputed decision differs at {path}: stored {}, recomputed {}",
            lookup(&b, &path),
            lookup(&a, &path)
        )),
    }
}

/// Floats may lose their last bit through JSON text, so numbers compare with a relative tolerance.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value as V;
    match (a, b) {
        (V::Number(x), V::Number(y)) => {
            let (x, y) = (x.as_f64()?, y.as_f64()?);
            let close = x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs());
            (!close).then(|| path.to_string())
        }
        (V::Object(x), V::Object(y)) => {
            if x.len() != y.len() {
                return Some(path.to_string());
            }
            x.iter().find_map(|(k, v)| match y.get(k) {
                None => Some(format!("{path}/{k}")),
                Some(w) => first_difference(v, w, &format!("{path}/{k}")),
            })
        }
        (V::Array(x), V::Array(y)) => {
            if x.len() != y.len() {
                return Some(path.to_string());
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (v, w))| first_difference(v, w, &format!("{path}/{i}")))
        }
        _ => (a != b).then(|| path.to_string()),
    }
}

fn lookup(v: &serde_json::Value, path: &str) -> String {
    v.pointer(path)
        .map(|x| x.to_string())
        .unwrap_or_else(|| "nothing".into())
}
