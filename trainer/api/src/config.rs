//! The training configuration (`trainer/config/*.toml`), parsed from text and validated.
//! Frozen: the agent edits the numbers in the config file, never the set of keys, so every
//! config it writes is checked here the same way. Reading the file is the trainer's job
//! (`agentloop_trainer::config::load`): nothing here touches the file system.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("config file {path}: `{field}` {reason}")]
    Invalid {
        path: String,
        field: &'static str,
        reason: String,
    },
}

/// The whole training configuration (`config/default.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub model: ModelConfig,
    pub optim: OptimConfig,
    pub train: TrainConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Number of transformer blocks.
    pub depth: usize,
    /// Residual stream width (model dimension).
    pub width: usize,
    /// Attention heads; `width / heads` must be even (rotary embedding).
    pub heads: usize,
    /// Context length in tokens, for training and for evaluation windows.
    pub seq_len: usize,
    /// Rows of the embedding / columns of the output head; at least the tokenizer's vocabulary.
    pub vocab_size: usize,
    /// Logit soft-capping: logits = softcap * tanh(logits / softcap); 0 disables it.
    pub softcap: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// AdamW for every parameter.
    Adamw,
    /// Muon for the matrices inside the blocks, AdamW for embedding and output head.
    Muon,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub optimizer: OptimizerKind,
    /// Peak learning rate of the block matrices (AdamW, or Muon when selected).
    pub lr: f64,
    /// Peak learning rate of the token embedding and the output head (always AdamW).
    pub embed_lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Fraction of the budget spent ramping the learning rate up linearly from 0.
    pub warmup_frac: f64,
    /// Fraction of the budget, at the end, spent decaying it linearly to 0.
    pub warmdown_frac: f64,
    /// Global gradient-norm clipping threshold; 0 disables clipping.
    pub grad_clip: f64,
    /// Muon momentum (Nesterov); ignored by AdamW.
    #[serde(default = "default_muon_momentum")]
    pub muon_momentum: f64,
}

fn default_muon_momentum() -> f64 {
    0.95
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Sequences per optimizer step; tokens per step = batch_size * seq_len.
    pub batch_size: usize,
}

impl Config {
    /// Parses and validates; `origin` only names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, reason: String| ConfigError::Invalid {
            path: origin.to_string(),
            field,
            reason,
        };
        let m = &self.model;
        for (field, value) in [
            ("model.depth", m.depth),
            ("model.width", m.width),
            ("model.heads", m.heads),
            ("model.seq_len", m.seq_len),
            ("model.vocab_size", m.vocab_size),
            ("train.batch_size", self.train.batch_size),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1".into()));
            }
        }
        if m.width % m.heads != 0 || (m.width / m.heads) % 2 != 0 {
            return Err(invalid(
                "model.heads",
                format!(
                    "must divide width {} into heads of even size (got {} heads)",
                    m.width, m.heads
                ),
            ));
        }
        if !(m.softcap.is_finite() && m.softcap >= 0.0) {
            return Err(invalid("model.softcap", "must be >= 0".into()));
        }
        let o = &self.optim;
        for (field, value) in [
            ("optim.lr", o.lr),
            ("optim.embed_lr", o.embed_lr),
            ("optim.weight_decay", o.weight_decay),
            ("optim.grad_clip", o.grad_clip),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(invalid(
                    field,
                    format!("must be a finite number >= 0, got {value}"),
                ));
            }
        }
        for (field, value) in [
            ("optim.beta1", o.beta1),
            ("optim.beta2", o.beta2),
            ("optim.muon_momentum", o.muon_momentum),
            ("optim.warmup_frac", o.warmup_frac),
            ("optim.warmdown_frac", o.warmdown_frac),
        ] {
            let allowed_one = value == 1.0 && field.ends_with("_frac");
            if !((0.0..1.0).contains(&value) || allowed_one) {
                return Err(invalid(field, format!("must lie in [0, 1), got {value}")));
            }
        }
        if o.warmup_frac + o.warmdown_frac > 1.0 {
            return Err(invalid(
                "optim.warmdown_frac",
                "warmup_frac + warmdown_frac must not exceed 1".into(),
            ));
        }
        Ok(())
    }

    /// A stable hash of the parsed values, stored in checkpoints so that a resume with a
    /// different config is refused.
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::to_string(self).expect("config serializes");
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }

    pub fn tokens_per_step(&self) -> u64 {
        (self.train.batch_size * self.model.seq_len) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_parses_and_unknown_or_bad_keys_are_named() {
        let default = include_str!("../../config/default.toml");
        let config = Config::parse(default, "default.toml").unwrap();
        assert!(config.model.vocab_size >= 257);

        let typo = default.replace("batch_size", "batch_sise");
        let err = Config::parse(&typo, "x.toml").unwrap_err().to_string();
        assert!(
            err.contains("x.toml") && err.contains("batch_sise"),
            "{err}"
        );

        let odd_heads = default.replace(
            &format!("heads = {}", config.model.heads),
            &format!("heads = {}", config.model.width),
        );
        let err = Config::parse(&odd_heads, "x.toml").unwrap_err().to_string();
        assert!(err.contains("model.heads"), "{err}");
    }
}
