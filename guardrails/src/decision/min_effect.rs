//! The minimum effect, in the metric's units or as a share of the trunk's level.

use super::*;

/// The smallest mean gain worth merging, in the metric's units: a number (`0.001`) or a
/// share of the trunk's level (`"0.05%"`, resolved against the calibrated baseline mean).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinEffect {
    Absolute(f64),
    /// Percent of the trunk's metric level.
    RelativePercent(f64),
}

impl MinEffect {
    /// The minimum effect in the metric's units for a trunk at `level`.
    pub fn resolve(self, level: f64) -> f64 {
        match self {
            MinEffect::Absolute(v) => v,
            MinEffect::RelativePercent(p) => p / 100.0 * level.abs(),
        }
    }

    pub(super) fn is_valid(self) -> bool {
        let v = match self {
            MinEffect::Absolute(v) | MinEffect::RelativePercent(v) => v,
        };
        v.is_finite() && v >= 0.0
    }
}

impl std::fmt::Display for MinEffect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MinEffect::Absolute(v) => write!(f, "{v}"),
            MinEffect::RelativePercent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for MinEffect {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MinEffect::Absolute(v) => s.serialize_f64(*v),
            MinEffect::RelativePercent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for MinEffect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NumOrText {
            Num(f64),
            Text(String),
        }
        let bad = |t: &str| {
            serde::de::Error::custom(format!(
                "min_effect {t:?}: expected a number in the metric's units (0.001) or a percent of the trunk's level (\"0.05%\")"
            ))
        };
        let effect = match NumOrText::deserialize(d)? {
            NumOrText::Num(v) => MinEffect::Absolute(v),
            NumOrText::Text(t) => {
                let p = t
                    .trim()
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse::<f64>().ok())
                    .ok_or_else(|| bad(&t))?;
                MinEffect::RelativePercent(p)
            }
        };
        if !effect.is_valid() {
            return Err(bad(&effect.to_string()));
        }
        Ok(effect)
    }
}
