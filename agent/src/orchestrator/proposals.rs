//! What the loop needs from a proposer, in the loop's own terms. `agent_adapter` connects it
//! to the agent's LLM and offline proposers and to the patch parser.

use std::time::Duration;

// The proposer's own types, defined once there: what it is asked for (`Ask` is the proposer's
// `Request`) and the trunk's earlier changes it is shown.
pub use crate::proposer::{HistoryItem, Request as Ask};

#[derive(Debug, Clone)]
pub struct Context {
    pub editable_files: Vec<(String, String)>,
    pub history: Vec<HistoryItem>,
    pub noise_floor: Option<f64>,
    pub min_gain: Option<f64>,
    pub budget_left: Duration,
    pub ask: Ask,
    /// What kept failing before the circuit breaker paused the loop, told to the agent once
    /// the loop resumes (`None` otherwise).
    pub notice: Option<String>,
}

/// The provider itself failed (no reply to record). `transient`: it is down, slow,
/// rate-limiting or answered garbage, so the loop waits and asks again; otherwise asking
/// again cannot help and `message` names the setting to fix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderFailure {
    pub transient: bool,
    /// The HTTP status of the last answer, if there was one.
    pub status: Option<u16>,
    /// How long the provider asked us to wait (`Retry-After`), if it said.
    pub retry_after: Option<Duration>,
    /// Scrubbed of the API key.
    pub message: String,
}

/// A reply, whether or not its patch turns out to apply.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub description: String,
    pub rationale: String,
    /// The patch as text (what the ledger stores and what `apply` reads).
    pub patch_text: String,
    pub patch_format: String,
    /// Why the reply holds no usable patch (a malformed reply), if so.
    pub malformed: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    pub prompt_template_sha256: Option<String>,
}

/// One file after a patch; `after: None` deletes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Edit {
    pub path: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

pub trait Proposals {
    /// One reply; `None` when there is nothing left to propose (the offline search space is
    /// exhausted). `Err` only for failures of the provider itself (network, auth, quota),
    /// as a [`ProviderFailure`] when the proposer can tell whether waiting would help.
    fn propose(&mut self, ctx: &Context) -> anyhow::Result<Option<Reply>>;

    /// `offline`, `openai`, `anthropic`: recorded in the session_start event.
    fn kind(&self) -> &str;

    /// Applies a stored patch text to files read through `read`; `Err` says why not, in words
    /// a model can act on.
    fn apply(
        &self,
        patch_text: &str,
        read: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<Edit>, String>;
}

/// The proposer as the change runners of a session see it: shared by worker threads and asked
/// one at a time.
pub trait ProposalSource: Sync {
    fn propose(&self, ctx: &Context) -> anyhow::Result<Option<Reply>>;
    fn apply(
        &self,
        patch_text: &str,
        read: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<Edit>, String>;
}

/// A proposer behind a mutex: whichever worker asks first is answered first.
pub struct SharedProposals<'p>(std::sync::Mutex<&'p mut (dyn Proposals + Send)>);

impl<'p> SharedProposals<'p> {
    pub fn new(inner: &'p mut (dyn Proposals + Send)) -> SharedProposals<'p> {
        SharedProposals(std::sync::Mutex::new(inner))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, &'p mut (dyn Proposals + Send)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ProposalSource for SharedProposals<'_> {
    fn propose(&self, ctx: &Context) -> anyhow::Result<Option<Reply>> {
        self.lock().propose(ctx)
    }

    fn apply(
        &self,
        patch_text: &str,
        read: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<Edit>, String> {
        self.lock().apply(patch_text, read)
    }
}
