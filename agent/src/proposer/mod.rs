//! Proposers: where changes come from. An [`LlmProposer`] asks a model; the built-in
//! [`OfflineProposer`] walks a search space over the training config. Both return the same
//! [`Proposal`], whose patch went through the same parser.

mod config;
mod llm_proposer;
mod null_change;
mod offline;
mod refine;
mod space;
pub(crate) mod toml_edit;

pub use config::{
    from_config, from_config_with_env, AgentConfig, AnyProposer, ConfigError, ProviderKind,
};
pub use llm_proposer::LlmProposer;

pub use offline::OfflineProposer;
pub use space::{OfflineSpace, SpaceParam};

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::llm::{LlmError, Usage};
use crate::patch::{ParseError, Patch, PatchFormat};
use crate::prompts::error::PromptError;

/// What a proposer sees. `editable_files` always hold the trunk's content: a fix or retry
/// patch replaces the previous patch and applies to these same files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalContext {
    /// `(path relative to the target root, content)`.
    pub editable_files: Vec<(String, String)>,
    /// The trunk's recent changes, oldest first.
    pub history: Vec<HistoryItem>,
    /// Run-to-run standard deviation of the metric, once calibrated.
    pub noise_floor: Option<f64>,
    /// The smallest mean gain the decision rule can accept (v3's `min_effect`), once
    /// calibrated: with paired seeds it is far below the run-to-run spread.
    #[serde(default)]
    pub min_gain: Option<f64>,
    pub budget_left: Duration,
    /// The metric being minimized (the target's `metric`, e.g. `val_bpb`).
    pub metric: String,
    pub request: Request,
    /// What kept failing before the circuit breaker paused the loop (said once after a pause).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// One earlier change and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryItem {
    pub change_id: String,
    pub description: String,
    /// e.g. `accepted`, `rejected`, `crashed`, `policy_rejected`, `build_failed`, `rolled_back`.
    pub outcome: String,
    /// Mean gain, trunk minus candidate (positive = the change lowered the metric).
    pub effect: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Tested against the trunk the new proposal is for (or still in flight). A change tried
    /// on an earlier trunk may be worth trying again once other changes have moved it.
    #[serde(default = "on_this_trunk")]
    pub on_current_trunk: bool,
}

fn on_this_trunk() -> bool {
    true
}

/// What the loop asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    /// A fresh proposal.
    New,
    /// The previous patch did not compile; fix it (the new patch replaces it).
    FixBuild {
        previous_patch: String,
        compiler_errors: String,
    },
    /// The previous reply could not be parsed or applied; `reason` says why.
    Retry {
        previous_reply: String,
        reason: String,
    },
}

/// A proposed change, with everything the ledger's `propose` event records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub description: String,
    pub rationale: String,
    pub patch: Patch,
    /// The patch alone, in its own format.
    pub patch_text: String,
    pub patch_format: PatchFormat,
    /// The model's whole reply (the offline proposer writes one too).
    pub reply_text: String,
    /// `openai`, `anthropic` or `offline`.
    pub provider: String,
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    pub prompt_template_sha256: String,
}

#[derive(Debug, Error)]
pub enum ProposeError {
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    /// The model answered, but its reply is unusable; it was paid for, so usage is kept.
    #[error("the {} reply could not be used: {}", .0.provider, .0.error)]
    BadReply(Box<BadReply>),
    /// The offline search space has nothing left that was not tried.
    #[error("the offline search space is exhausted: all {tried} candidate settings were tried")]
    Exhausted { tried: usize },
    #[error("offline proposer: {0}")]
    Offline(String),
    #[error("{proposer} proposer cannot handle this request: {reason}")]
    Unsupported {
        proposer: &'static str,
        reason: String,
    },
}

/// A reply that could not be parsed, with what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct BadReply {
    /// The reason to send back to the model (`Request::Retry`).
    pub error: ParseError,
    pub reply_text: String,
    pub provider: String,
    pub model: String,
    pub usage: Usage,
}

impl ProposeError {
    /// Tokens and cost spent on a failed proposal (zero when nothing was paid for).
    pub fn usage(&self) -> Usage {
        match self {
            ProposeError::BadReply(bad) => bad.usage,
            _ => Usage::default(),
        }
    }
}

/// Something that proposes changes.
pub trait Proposer {
    fn propose(
        &mut self,
        ctx: &ProposalContext,
    ) -> impl Future<Output = Result<Proposal, ProposeError>> + Send;
}
