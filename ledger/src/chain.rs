//! The hash chain: how a row's hashes are computed from its contents.
//!
//! `payload_sha256 = SHA-256(canonical payload text)` and
//! `entry_hash = SHA-256(canonical JSON of [seq, prev_hash, payload_sha256, ts, kind, session, change])`.
//! The entry hash covers seq, the previous hash and the payload hash as DESIGN.md asks, and the
//! row's metadata too, so that relabelling an event (its kind, session, change or time) breaks
//! the chain as surely as editing its payload.

use sha2::{Digest, Sha256};

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The fields an entry hash covers, borrowed from a row or from an event being appended.
pub struct EntryFields<'a> {
    pub seq: i64,
    pub prev_hash: &'a str,
    pub payload_sha256: &'a str,
    pub ts: &'a str,
    pub kind: &'a str,
    pub session: &'a str,
    pub change: Option<&'a str>,
}

pub fn entry_hash(fields: &EntryFields<'_>) -> String {
    let preimage = serde_json::to_string(&(
        fields.seq,
        fields.prev_hash,
        fields.payload_sha256,
        fields.ts,
        fields.kind,
        fields.session,
        fields.change,
    ))
    .expect("a tuple of strings and integers serializes");
    sha256_hex(preimage.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(change: Option<&'a str>, session: &'a str) -> EntryFields<'a> {
        EntryFields {
            seq: 1,
            prev_hash: GENESIS_HASH,
            payload_sha256: "ab",
            ts: "2026-01-01T00:00:00.000Z",
            kind: "propose",
            session,
            change,
        }
    }

    #[test]
    fn every_covered_field_changes_the_hash() {
        let base = entry_hash(&fields(Some("c123456"), "s1"));
        assert_ne!(base, entry_hash(&fields(None, "s1")));
        assert_ne!(base, entry_hash(&fields(Some("c123457"), "s1")));
        assert_ne!(base, entry_hash(&fields(Some("c123456"), "s2")));
        assert_eq!(base, entry_hash(&fields(Some("c123456"), "s1")));
        assert_eq!(base.len(), 64);
    }
}
