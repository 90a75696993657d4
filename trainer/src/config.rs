//! Parsing of the training config file and of the command-line quantities (budget, split,
//! checkpoint interval). Frozen: the agent edits the numbers in `config/default.toml`, never
//! the set of keys, so every config it writes is checked here the same way.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: `{field}` {reason}")]
    Invalid {
        path: PathBuf,
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
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates; `origin` only names the source in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, reason: String| ConfigError::Invalid {
            path: origin.to_path_buf(),
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

/// How long a run trains: `30s` of wall clock, `200steps`, or `500000tokens`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    Seconds(f64),
    Steps(u64),
    Tokens(u64),
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid {what} `{input}`: {expected}")]
pub struct ParseError {
    what: &'static str,
    input: String,
    expected: &'static str,
}

fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

impl FromStr for Budget {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseError {
            what: "budget",
            input: s.to_string(),
            expected: "expected e.g. `30s`, `200steps` or `500000tokens` (a positive number)",
        };
        let (number, unit) = split_number(s.trim());
        let budget = match unit {
            "s" => Budget::Seconds(number.parse().map_err(|_| err())?),
            "steps" => Budget::Steps(number.parse().map_err(|_| err())?),
            "tokens" => Budget::Tokens(number.parse().map_err(|_| err())?),
            _ => return Err(err()),
        };
        let positive = match budget {
            Budget::Seconds(s) => s.is_finite() && s > 0.0,
            Budget::Steps(n) | Budget::Tokens(n) => n > 0,
        };
        positive.then_some(budget).ok_or_else(err)
    }
}

/// Which split the final evaluation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Val,
    Holdout,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Val => "val",
            Split::Holdout => "holdout",
        }
    }
}

impl FromStr for Split {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "val" => Ok(Split::Val),
            "holdout" => Ok(Split::Holdout),
            _ => Err(ParseError {
                what: "split",
                input: s.to_string(),
                expected: "expected `val` or `holdout`",
            }),
        }
    }
}

/// `--checkpoint-every`: `50` or `50steps` (optimizer steps), or `30s` (wall clock).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CheckpointEvery {
    Steps(u64),
    Seconds(f64),
}

impl FromStr for CheckpointEvery {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseError {
            what: "checkpoint interval",
            input: s.to_string(),
            expected: "expected `50`, `50steps` or `30s` (a positive number)",
        };
        let (number, unit) = split_number(s.trim());
        let every = match unit {
            "" | "steps" => CheckpointEvery::Steps(number.parse().map_err(|_| err())?),
            "s" => CheckpointEvery::Seconds(number.parse().map_err(|_| err())?),
            _ => return Err(err()),
        };
        let positive = match every {
            CheckpointEvery::Steps(n) => n > 0,
            CheckpointEvery::Seconds(s) => s.is_finite() && s > 0.0,
        };
        positive.then_some(every).ok_or_else(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_in_all_three_units_and_refuse_garbage() {
        assert_eq!("30s".parse::<Budget>(), Ok(Budget::Seconds(30.0)));
        assert_eq!("200steps".parse::<Budget>(), Ok(Budget::Steps(200)));
        assert_eq!("60000tokens".parse::<Budget>(), Ok(Budget::Tokens(60000)));
        for bad in ["", "30", "0steps", "-5s", "10minutes", "1.5steps"] {
            let err = bad.parse::<Budget>().unwrap_err().to_string();
            assert!(err.contains("budget"), "{bad}: {err}");
        }
        assert_eq!(
            "7".parse::<CheckpointEvery>(),
            Ok(CheckpointEvery::Steps(7))
        );
        assert_eq!(
            "2.5s".parse::<CheckpointEvery>(),
            Ok(CheckpointEvery::Seconds(2.5))
        );
        assert!("0".parse::<CheckpointEvery>().is_err());
    }

    #[test]
    fn default_config_parses_and_unknown_or_bad_keys_are_named() {
        let default = include_str!("../config/default.toml");
        let config = Config::parse(default, Path::new("default.toml")).unwrap();
        assert!(config.model.vocab_size >= 257);

        let typo = default.replace("batch_size", "batch_sise");
        let err = Config::parse(&typo, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.toml") && err.contains("batch_sise"),
            "{err}"
        );

        let odd_heads = default.replace(
            &format!("heads = {}", config.model.heads),
            &format!("heads = {}", config.model.width),
        );
        let err = Config::parse(&odd_heads, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.heads"), "{err}");
    }
}
