//! LLM providers over HTTP: an OpenAI-compatible chat-completions client (OpenAI, vLLM,
//! Ollama, llama.cpp server, OpenRouter) and the Anthropic Messages API.
//!
//! One [`LlmClient`] does both: the wire formats differ ([`openai`], [`anthropic`]), the
//! transport does not ([`transport`]: timeouts, retries with backoff and jitter, `Retry-After`,
//! clear errors). API keys live in [`ApiKey`], which never prints itself, and every error
//! message is scrubbed of the key before it leaves this module.

mod anthropic;
mod error;
mod openai;
mod redact;
mod transport;

pub use error::{ErrorClass, LlmError};
pub use transport::RetryPolicy;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Who wrote a message in the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// The two wire protocols we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `POST {base_url}/chat/completions`, `Authorization: Bearer`.
    OpenAi,
    /// `POST {base_url}/v1/messages`, `x-api-key`, `anthropic-version`.
    Anthropic,
}

impl Api {
    pub fn name(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
        }
    }

    pub fn default_base_url(self) -> &'static str {
        match self {
            Api::OpenAi => "https://api.openai.com/v1",
            Api::Anthropic => "https://api.anthropic.com",
        }
    }

    pub fn default_key_env(self) -> &'static str {
        match self {
            Api::OpenAi => "OPENAI_API_KEY",
            Api::Anthropic => "ANTHROPIC_API_KEY",
        }
    }
}

/// An API key. Its `Debug` output is redacted so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

/// USD prices per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Pricing {
    pub prompt_per_mtok: f64,
    pub completion_per_mtok: f64,
}

impl Pricing {
    pub fn cost_usd(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.prompt_per_mtok
            + completion_tokens as f64 * self.completion_per_mtok)
            / 1e6
    }
}

/// Tokens and money spent on one completion (retries that failed are not billed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

/// A successful completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub text: String,
    /// The model the server says answered (falls back to the one asked for).
    pub model: String,
    pub usage: Usage,
    /// HTTP attempts it took, retries included.
    pub attempts: u32,
}

/// Everything an [`LlmClient`] needs.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub api: Api,
    /// Without the endpoint path: `https://api.openai.com/v1`, `http://localhost:11434/v1`,
    /// `https://api.anthropic.com`.
    pub base_url: String,
    pub model: String,
    /// `None` for local servers that need no key.
    pub api_key: Option<ApiKey>,
    /// For one HTTP attempt, connection to last byte.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub pricing: Pricing,
    /// Anthropic requires it (default 8192); omitted for OpenAI-compatible servers when unset.
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
}

/// A chat client for one provider and model.
#[derive(Debug, Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    settings: ClientSettings,
}

impl LlmClient {
    pub fn new(settings: ClientSettings) -> Result<Self, LlmError> {
        let url = reqwest::Url::parse(&settings.base_url).map_err(|e| {
            LlmError::Config(format!(
                "base_url `{}` is not a URL: {e}",
                settings.base_url
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(LlmError::Config(format!(
                "base_url `{}` must start with http:// or https://",
                settings.base_url
            )));
        }
        if settings.timeout.is_zero() {
            return Err(LlmError::Config("timeout must be greater than zero".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("agentloop/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(LlmClient { http, settings })
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// `openai` or `anthropic`.
    pub fn provider(&self) -> &'static str {
        self.settings.api.name()
    }

    pub fn model(&self) -> &str {
        &self.settings.model
    }

    /// Sends the conversation and returns the reply text with its usage and cost.
    pub async fn complete(&self, messages: &[ChatMessage]) -> Result<Completion, LlmError> {
        let s = &self.settings;
        let (url, body) = match s.api {
            Api::OpenAi => openai::request(s, messages),
            Api::Anthropic => anthropic::request(s, messages),
        };
        let headers = match s.api {
            Api::OpenAi => openai::headers(s.api_key.as_ref())?,
            Api::Anthropic => anthropic::headers(s.api_key.as_ref())?,
        };
        let call = transport::Call {
            http: &self.http,
            provider: s.api.name(),
            url: &url,
            headers: &headers,
            body: &body,
            timeout: s.timeout,
            retry: &s.retry,
            secret: s.api_key.as_ref(),
        };
        let (json, attempts) = call.send().await?;
        let parsed = match s.api {
            Api::OpenAi => openai::parse_response(&json),
            Api::Anthropic => anthropic::parse_response(&json),
        }
        .map_err(|message| LlmError::BadResponse {
            provider: s.api.name(),
            message: redact::scrub(&message, s.api_key.as_ref()),
        })?;
        Ok(Completion {
            text: parsed.text,
            model: parsed.model.unwrap_or_else(|| s.model.clone()),
            usage: Usage {
                prompt_tokens: parsed.prompt_tokens,
                completion_tokens: parsed.completion_tokens,
                cost_usd: s
                    .pricing
                    .cost_usd(parsed.prompt_tokens, parsed.completion_tokens),
            },
            attempts,
        })
    }
}

/// What a provider-specific parser extracts from a successful response body.
struct ParsedResponse {
    text: String,
    model: Option<String>,
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// `base` + `path` without doubled or missing slashes.
fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}
