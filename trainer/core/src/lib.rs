//! agentloop-trainer-core: the frozen machinery of the trainer: the runner, the data loader,
//! the tokenizers, the evaluation, checkpoints and metrics.
//!
//! Four crates, so that the agent's code cannot reach the evaluation data:
//! - `agentloop-recipe` (`trainer/recipe/`): `model.rs`, `optim.rs`, `train.rs`, EDITABLE by
//!   the agent (with `config/*.toml`). It depends only on candle and
//! - `agentloop-trainer-api` (`trainer/api/`, frozen): train batches, the parsed config, step
//!   statistics, seeded parameters and fused compute ops; nothing there reads files.
//! - this crate (frozen), which depends on neither the recipe nor the binary: the recipe's
//!   training code comes in as a [`runner::BuildTraining`] function, so a patch to the recipe
//!   recompiles neither this crate nor its dependencies. Its validation and holdout tokens
//!   further need a [`runner::access::EvalAccess`] only the runner creates, and the evaluation
//!   reaches the model only through [`eval::LanguageModel`].
//! - `agentloop-trainer` (`trainer/`, frozen): the binary, which hands the recipe to the runner.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod flops;
pub mod metrics;
pub mod prepare;
pub mod runner;
pub mod shards;
pub mod stateless;
pub mod tokenizer;

pub use agentloop_trainer_api::{compute, contract, fused, params};

pub use config::{Budget, CheckpointEvery, Config, Split};
