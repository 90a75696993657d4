//! The offline proposer's search space, from the target's `agentloop.toml`:
//!
//! ```toml
//! [proposer.offline]
//! file = "trainer/config/default.toml"
//! [[proposer.offline.space]]
//! key = "optim.lr"
//! values = [0.001, 0.002, 0.004, 0.008]
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineSpace {
    /// The TOML config file the proposer edits, relative to the target root.
    pub file: String,
    pub space: Vec<SpaceParam>,
    /// Share of proposals that are null changes (a comment added or reworded, no setting
    /// changed), as real model output has them; 0 (the default) for none. For benchmarks.
    #[serde(default)]
    pub null_fraction: f64,
}

/// One dimension: a `section.key` of the config file and the values it may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpaceParam {
    pub key: String,
    pub values: Vec<toml::Value>,
}

#[derive(Debug, Error)]
pub enum SpaceError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("agentloop.toml is not valid TOML: {0}")]
    Toml(String),
    #[error("[proposer.offline] in agentloop.toml: {0}")]
    Invalid(String),
}

impl OfflineSpace {
    /// Reads `[proposer.offline]` from an `agentloop.toml` text; `Ok(None)` when absent.
    pub fn from_agentloop_toml(text: &str) -> Result<Option<Self>, SpaceError> {
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| SpaceError::Toml(e.to_string()))?;
        let Some(offline) = doc.get("proposer").and_then(|p| p.get("offline")) else {
            return Ok(None);
        };
        let space: OfflineSpace = offline
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| SpaceError::Invalid(e.message().to_string()))?;
        space.validate()?;
        Ok(Some(space))
    }

    /// Reads `<target_root>/agentloop.toml`.
    pub fn load(target_root: &Path) -> Result<Option<Self>, SpaceError> {
        let path = target_root.join("agentloop.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| SpaceError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_agentloop_toml(&text)
    }

    pub fn validate(&self) -> Result<(), SpaceError> {
        let invalid = |m: String| Err(SpaceError::Invalid(m));
        if self.file.trim().is_empty() {
            return invalid("`file` is empty".into());
        }
        if self.space.is_empty() {
            return invalid("`space` has no entries".into());
        }
        if !(0.0..1.0).contains(&self.null_fraction) {
            return invalid(format!(
                "`null_fraction` must be at least 0 and below 1, got {}",
                self.null_fraction
            ));
        }
        for (i, p) in self.space.iter().enumerate() {
            if p.key.trim().is_empty() || p.key.split('.').any(str::is_empty) {
                return invalid(format!(
                    "space entry {}: `key` must look like `section.key`, got `{}`",
                    i + 1,
                    p.key
                ));
            }
            if p.values.is_empty() {
                return invalid(format!(
                    "space entry {} ({}): `values` is empty",
                    i + 1,
                    p.key
                ));
            }
            if let Some(v) = p
                .values
                .iter()
                .find(|v| v.is_table() || v.is_array() || v.is_datetime())
            {
                return invalid(format!(
                    "space entry {} ({}): value {v} is not a number, string or boolean",
                    i + 1,
                    p.key
                ));
            }
        }
        Ok(())
    }

    /// Number of `(key, value)` settings in the space.
    pub fn size(&self) -> usize {
        self.space.iter().map(|p| p.values.len()).sum()
    }
}
