//! The OpenAI chat-completions wire format, as also served by vLLM, Ollama, llama.cpp
//! server and OpenRouter.

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};

use super::{join_url, ApiKey, ChatMessage, ClientSettings, LlmError, ParsedResponse};

pub(super) fn request(s: &ClientSettings, messages: &[ChatMessage]) -> (String, Value) {
    let mut body = json!({
        "model": s.model,
        "messages": messages
            .iter()
            .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
            .collect::<Vec<_>>(),
    });
    if let Some(n) = s.max_tokens {
        body["max_tokens"] = json!(n);
    }
    if let Some(t) = s.temperature {
        body["temperature"] = json!(t);
    }
    (join_url(&s.base_url, "chat/completions"), body)
}

pub(super) fn headers(key: Option<&ApiKey>) -> Result<HeaderMap, LlmError> {
    let mut h = HeaderMap::new();
    if let Some(key) = key {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
            LlmError::Config("the API key contains characters not allowed in a header".into())
        })?;
        v.set_sensitive(true);
        h.insert(AUTHORIZATION, v);
    }
    Ok(h)
}

pub(super) fn parse_response(v: &Value) -> Result<ParsedResponse, String> {
    let choice = v
        .pointer("/choices/0")
        .ok_or_else(|| format!("no `choices[0]` in {}", short(v)))?;
    let text = choice
        .pointer("/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            let reason = choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            let hint = if reason == "length" {
                "; the reply ran out of tokens: raise `[agent] max_tokens` if this persists"
            } else {
                ""
            };
            format!("`choices[0].message.content` is empty (finish_reason: {reason}){hint}")
        })?;
    let tokens = |name: &str| {
        v.pointer(&format!("/usage/{name}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Ok(ParsedResponse {
        text: text.to_string(),
        model: v.get("model").and_then(Value::as_str).map(str::to_string),
        prompt_tokens: tokens("prompt_tokens"),
        completion_tokens: tokens("completion_tokens"),
    })
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(300).collect()
}
