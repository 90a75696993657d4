//! agentloop-trainer: a small GPT trainer on candle, the default optimization target of
//! agentloop, with a frozen bits-per-byte evaluation.
//!
//! Three crates, so that the agent's code cannot reach the evaluation data:
//! - `agentloop-recipe` (`trainer/recipe/`): `model.rs`, `optim.rs`, `train.rs`, EDITABLE by
//!   the agent (with `config/*.toml`). It depends only on candle and
//! - `agentloop-trainer-api` (`trainer/api/`, frozen): train batches, the parsed config, step
//!   statistics, seeded parameters and fused compute ops; nothing there reads files.
//! - this crate (frozen): the runner, the data loader, the tokenizers, the evaluation,
//!   checkpoints and metrics. It depends on the recipe, never the other way round. Its
//!   validation and holdout tokens further need a [`runner::EvalAccess`] only the runner
//!   creates, and the evaluation reaches the model only through [`eval::LanguageModel`].

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod metrics;
pub mod prepare;
pub mod runner;
pub mod shards;
pub mod stateless;
pub mod tokenizer;

pub use agentloop_recipe::{model, optim, train};
pub use agentloop_trainer_api::{compute, contract, fused, params};

pub use config::{Budget, CheckpointEvery, Config, Split};
