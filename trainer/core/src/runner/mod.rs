//! One training run: load inputs, train within the budget, fail fast on divergence,
//! checkpoint, then either evaluate on the requested split and write `metrics.json` (`train
//! --split S`), or save the final checkpoint and `train_metrics.json` without ever opening the
//! evaluation data (`train` alone; `eval` then scores the checkpoint in another process, see
//! `evaluate_run`). Frozen.
//!
//! `run.rs` is the `train` entry point, `training_loop.rs` the loop it drives (its counters and
//! blow-up rules in `progress.rs`), `watchdog.rs` the `--timeout` handling, `evaluate.rs` the
//! `eval` entry point, `inputs.rs` the loading of inputs, `outcome.rs` how a run ended,
//! `records.rs` the records written, and `access.rs` the [`EvalAccess`] token.

pub mod access;
mod evaluate;
mod inputs;
mod outcome;
mod progress;
mod records;
mod run;
mod training_loop;
mod watchdog;

pub use access::EvalAccess;
pub use evaluate::{evaluate_run, EvalArgs};
pub use run::run;

use crate::compute::{Compute, FusedChoice, Precision};
use crate::config::{Budget, CheckpointEvery, Config, Split};
use crate::contract::Training;
use candle_core::Device;
use std::path::PathBuf;
use std::time::Duration;

/// Exit code for bad input or usage (no metrics are written).
pub const EXIT_BAD_INPUT: i32 = 2;

/// How the runner builds the editable training code: the recipe's `train::build_with` (model,
/// optimizer and step for a config, device, seed and computation), handed in by the binary so
/// that this crate does not depend on the recipe.
pub type BuildTraining =
    fn(&Config, &Device, u64, Compute) -> candle_core::Result<Box<dyn Training>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

#[derive(Debug, Clone)]
pub struct RunArgs {
    pub seed: u64,
    /// The split of the final evaluation; `None` trains only (see the module doc).
    pub split: Option<Split>,
    pub budget: Budget,
    pub out: PathBuf,
    pub config: PathBuf,
    pub data: PathBuf,
    pub resume: bool,
    pub checkpoint_every: Option<CheckpointEvery>,
    pub timeout: Option<Duration>,
    pub device: DeviceKind,
    /// `--dtype`: the training compute dtype (auto: bf16 on CUDA, f32 on CPU).
    pub precision: Precision,
    /// `--fused`: the fused kernels (auto: on, CUDA and CPU).
    pub fused: FusedChoice,
}

/// Written by a train-only run: the training side of its metrics, merged by `eval`.
pub const TRAIN_METRICS: &str = "train_metrics.json";

/// Default `--config`, relative to the current directory (the loop runs in the repo root).
pub const DEFAULT_CONFIG: &str = "trainer/config/default.toml";
/// Default `--data`, relative to the current directory.
pub const DEFAULT_DATA: &str = "trainer/data/shakespeare";
