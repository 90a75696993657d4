//! The Anthropic Messages API wire format.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

use super::{join_url, ApiKey, ChatMessage, ClientSettings, LlmError, ParsedResponse, Role};

pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The Messages API requires `max_tokens`.
const DEFAULT_MAX_TOKENS: u32 = 8192;

pub(super) fn request(s: &ClientSettings, messages: &[ChatMessage]) -> (String, Value) {
    // System prompts are a top-level field here, not a message.
    let system = messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect::<Vec<_>>()
        .join("\n\n");
    let turns: Vec<Value> = messages
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
        .collect();
    let mut body = json!({
        "model": s.model,
        "max_tokens": s.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "messages": turns,
    });
    if !system.is_empty() {
        body["system"] = json!(system);
    }
    if let Some(t) = s.temperature {
        body["temperature"] = json!(t);
    }
    // Accept both `https://api.anthropic.com` and `https://api.anthropic.com/v1`.
    let base = s.base_url.trim_end_matches('/');
    let path = if base.ends_with("/v1") {
        "messages"
    } else {
        "v1/messages"
    };
    (join_url(base, path), body)
}

pub(super) fn headers(key: Option<&ApiKey>) -> Result<HeaderMap, LlmError> {
    let mut h = HeaderMap::new();
    h.insert(
        HeaderName::from_static("anthropic-version"),
        HeaderValue::from_static(ANTHROPIC_VERSION),
    );
    if let Some(key) = key {
        let mut v = HeaderValue::from_str(key.expose()).map_err(|_| {
            LlmError::Config("the API key contains characters not allowed in a header".into())
        })?;
        v.set_sensitive(true);
        h.insert(HeaderName::from_static("x-api-key"), v);
    }
    Ok(h)
}

pub(super) fn parse_response(v: &Value) -> Result<ParsedResponse, String> {
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| "no `content` array in the reply".to_string())?;
    let text: String = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("");
    if text.is_empty() {
        let reason = v
            .get("stop_reason")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        return Err(format!("the reply has no text (stop_reason: {reason})"));
    }
    let tokens = |name: &str| {
        v.pointer(&format!("/usage/{name}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Ok(ParsedResponse {
        text,
        model: v.get("model").and_then(Value::as_str).map(str::to_string),
        prompt_tokens: tokens("input_tokens"),
        completion_tokens: tokens("output_tokens"),
    })
}
