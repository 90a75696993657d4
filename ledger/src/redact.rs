//! Secrets never reach the ledger: payloads are scrubbed before they are hashed and stored.
//!
//! Three nets, because a secret can hide anywhere (a header echoed in an error message, a key
//! pasted into a patch by the agent):
//! 1. values under keys that name a secret (`api_key`, `authorization`, `password`, ...);
//! 2. substrings that look like credentials (`sk-...`, `Bearer ...`, `Authorization: ...`,
//!    GitHub / Hugging Face / AWS / Google / Slack tokens);
//! 3. the literal values of secret-looking environment variables of the writing process
//!    (`*_API_KEY`, `*_TOKEN`, `*_SECRET`, ...) plus any the caller registers, each also in
//!    its hex, base64 (standard and URL-safe, at any byte alignment inside a longer blob),
//!    reversed and percent-encoded forms.

mod encodings;

use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Secrets shorter than this are not matched literally: too many innocent strings would hit.
const MIN_LITERAL_SECRET_LEN: usize = 8;

/// Scrubs JSON payloads. Cheap to clone; build one per ledger connection.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    literals: Vec<String>,
    /// The registered secrets percent-encoded in any mix of escaped and plain bytes.
    percent_encoded: Vec<Regex>,
}

impl Redactor {
    /// A redactor that also knows the values of the secret-looking environment variables of
    /// this process.
    pub fn from_env() -> Self {
        let mut redactor = Redactor::default();
        for (name, value) in std::env::vars_os() {
            let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else {
                continue;
            };
            if is_secret_env_name(name) {
                redactor.add_literal(value);
            }
        }
        redactor
    }

    /// Also scrub this exact string, and its encoded forms, wherever it appears (ignored when
    /// shorter than 8 bytes).
    pub fn add_literal(&mut self, secret: &str) {
        let secret = secret.trim();
        if secret.len() < MIN_LITERAL_SECRET_LEN {
            return;
        }
        if self.literals.iter().any(|s| s == secret) {
            return;
        }
        if let Ok(re) = Regex::new(&encodings::percent_pattern(secret)) {
            self.percent_encoded.push(re);
        }
        let forms = std::iter::once(secret.to_string()).chain(encodings::forms(secret));
        for form in forms {
            if form.len() >= MIN_LITERAL_SECRET_LEN && !self.literals.contains(&form) {
                self.literals.push(form);
            }
        }
        // Longest first, so a secret containing another (or a padded form containing its
        // unpadded one) is replaced whole.
        self.literals.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// A copy of `value` with every secret replaced by [`REDACTED`].
    pub fn redact(&self, value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(key, val)| {
                        let scrubbed = if is_secret_key(key) && !val.is_null() {
                            Value::String(REDACTED.to_string())
                        } else {
                            self.redact(val)
                        };
                        (key.clone(), scrubbed)
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.redact(v)).collect()),
            Value::String(text) => Value::String(self.redact_text(text)),
            other => other.clone(),
        }
    }

    /// `text` with every secret replaced by [`REDACTED`].
    pub fn redact_text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for literal in &self.literals {
            if out.contains(literal.as_str()) {
                out = out.replace(literal.as_str(), REDACTED);
            }
        }
        for pattern in &self.percent_encoded {
            if pattern.is_match(&out) {
                out = pattern.replace_all(&out, REDACTED).into_owned();
            }
        }
        for (pattern, replacement) in patterns() {
            if pattern.is_match(&out) {
                out = pattern.replace_all(&out, *replacement).into_owned();
            }
        }
        out
    }
}

fn normalized(name: &str) -> String {
    name.to_ascii_lowercase().replace('-', "_")
}

/// Keys whose value is a secret whatever it looks like. `prompt_tokens` and friends are counts,
/// not credentials, hence the exact names rather than a "token" substring.
pub fn is_secret_key(key: &str) -> bool {
    let key = normalized(key);
    const EXACT: &[&str] = &[
        "authorization",
        "proxy_authorization",
        "api_key",
        "apikey",
        "x_api_key",
        "token",
        "secret",
        "password",
        "passwd",
        "bearer",
        "cookie",
        "set_cookie",
        "private_key",
    ];
    const SUFFIXES: &[&str] = &[
        "_api_key",
        "_apikey",
        "_secret",
        "_password",
        "_access_token",
        "_auth_token",
        "_refresh_token",
        "_session_token",
        "_private_key",
    ];
    EXACT.contains(&key.as_str())
        || matches!(
            key.as_str(),
            "access_token" | "auth_token" | "refresh_token" | "session_token" | "client_secret"
        )
        || SUFFIXES.iter().any(|s| key.ends_with(s))
}

fn is_secret_env_name(name: &str) -> bool {
    let name = normalized(name);
    is_secret_key(&name) || name.ends_with("_token") || name.ends_with("_key")
}

fn patterns() -> &'static [(Regex, &'static str)] {
    static PATTERNS: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        let p = |re: &str| Regex::new(re).expect("redaction pattern compiles");
        vec![
            // Header lines: keep the header name so the reader knows what was there.
            (
                p(r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|x-goog-api-key|cookie)(\s*[:=]\s*)[^\r\n]+"),
                "${1}${2}[REDACTED]",
            ),
            (p(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{20,}"), "${1} [REDACTED]"),
            // Provider key shapes: OpenAI / Anthropic, GitHub, Hugging Face, AWS, Google, Slack.
            (p(r"\bsk-[A-Za-z0-9_-]{16,}"), "[REDACTED]"),
            (p(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}"), "[REDACTED]"),
            (p(r"\bgithub_pat_[A-Za-z0-9_]{30,}"), "[REDACTED]"),
            (p(r"\bhf_[A-Za-z0-9]{30,}"), "[REDACTED]"),
            (p(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "[REDACTED]"),
            (p(r"\bAIza[0-9A-Za-z_-]{35}"), "[REDACTED]"),
            (p(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), "[REDACTED]"),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_keys_are_redacted_but_token_counts_are_not() {
        let r = Redactor::default();
        let out = r.redact(&json!({
            "api_key": "abc", "headers": {"Authorization": "Bearer zzz", "X-Api-Key": "k"},
            "prompt_tokens": 1200, "completion_tokens": 80, "model": "gpt-x",
        }));
        assert_eq!(out["api_key"], REDACTED);
        assert_eq!(out["headers"]["Authorization"], REDACTED);
        assert_eq!(out["headers"]["X-Api-Key"], REDACTED);
        assert_eq!(out["prompt_tokens"], 1200);
        assert_eq!(out["completion_tokens"], 80);
        assert_eq!(out["model"], "gpt-x");
    }

    #[test]
    fn credential_shapes_inside_free_text_are_redacted() {
        let r = Redactor::default();
        let text = "error: 401 from api\nAuthorization: Bearer sk-proj-abcdefghijklmnop1234\n\
                    retry with key sk-ant-api03-AAAAAAAAAAAAAAAAAAAA and hf_abcdefghijklmnopqrstuvwxyz0123456";
        let out = r.redact_text(text);
        assert!(!out.contains("sk-proj"), "{out}");
        assert!(!out.contains("sk-ant"), "{out}");
        assert!(!out.contains("hf_abc"), "{out}");
        assert!(out.contains("Authorization: [REDACTED]"), "{out}");
        assert!(out.starts_with("error: 401 from api\n"));
    }

    #[test]
    fn registered_literals_are_redacted_anywhere() {
        let mut r = Redactor::default();
        r.add_literal("my-very-private-value");
        r.add_literal("short");
        let out = r.redact(&json!({"patch": "+ let k = \"my-very-private-value\"; // short"}));
        assert_eq!(out["patch"], "+ let k = \"[REDACTED]\"; // short");
    }

    /// What a run that read the key could print, each form inside other text.
    #[test]
    fn encoded_forms_of_a_known_secret_are_redacted() {
        let key = "sk-test-9f8e7d6c5b4a3210XYZ";
        let mut r = Redactor::default();
        r.add_literal(key);
        let bytes = key.as_bytes();
        let reversed: String = key.chars().rev().collect();
        let mut forms = vec![
            ("hex", hex::encode(bytes)),
            ("HEX", hex::encode_upper(bytes)),
            ("reversed", reversed),
            ("percent", key.replace('-', "%2D")),
            (
                "percent-all",
                bytes.iter().map(|b| format!("%{b:02x}")).collect(),
            ),
            ("percent-mixed", format!("%73%6B{}", &key[2..])),
        ];
        for (alphabet, name) in [
            (encodings::STANDARD, "b64"),
            (encodings::URL_SAFE, "b64url"),
        ] {
            let padded = encodings::base64(bytes, alphabet);
            forms.push((name, padded.trim_end_matches('=').to_string()));
            forms.push((name, padded));
            // Embedded in a longer blob at each byte alignment.
            for lead in 0..3 {
                let mut blob = b"{\"log\":\"".to_vec();
                blob.extend(std::iter::repeat_n(b'#', lead));
                blob.extend_from_slice(bytes);
                blob.extend_from_slice(b"\"}");
                forms.push((name, encodings::base64(&blob, alphabet)));
            }
        }
        for (name, form) in forms {
            let text = format!("run failed: {form} (exit 1)");
            let out = r.redact_text(&text);
            assert!(out.contains(REDACTED), "{name} not redacted: {out}");
            assert!(!out.contains(&form), "{name} survives: {out}");
            let json = r.redact(&json!({"stderr": text, "nested": [{"line": form.clone()}]}));
            let json = json.to_string();
            assert!(!json.contains(&form), "{name} survives in JSON: {json}");
        }
        // The base64 core left after redaction carries too few of the key's bits to matter:
        // no 8-character run of any form of the key survives.
        let blob = encodings::base64(format!("xx{key}yy").as_bytes(), encodings::STANDARD);
        let out = r.redact_text(&blob);
        assert!(out.len() < 24, "{out}");
    }

    /// The provider key reaches the redactor through the loop's environment, not add_literal.
    #[test]
    fn encoded_forms_of_a_secret_from_the_environment_are_redacted() {
        let key = "envkey-5e4d3c2b1a09-ZZ";
        std::env::set_var("AGENTLOOP_REDACT_TEST_API_KEY", key);
        let r = Redactor::from_env();
        let reversed: String = key.chars().rev().collect();
        let b64url = encodings::base64(key.as_bytes(), encodings::URL_SAFE);
        for form in [hex::encode(key), hex::encode_upper(key), reversed, b64url] {
            let out = r.redact(&json!({"log": format!("leak={form};")}));
            assert_eq!(out["log"], format!("leak={REDACTED};"), "{form}");
        }
    }

    #[test]
    fn ordinary_code_is_left_alone() {
        let r = Redactor::default();
        let patch = "-    let lr = 3e-4;\n+    let lr = 6e-4; // warmup tokens: 2000\n";
        assert_eq!(r.redact_text(patch), patch);
    }
}
