//! agentloop: an auditable optimization loop over LLM training code.

pub mod llm;
pub mod patch;
pub mod progress;
pub mod prompts;
pub mod proposer;
pub mod report;
#[cfg(feature = "testing")]
pub mod testing;
