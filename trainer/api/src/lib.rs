//! agentloop-trainer-api: the whole of what the editable training recipe (`agentloop-recipe`)
//! can name of the trainer. Frozen.
//!
//! The recipe's dependency graph is candle, this crate and a few pure-compute crates, so it
//! cannot name the data loader, the tokenizer, the evaluator or any file-reading helper: they
//! live in `agentloop-trainer`, which depends on the recipe, never the other way round. Keep
//! it that way: nothing added here may read files, the environment or the evaluation data.
//!
//! - [`contract`]: the training-batch source (train split only), step statistics, the
//!   training trait the runner drives and the model trait the evaluation calls;
//! - [`config`]: the parsed training config (parsed from text; loading the file is the
//!   trainer's job);
//! - [`params`]: seeded parameter initialization; [`compute`], [`fused`]: how training computes;
//! - [`memory`]: device-memory sampling for the reported peak.

pub mod compute;
pub mod config;
pub mod contract;
pub mod fused;
pub mod memory;
pub mod params;
