//! Keeps API keys out of error messages: servers sometimes echo the key (whole or masked)
//! back in their error bodies, and transport errors may quote headers.

use super::ApiKey;

const REDACTED: &str = "[REDACTED]";

/// Removes the key, and tokens that carry a recognisable piece of it, from `text`.
pub fn scrub(text: &str, key: Option<&ApiKey>) -> String {
    let Some(key) = key.map(ApiKey::expose).filter(|k| !k.is_empty()) else {
        return text.to_string();
    };
    let mut out = text.replace(key, REDACTED);
    // Masked echoes like `sk-proj-abc*****wxyz` keep the key's head or tail.
    if key.len() >= 16 {
        let head = &key[..8];
        let tail = &key[key.len() - 6..];
        let is_token_char =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '.');
        let mut scrubbed = String::with_capacity(out.len());
        let mut token = String::new();
        let flush = |token: &mut String, scrubbed: &mut String| {
            if token.contains(head) || token.contains(tail) {
                scrubbed.push_str(REDACTED);
            } else {
                scrubbed.push_str(token);
            }
            token.clear();
        };
        for c in out.chars() {
            if is_token_char(c) {
                token.push(c);
            } else {
                flush(&mut token, &mut scrubbed);
                scrubbed.push(c);
            }
        }
        flush(&mut token, &mut scrubbed);
        out = scrubbed;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_and_masked_keys_are_removed() {
        let key = ApiKey::new("sk-test-0123456789abcdefXYZ");
        let text = "bad key sk-test-0123456789abcdefXYZ; also sk-test-0***defXYZ, Bearer x";
        let out = scrub(text, Some(&key));
        assert!(!out.contains("0123456789"), "{out}");
        assert!(!out.contains("defXYZ"), "{out}");
        assert!(out.contains("bad key [REDACTED];"), "{out}");
        assert_eq!(scrub("nothing here", Some(&key)), "nothing here");
        assert_eq!(format!("{key:?}"), "ApiKey([REDACTED])");
    }
}
