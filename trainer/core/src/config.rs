//! Loading the training config file (its parsing and validation are in
//! `agentloop_trainer_api::config`, which the recipe sees too) and the command-line quantities
//! (budget, split, checkpoint interval). Frozen.

pub use agentloop_trainer_api::config::{
    Config, ConfigError, ModelConfig, OptimConfig, OptimizerKind, TrainConfig,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Config::parse(&text, &path.display().to_string())?)
}

/// How long a run trains: `30s` or `5m` of wall clock, `200steps`, `500000tokens`, or `2.0e12flops` of
/// analytic training compute (`crate::flops`), the same on every machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    Seconds(f64),
    Steps(u64),
    Tokens(u64),
    Flops(f64),
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
            expected: "expected e.g. `30s`, `200steps`, `500000tokens` or `2e12flops` (positive)",
        };
        if let Some(number) = s.trim().strip_suffix("flops") {
            // A float with an exponent; `inf`, `nan` and signs are refused below or here.
            let flops: f64 = number
                .parse()
                .ok()
                .filter(|_| number.starts_with(|c: char| c.is_ascii_digit()))
                .ok_or_else(err)?;
            return (flops.is_finite() && flops > 0.0)
                .then_some(Budget::Flops(flops))
                .ok_or_else(err);
        }
        let (number, unit) = split_number(s.trim());
        let budget = match unit {
            "s" => Budget::Seconds(number.parse().map_err(|_| err())?),
            "m" => Budget::Seconds(60.0 * number.parse::<f64>().map_err(|_| err())?),
            "steps" => Budget::Steps(number.parse().map_err(|_| err())?),
            "tokens" => Budget::Tokens(number.parse().map_err(|_| err())?),
            _ => return Err(err()),
        };
        let positive = match budget {
            Budget::Seconds(s) => s.is_finite() && s > 0.0,
            Budget::Steps(n) | Budget::Tokens(n) => n > 0,
            Budget::Flops(f) => f.is_finite() && f > 0.0,
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
        assert_eq!("5m".parse::<Budget>(), Ok(Budget::Seconds(300.0)));
        assert_eq!("2.0e12flops".parse::<Budget>(), Ok(Budget::Flops(2.0e12)));
        assert_eq!("5000flops".parse::<Budget>(), Ok(Budget::Flops(5000.0)));
        for bad in [
            "",
            "30",
            "0steps",
            "-5s",
            "10minutes",
            "1.5steps",
            "flops",
            "0flops",
            "-1e12flops",
            "infflops",
            "nanflops",
            "1e400flops",
        ] {
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
}
