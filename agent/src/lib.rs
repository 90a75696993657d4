//! agentloop: an auditable optimization loop over LLM training code.

pub mod commands;
