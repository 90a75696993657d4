//! agentloop-trainer: a small GPT trainer on candle, the default optimization target of
//! agentloop, with a frozen bits-per-byte evaluation.
//!
//! Editable by the agent: `model.rs`, `optim.rs`, `train.rs` and `config/*.toml`.
//! Frozen: everything else. The editable training code receives only a
//! [`data::BatchSource`] of training batches; the evaluation reaches the model only through
//! [`eval::LanguageModel`]; the validation and holdout tokens need a
//! [`runner::EvalAccess`] that only the runner can create.

pub mod checkpoint;
pub mod compute;
pub mod config;
pub mod contract;
pub mod data;
pub mod eval;
pub mod fused;
pub mod metrics;
pub mod params;
pub mod prepare;
pub mod runner;
pub mod shards;
pub mod tokenizer;

pub mod model;
pub mod optim;
pub mod train;

pub use config::{Budget, CheckpointEvery, Config, Split};
