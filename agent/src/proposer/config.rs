//! `[agent]` configuration and the choice of proposer.
//!
//! ```toml
//! [agent]
//! provider = "openai"                    # openai | anthropic | offline (default offline)
//! base_url = "http://localhost:11434/v1" # optional; defaults to the provider's public API
//! model = "qwen2.5-coder:32b"
//! api_key_env = "OPENAI_API_KEY"         # default per provider
//! timeout = "120s"
//! max_retries = 4
//! price_prompt_per_mtok = 0.15
//! price_completion_per_mtok = 0.60
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use super::{
    LlmProposer, OfflineProposer, OfflineSpace, Proposal, ProposalContext, ProposeError, Proposer,
};
use crate::llm::{Api, ApiKey, ClientSettings, LlmClient, LlmError, Pricing, RetryPolicy};
use crate::prompts::error::PromptError;
use crate::prompts::Templates;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
    #[default]
    Offline,
}

impl ProviderKind {
    fn api(self) -> Option<Api> {
        match self {
            ProviderKind::OpenAi => Some(Api::OpenAi),
            ProviderKind::Anthropic => Some(Api::Anthropic),
            ProviderKind::Offline => None,
        }
    }
}

impl std::str::FromStr for ProviderKind {
    type Err = ConfigError;

    /// For the `--agent` flag.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "openai" => Ok(ProviderKind::OpenAi),
            "anthropic" => Ok(ProviderKind::Anthropic),
            "offline" => Ok(ProviderKind::Offline),
            other => Err(ConfigError::Invalid(format!(
                "unknown agent provider `{other}` (expected openai, anthropic or offline)"
            ))),
        }
    }
}

/// The `[agent]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    pub provider: ProviderKind,
    pub base_url: Option<String>,
    pub model: Option<String>,
    /// Name of the environment variable holding the key (never the key itself).
    pub api_key_env: Option<String>,
    #[serde(deserialize_with = "duration", serialize_with = "serialize_duration")]
    pub timeout: Duration,
    pub max_retries: u32,
    #[serde(deserialize_with = "duration", serialize_with = "serialize_duration")]
    pub retry_base_delay: Duration,
    pub price_prompt_per_mtok: f64,
    pub price_completion_per_mtok: f64,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// Seed of the offline proposer's tie-breaking.
    pub seed: u64,
    /// A directory with the user's own prompt templates instead of the built-in ones.
    pub prompts_dir: Option<PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            provider: ProviderKind::Offline,
            base_url: None,
            model: None,
            api_key_env: None,
            timeout: Duration::from_secs(120),
            max_retries: 4,
            retry_base_delay: Duration::from_secs(1),
            price_prompt_per_mtok: 0.0,
            price_completion_per_mtok: 0.0,
            max_tokens: None,
            temperature: None,
            seed: 0,
            prompts_dir: None,
        }
    }
}

impl AgentConfig {
    /// Reads the `[agent]` table of a TOML document (defaults when absent).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        let cfg = match doc.get("agent") {
            Some(agent) => agent.clone().try_into().map_err(|e: toml::de::Error| {
                ConfigError::Invalid(format!("[agent]: {}", e.message()))
            })?,
            None => AgentConfig::default(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("[agent]: {m}")));
        if self.timeout.is_zero() {
            return bad("timeout must be greater than zero".into());
        }
        for (name, price) in [
            ("price_prompt_per_mtok", self.price_prompt_per_mtok),
            ("price_completion_per_mtok", self.price_completion_per_mtok),
        ] {
            if !(price.is_finite() && price >= 0.0) {
                return bad(format!("{name} must be a non-negative number, got {price}"));
            }
        }
        if let Some(env) = &self.api_key_env {
            if env.is_empty() || env.contains(['=', '\0']) {
                return bad(format!(
                    "api_key_env `{env}` is not an environment variable name"
                ));
            }
        }
        Ok(())
    }

    /// The environment variable the key is read from.
    pub fn key_env(&self) -> Option<String> {
        let api = self.provider.api()?;
        Some(
            self.api_key_env
                .clone()
                .unwrap_or_else(|| api.default_key_env().to_string()),
        )
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => humantime::parse_duration(&t).map_err(|e| {
            serde::de::Error::custom(format!("`{t}` is not a duration like \"120s\": {e}"))
        }),
    }
}

fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("agent configuration: {0}")]
    Invalid(String),
    #[error("[agent] provider = \"{provider}\" needs `model` (e.g. --model)")]
    MissingModel { provider: &'static str },
    #[error("the offline proposer needs a [proposer.offline] search space in agentloop.toml{why}")]
    NoOfflineSpace { why: String },
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
}

/// The proposer chosen by the configuration, and why.
#[derive(Debug)]
pub struct AnyProposer {
    inner: Inner,
    reason: String,
}

#[derive(Debug)]
enum Inner {
    Llm(Box<LlmProposer>),
    Offline(OfflineProposer),
}

impl AnyProposer {
    /// `openai`, `anthropic` or `offline`.
    pub fn provider(&self) -> &str {
        match &self.inner {
            Inner::Llm(p) => p.client().provider(),
            Inner::Offline(_) => "offline",
        }
    }

    pub fn model(&self) -> &str {
        match &self.inner {
            Inner::Llm(p) => p.client().model(),
            Inner::Offline(_) => super::offline::OFFLINE_MODEL,
        }
    }

    pub fn is_offline(&self) -> bool {
        matches!(self.inner, Inner::Offline(_))
    }

    /// Why this proposer was chosen (worth recording in the session's first event).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl Proposer for AnyProposer {
    async fn propose(&mut self, ctx: &ProposalContext) -> Result<Proposal, ProposeError> {
        match &mut self.inner {
            Inner::Llm(p) => p.propose(ctx).await,
            Inner::Offline(p) => p.propose(ctx).await,
        }
    }
}

/// Chooses the proposer from the configuration and the process environment: an LLM when its
/// key variable is set or a `base_url` is configured, else the offline proposer.
pub fn from_config(
    cfg: &AgentConfig,
    offline_space: Option<OfflineSpace>,
) -> Result<AnyProposer, ConfigError> {
    from_config_with_env(cfg, offline_space, &|name| std::env::var(name).ok())
}

/// [`from_config`] with an explicit environment lookup.
pub fn from_config_with_env(
    cfg: &AgentConfig,
    offline_space: Option<OfflineSpace>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AnyProposer, ConfigError> {
    cfg.validate()?;
    let Some(api) = cfg.provider.api() else {
        return offline(
            cfg,
            offline_space,
            "provider = \"offline\" is configured".into(),
        );
    };
    let key_env = cfg.key_env().unwrap_or_default();
    let key = env(&key_env)
        .filter(|k| !k.trim().is_empty())
        .map(|k| ApiKey::new(k.trim()));
    if key.is_none() && cfg.base_url.is_none() {
        let reason = format!(
            "{key_env} is not set and no [agent] base_url is configured, so {} cannot be used",
            api.name()
        );
        tracing::warn!("using the offline proposer: {reason}");
        return offline(cfg, offline_space, reason);
    }
    let model =
        cfg.model
            .clone()
            .filter(|m| !m.trim().is_empty())
            .ok_or(ConfigError::MissingModel {
                provider: api.name(),
            })?;
    let base_url = cfg
        .base_url
        .clone()
        .unwrap_or_else(|| api.default_base_url().to_string());
    let reason = match &key {
        Some(_) => format!("{} at {base_url} with the key from {key_env}", api.name()),
        None => format!(
            "{} at {base_url} without a key ({key_env} is not set)",
            api.name()
        ),
    };
    let client = LlmClient::new(ClientSettings {
        api,
        base_url,
        model,
        api_key: key,
        timeout: cfg.timeout,
        retry: RetryPolicy {
            max_retries: cfg.max_retries,
            base_delay: cfg.retry_base_delay,
            ..RetryPolicy::default()
        },
        pricing: Pricing {
            prompt_per_mtok: cfg.price_prompt_per_mtok,
            completion_per_mtok: cfg.price_completion_per_mtok,
        },
        max_tokens: cfg.max_tokens,
        temperature: cfg.temperature,
    })?;
    let templates = match &cfg.prompts_dir {
        Some(dir) => Templates::from_dir(dir)?,
        None => Templates::embedded(),
    };
    tracing::info!("proposer: {reason}");
    Ok(AnyProposer {
        inner: Inner::Llm(Box::new(LlmProposer::new(client, templates))),
        reason,
    })
}

fn offline(
    cfg: &AgentConfig,
    space: Option<OfflineSpace>,
    reason: String,
) -> Result<AnyProposer, ConfigError> {
    let space = space.ok_or_else(|| ConfigError::NoOfflineSpace {
        why: format!(" ({reason})"),
    })?;
    space
        .validate()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Ok(AnyProposer {
        inner: Inner::Offline(OfflineProposer::new(space, cfg.seed)),
        reason: format!("offline proposer: {reason}"),
    })
}
