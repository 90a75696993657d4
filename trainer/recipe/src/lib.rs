//! agentloop-recipe: the training recipe the agent edits (`model.rs`, `optim.rs`, `train.rs`;
//! this file is frozen). It compiles as its own crate against `agentloop-trainer-api` and
//! candle only, so nothing here can name the data loader, the tokenizer, the evaluator or a
//! file-reading helper of the trainer: they are not in this crate's dependency graph.

// The frozen interface, under the names the recipe's modules use (`crate::config`, ...).
use agentloop_trainer_api::{compute, config, contract, fused, memory, params};

pub mod model;
pub mod optim;
pub mod train;
