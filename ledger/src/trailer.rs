//! The chain head as a git commit trailer: `Ledger-Head: <seq>:<hash>`.
//!
//! The loop writes it into every merge and revert commit, so the repository holds an
//! independent copy of the ledger's state at that moment: deleting or rewriting events after
//! it cannot go unnoticed by `ledger verify --repo`.

use crate::{ChainHead, LedgerError, Result};

pub const KEY: &str = "Ledger-Head";

/// The trailer line for `head`, without a trailing newline.
pub fn format(head: &ChainHead) -> String {
    format!("{KEY}: {}:{}", head.seq, head.hash)
}

/// The `Ledger-Head` trailer of a commit message: `Ok(None)` when it has none, an error when
/// it has a malformed one. When there are several, the last one wins (git's convention).
pub fn parse(commit_message: &str) -> Result<Option<ChainHead>> {
    let mut found = None;
    for line in commit_message.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case(KEY) {
            continue;
        }
        found = Some(parse_value(line, value.trim())?);
    }
    Ok(found)
}

fn parse_value(line: &str, value: &str) -> Result<ChainHead> {
    let bad = |reason: &str| LedgerError::BadTrailer {
        line: line.to_string(),
        reason: reason.to_string(),
    };
    let (seq, hash) = value
        .split_once(':')
        .ok_or_else(|| bad("expected <seq>:<hash>"))?;
    let seq: i64 = seq
        .trim()
        .parse()
        .map_err(|_| bad("seq is not an integer"))?;
    if seq < 1 {
        return Err(bad("seq must be at least 1"));
    }
    let hash = hash.trim();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("hash must be 64 hex digits"));
    }
    Ok(ChainHead {
        seq,
        hash: hash.to_ascii_lowercase(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> ChainHead {
        ChainHead {
            seq: 42,
            hash: "ab".repeat(32),
        }
    }

    #[test]
    fn formats_and_parses_back_from_a_commit_message() {
        let msg = format!(
            "Merge c7f3a2b: warmup\n\nLonger body.\n\nChange-Id: c7f3a2b\n{}\n",
            format(&head())
        );
        assert_eq!(parse(&msg).unwrap(), Some(head()));
        assert_eq!(
            format(&head()),
            format!("Ledger-Head: 42:{}", "ab".repeat(32))
        );
    }

    #[test]
    fn absent_trailer_is_none_and_malformed_is_an_error() {
        assert_eq!(parse("fix: things\n\nChange-Id: c1234567").unwrap(), None);
        for bad in [
            "Ledger-Head: 12",
            "Ledger-Head: x:abcd",
            "Ledger-Head: 3:nothex",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.to_string().contains("malformed Ledger-Head"), "{err}");
        }
    }
}
