//! agentloop: an auditable optimization loop over LLM training code.

pub mod llm;
pub mod patch;
pub mod prompts;
pub mod proposer;
#[cfg(feature = "testing")]
pub mod testing;
