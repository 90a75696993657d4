//! The encoded forms a known secret can leak in: a run that read the key can print it as hex,
//! base64, reversed or percent-encoded just as easily as plain, so each form is a literal to
//! scrub too.

pub(super) const STANDARD: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
pub(super) const URL_SAFE: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Every form of `secret` to scrub besides the plain one (may repeat it; the caller dedups).
pub fn forms(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    let mut out = vec![
        hex::encode(bytes),
        hex::encode_upper(bytes),
        secret.chars().rev().collect(),
    ];
    for alphabet in [STANDARD, URL_SAFE] {
        let padded = base64(bytes, alphabet);
        out.push(padded.trim_end_matches('=').to_string());
        out.push(padded);
        // Inside a longer blob the secret starts at byte offset 0, 1 or 2 of a 3-byte group;
        // the characters that only its own bits decide are the same whatever surrounds it.
        for offset in 0..3 {
            out.push(base64_core(bytes, offset, alphabet));
        }
    }
    out
}

/// A regex for `secret` percent-encoded in any mix: each byte as itself or as `%XX` (either
/// case), so `sk%2Dabc`, `%73%6B-abc` and `sk-abc` all match.
pub fn percent_pattern(secret: &str) -> String {
    let mut pattern = String::new();
    for &b in secret.as_bytes() {
        let escaped = format!("%(?i:{b:02x})");
        if b.is_ascii() && !b.is_ascii_control() {
            let plain = regex::escape(&(b as char).to_string());
            pattern.push_str(&format!("(?:{plain}|{escaped})"));
        } else {
            pattern.push_str(&escaped);
        }
    }
    pattern
}

pub(super) fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The base64 characters of `bytes` placed after `offset` other bytes that depend on
/// `bytes` alone: the first ones share bits with what precedes, the last with what follows.
fn base64_core(bytes: &[u8], offset: usize, alphabet: &[u8; 64]) -> String {
    let mut shifted = vec![0u8; offset];
    shifted.extend_from_slice(bytes);
    let encoded = base64(&shifted, alphabet);
    let first = (8 * offset).div_ceil(6);
    let end = 8 * (offset + bytes.len()) / 6;
    encoded.get(first..end).unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_reference_vectors() {
        // RFC 4648 §10.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes(), STANDARD), encoded);
        }
        assert_eq!(base64(&[0xfb, 0xff], URL_SAFE), "-_8=");
        assert_eq!(base64(&[0xfb, 0xff], STANDARD), "+/8=");
    }

    #[test]
    fn the_core_of_each_alignment_appears_inside_any_longer_blob() {
        let secret = b"sk-test-0123456789abcdef";
        for offset in 0..3 {
            for prefix_byte in [0u8, 0x5a, 0xff] {
                for suffix in [&b""[..], b"\x00", b"xyz\xff"] {
                    let mut blob = vec![prefix_byte; offset];
                    blob.extend_from_slice(secret);
                    blob.extend_from_slice(suffix);
                    let core = base64_core(secret, offset, STANDARD);
                    assert!(core.len() >= secret.len() * 4 / 3 - 3);
                    assert!(base64(&blob, STANDARD).contains(&core), "offset {offset}");
                }
            }
        }
    }

    #[test]
    fn the_percent_pattern_matches_any_mix_of_escaped_bytes() {
        let re = regex::Regex::new(&percent_pattern("a b/c")).unwrap();
        for text in ["a b/c", "a%20b%2Fc", "%61%20%62%2f%63", "a b%2fc"] {
            assert!(re.is_match(text), "{text}");
        }
        assert!(!re.is_match("a%20b%2Fd"));
    }
}
