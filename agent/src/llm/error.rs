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

impl LlmError {
    /// The HTTP status behind the error, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            LlmError::Rejected { status, .. } | LlmError::GaveUp { status, .. } => Some(*status),
            _ => None,
        }
    }
}
