//! One JSON POST with timeouts and retries.
//!
//! Retried: 429 (after `Retry-After` when given), 408, 5xx (incl. Anthropic's 529), timeouts,
//! connection failures and a 200 whose body is not JSON (empty, truncated, a lone surrogate
//! escape), with exponential backoff and jitter. Not retried: other 4xx, whose message is
//! returned at once. When the retries run out the caller decides (`LlmError::class`): the
//! loop waits longer and asks again, recording each wait.

use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::redact::scrub;
use super::{ApiKey, LlmError};

/// How often and how patiently to retry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff before retry n is about `base_delay * 2^n`, jittered, capped at `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A server's `Retry-After` is honoured up to this long.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with "equal jitter": half fixed, half random, so that many
    /// clients hitting the same limit spread out but none retries immediately.
    fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retry.min(16))
            .min(self.max_delay);
        let half = exp / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

pub(super) struct Call<'a> {
    pub http: &'a reqwest::Client,
    pub provider: &'static str,
    pub url: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a serde_json::Value,
    pub timeout: Duration,
    pub retry: &'a RetryPolicy,
    pub secret: Option<&'a ApiKey>,
}

/// What one attempt ended with, when it did not succeed.
enum Failure {
    Retryable { error: LlmError, wait: Duration },
    Fatal(LlmError),
}

impl Call<'_> {
    /// Sends the request until it succeeds or the retries run out; returns the JSON body
    /// and the number of attempts.
    pub async fn send(&self) -> Result<(serde_json::Value, u32), LlmError> {
        let mut retry = 0;
        loop {
            let attempts = retry + 1;
            match self.attempt(attempts).await {
                Ok(json) => return Ok((json, attempts)),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retryable { error, wait }) => {
                    if retry >= self.retry.max_retries {
                        return Err(error);
                    }
                    tracing::warn!(
                        provider = self.provider,
                        attempt = attempts,
                        wait_ms = wait.as_millis() as u64,
                        "LLM request failed, retrying: {error}"
                    );
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
            }
        }
    }

    async fn attempt(&self, attempts: u32) -> Result<serde_json::Value, Failure> {
        let sent = self
            .http
            .post(self.url)
            .headers(self.headers.clone())
            .json(self.body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Err(self.transport_failure(e, attempts)),
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = match response.text().await {
            Ok(b) => b,
            Err(e) => return Err(self.transport_failure(e, attempts)),
        };
        if status.is_success() {
            // An empty or cut-off body is a provider in trouble: retried like a 5xx.
            return serde_json::from_str(&body).map_err(|e| Failure::Retryable {
                error: LlmError::BadResponse {
                    provider: self.provider,
                    message: scrub(
                        &format!("body is not JSON ({e}): {}", snippet(&body)),
                        self.secret,
                    ),
                },
                wait: self.retry.backoff(attempts - 1),
            });
        }
        let message = scrub(&error_message(&body), self.secret);
        let code = status.as_u16();
        if is_retryable(status) {
            let wait = match retry_after {
                Some(wait) => wait.min(self.retry.max_retry_after),
                None => self.retry.backoff(attempts - 1),
            };
            return Err(Failure::Retryable {
                error: LlmError::GaveUp {
                    provider: self.provider,
                    status: code,
                    message,
                    attempts,
                    retry_after,
                },
                wait,
            });
        }
        Err(Failure::Fatal(LlmError::Rejected {
            provider: self.provider,
            status: code,
            message,
        }))
    }

    fn transport_failure(&self, e: reqwest::Error, attempts: u32) -> Failure {
        let error = if e.is_timeout() {
            LlmError::Timeout {
                provider: self.provider,
                timeout: humantime::format_duration(self.timeout).to_string(),
                attempts,
            }
        } else {
            LlmError::Transport {
                provider: self.provider,
                url: self.url.to_string(),
                message: scrub(&error_chain(&e), self.secret),
                attempts,
            }
        };
        Failure::Retryable {
            error,
            wait: self.retry.backoff(attempts - 1),
        }
    }
}

fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// `Retry-After` as seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate_parse(value)?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn httpdate_parse(value: &str) -> Option<std::time::SystemTime> {
    chrono::DateTime::parse_from_rfc2822(value)
        .ok()
        .map(std::time::SystemTime::from)
}

/// The provider's own error message (`{"error":{"message":..}}` for OpenAI and Anthropic,
/// `{"error":".."}`, `{"message":..}` or `{"detail":..}` elsewhere), else the raw body.
fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let candidates = [
                v.pointer("/error/message"),
                v.get("error"),
                v.get("message"),
                v.get("detail"),
            ];
            candidates.into_iter().flatten().find_map(|m| match m {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Null => None,
                other => Some(other.to_string()),
            })
        });
    match from_json {
        Some(m) => snippet(&m),
        None if body.trim().is_empty() => "(empty body)".to_string(),
        None => snippet(body),
    }
}

/// At most 500 characters, so a huge HTML error page does not flood the log.
fn snippet(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(500) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// reqwest's top-level message names only the URL; the cause is in the source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.dedup();
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(
            retry_after(&h),
            Some(Duration::ZERO),
            "a past date means now"
        );
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_grows_and_stays_within_bounds() {
        let p = RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(1),
        };
        for retry in 0..8 {
            let full = (100u64 << retry).min(1000);
            let d = p.backoff(retry).as_millis() as u64;
            assert!(d >= full / 2 && d <= full, "retry {retry}: {d}ms");
        }
    }

    #[test]
    fn error_message_prefers_the_provider_message() {
        assert_eq!(
            error_message(r#"{"error":{"message":"model not found","type":"x"}}"#),
            "model not found"
        );
        assert_eq!(error_message(r#"{"detail":"no"}"#), "no");
        assert_eq!(error_message("<html>oops</html>"), "<html>oops</html>");
        assert_eq!(error_message(""), "(empty body)");
    }
}
