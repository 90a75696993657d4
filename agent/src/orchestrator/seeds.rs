//! Seeds derived from where a run sits in the session, never from a random source, so that a
//! resumed decision asks for exactly the runs (and seeds) the interrupted one asked for.

use sha2::{Digest, Sha256};

/// The seed of pair `index` of `stage` for `change` (both arms of a pair share it).
/// `change` is `None` for session-level runs (calibration, re-measurement).
pub fn seed_for(session: &str, change: Option<&str>, stage: &str, index: u32) -> u64 {
    let mut h = Sha256::new();
    for part in [session, change.unwrap_or("-"), stage] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    h.update(index.to_le_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    // Small enough for any trainer's seed argument (u32), never 0.
    (u64::from_le_bytes(bytes) % (u32::MAX as u64 - 1)) + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn seeds_are_stable_and_distinct_per_position() {
        assert_eq!(
            seed_for("s1", Some("c1"), "confirm", 3),
            seed_for("s1", Some("c1"), "confirm", 3)
        );
        let mut seen = HashSet::new();
        for change in [None, Some("c1"), Some("c2")] {
            for stage in ["calibration", "screen", "confirm"] {
                for i in 0..20 {
                    assert!(seen.insert(seed_for("s1", change, stage, i)));
                }
            }
        }
        assert_ne!(seed_for("s1", None, "x", 0), seed_for("s2", None, "x", 0));
    }
}
