//! agentloop-trainer: a small GPT trainer on candle, the default optimization target of
//! agentloop, with a frozen bits-per-byte evaluation. This crate only joins the frozen core
//! (`agentloop-trainer-core`) and the agent's recipe (`agentloop-recipe`) under one name for
//! the binary, the tests and the benchmarks; see the core's documentation for the boundary.

pub use agentloop_recipe::{model, optim, train};
pub use agentloop_trainer_core::*;
