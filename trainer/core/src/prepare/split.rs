//! Which split each document goes to: `val` and `holdout` documents drawn without replacement
//! from all document indices by a seeded generator, the rest train. Depends only on the number
//! of documents, the sizes and the seed.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DocSplit {
    Train,
    Val,
    Holdout,
}

impl DocSplit {
    pub const ALL: [DocSplit; 3] = [DocSplit::Train, DocSplit::Val, DocSplit::Holdout];

    pub fn name(self) -> &'static str {
        match self {
            DocSplit::Train => "train",
            DocSplit::Val => "val",
            DocSplit::Holdout => "holdout",
        }
    }
}

/// Holds only the evaluation documents' indices, so memory grows with the evaluation sizes,
/// not with the corpus.
pub struct SplitPlan {
    eval: HashMap<u64, DocSplit>,
}

impl SplitPlan {
    /// `documents` must exceed `val + holdout` (checked by the caller).
    pub fn new(documents: u64, val: u64, holdout: u64, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let drawn =
            rand::seq::index::sample(&mut rng, documents as usize, (val + holdout) as usize);
        let eval = drawn
            .into_iter()
            .enumerate()
            .map(|(i, doc)| {
                let split = if (i as u64) < val {
                    DocSplit::Val
                } else {
                    DocSplit::Holdout
                };
                (doc as u64, split)
            })
            .collect();
        Self { eval }
    }

    pub fn of(&self, doc: u64) -> DocSplit {
        self.eval.get(&doc).copied().unwrap_or(DocSplit::Train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_exact_and_the_plan_depends_on_the_seed_only() {
        let plan = SplitPlan::new(100, 5, 3, 42);
        let count = |s| (0..100).filter(|&d| plan.of(d) == s).count();
        assert_eq!(
            (
                count(DocSplit::Train),
                count(DocSplit::Val),
                count(DocSplit::Holdout)
            ),
            (92, 5, 3)
        );
        let again = SplitPlan::new(100, 5, 3, 42);
        assert!((0..100).all(|d| plan.of(d) == again.of(d)));
        let other = SplitPlan::new(100, 5, 3, 43);
        assert!((0..100).any(|d| plan.of(d) != other.of(d)));
    }
}
