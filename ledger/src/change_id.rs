//! Change ids: short and readable (`c7f3a2b`), accepted by unique prefix.

use rand::Rng;

use crate::{LedgerError, Result};

/// A fresh random change id: "c" followed by 6 lowercase hex digits.
/// [`crate::Ledger::allocate_change_id`] also makes sure the ledger has not used it yet.
pub fn new_change_id() -> String {
    let n: u32 = rand::rng().random_range(0..0x0100_0000);
    format!("c{n:06x}")
}

/// Checks the shape of a full change id ("c" + at least 4 lowercase hex digits).
pub fn validate(id: &str) -> Result<()> {
    let ok = id.len() >= 5
        && id.starts_with('c')
        && id[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(LedgerError::InvalidChangeId(id.to_string()))
    }
}

/// Picks the one id that `prefix` names among `known` (sorted or not). The leading "c" may be
/// left out (`7f3` finds `c7f3a2b`), and case is ignored.
pub fn resolve<'a>(prefix: &str, known: impl IntoIterator<Item = &'a str>) -> Result<String> {
    let wanted = prefix.trim().to_ascii_lowercase();
    if wanted.is_empty() {
        return Err(LedgerError::UnknownChange {
            prefix: prefix.to_string(),
        });
    }
    let with_c = if wanted.starts_with('c') {
        wanted.clone()
    } else {
        format!("c{wanted}")
    };
    let mut matches: Vec<String> = known
        .into_iter()
        .filter(|id| id.starts_with(&wanted) || id.starts_with(&with_c))
        .map(str::to_string)
        .collect();
    matches.sort();
    matches.dedup();
    // An exact match wins even if it is also a prefix of a longer id.
    if let Some(exact) = matches.iter().find(|id| **id == wanted || **id == with_c) {
        return Ok(exact.clone());
    }
    match matches.len() {
        0 => Err(LedgerError::UnknownChange {
            prefix: prefix.to_string(),
        }),
        1 => Ok(matches.remove(0)),
        _ => Err(LedgerError::AmbiguousChange {
            prefix: prefix.to_string(),
            candidates: matches,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_c_plus_six_hex_digits() {
        for _ in 0..100 {
            let id = new_change_id();
            assert_eq!(id.len(), 7, "{id}");
            validate(&id).unwrap();
        }
    }

    #[test]
    fn validate_rejects_malformed_ids() {
        for bad in ["", "c", "c12", "x123456", "c12345G", "C123456", "c123 45"] {
            assert!(validate(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn resolves_unique_prefixes_and_names_ambiguity() {
        let known = ["c7f3a2b", "c7f3b00", "c0011aa"];
        assert_eq!(resolve("c0", known).unwrap(), "c0011aa");
        assert_eq!(resolve("7f3a", known).unwrap(), "c7f3a2b");
        assert_eq!(resolve("C7F3B", known).unwrap(), "c7f3b00");
        match resolve("c7f3", known) {
            Err(LedgerError::AmbiguousChange { candidates, .. }) => {
                assert_eq!(candidates, ["c7f3a2b", "c7f3b00"])
            }
            other => panic!("expected ambiguity, got {other:?}"),
        }
        let err = resolve("cdead", known).unwrap_err();
        assert_eq!(err.to_string(), "no change matches \"cdead\"");
        assert!(matches!(
            resolve("", known),
            Err(LedgerError::UnknownChange { .. })
        ));
    }
}
