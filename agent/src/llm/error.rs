use std::time::Duration;

use thiserror::Error;

/// Why a completion failed. Messages never contain the API key (see `redact`).
#[derive(Debug, Clone, Error)]
pub enum LlmError {
    /// A 4xx other than 429: retrying would not help.
    #[error("{provider} rejected the request with HTTP {status}: {message}")]
    Rejected {
        provider: &'static str,
        status: u16,
        message: String,
    },
    /// 429 or 5xx on every attempt.
    #[error("{provider} failed with HTTP {status} on all {attempts} attempts: {message}")]
    GaveUp {
        provider: &'static str,
        status: u16,
        message: String,
        attempts: u32,
        /// The last answer's `Retry-After`, if it had one.
        retry_after: Option<Duration>,
    },
    #[error("{provider} did not answer within {timeout} on all {attempts} attempts")]
    Timeout {
        provider: &'static str,
        timeout: String,
        attempts: u32,
    },
    #[error("cannot reach {provider} at {url} ({attempts} attempts): {message}")]
    Transport {
        provider: &'static str,
        url: String,
        message: String,
        attempts: u32,
    },
    #[error("{provider} sent a reply that cannot be read: {message}")]
    BadResponse {
        provider: &'static str,
        message: String,
    },
    #[error("LLM client settings: {0}")]
    Config(String),
}

/// What a caller should do about a failed completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The provider is down, slow, rate-limiting or answered garbage: wait and ask again.
    Transient,
    /// Asking again cannot help until a setting is fixed.
    Fatal,
}

impl LlmError {
    /// Transient: 429, 408, 5xx, timeouts, connection failures, and 200 answers that cannot be
    /// read (empty, truncated, not JSON, no `choices`, no text, a lone surrogate escape): a
    /// provider in trouble sends all of these. Fatal: every other 4xx and bad settings.
    pub fn class(&self) -> ErrorClass {
        match self {
            LlmError::GaveUp { .. }
            | LlmError::Timeout { .. }
            | LlmError::Transport { .. }
            | LlmError::BadResponse { .. } => ErrorClass::Transient,
            LlmError::Rejected { .. } | LlmError::Config(_) => ErrorClass::Fatal,
        }
    }

    /// The setting to fix, for a fatal error (`[agent] api_key_env` for a 401).
    pub fn setting_to_fix(&self) -> Option<&'static str> {
        match self {
            LlmError::Rejected { status, .. } => Some(match status {
                401 | 403 => {
                    "`[agent] api_key_env` (the variable that holds a valid key for this provider)"
                }
                404 => "`[agent] model` (a model this endpoint serves) or `[agent] base_url`",
                413 => "`[agent] max_tokens` or the editable files (the request is too large)",
                _ => "`[agent] model`, `[agent] max_tokens` or `[agent] temperature` (the provider refused the request as invalid)",
            }),
            LlmError::Config(_) => Some("the `[agent]` table of agentloop.toml"),
            _ => None,
        }
    }

    /// How long the provider asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::GaveUp { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status behind the error, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            LlmError::Rejected { status, .. } | LlmError::GaveUp { status, .. } => Some(*status),
            _ => None,
        }
    }
}
