//! Patches proposed by the agent: parsing a model's reply into a [`Patch`] and applying it
//! to whole files.
//!
//! Two formats are understood:
//! - search/replace blocks (aider style): a file path line, then `<<<<<<< SEARCH`, the exact
//!   text to find, `=======`, the replacement, `>>>>>>> REPLACE`;
//! - unified diffs (`--- a/x`, `+++ b/x`, `@@ ... @@`), applied strictly on their context.
//!
//! Every failure is a typed error whose message tells the model what to do differently; the
//! loop feeds it back once.

mod error;
mod reply;
mod search_replace;
mod text;
mod unified;

pub use error::{ApplyError, ParseError};
pub use reply::{parse_reply, Reply};
pub use search_replace::SearchReplaceBlock;
pub use unified::{FileDiff, Hunk, HunkLine};

use serde::{Deserialize, Serialize};

/// Which of the two patch formats a reply used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchFormat {
    SearchReplace,
    UnifiedDiff,
}

impl PatchFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            PatchFormat::SearchReplace => "search_replace",
            PatchFormat::UnifiedDiff => "unified_diff",
        }
    }
}

impl std::fmt::Display for PatchFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed patch, in the format the model wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format", content = "edits", rename_all = "snake_case")]
pub enum Patch {
    SearchReplace(Vec<SearchReplaceBlock>),
    UnifiedDiff(Vec<FileDiff>),
}

impl Patch {
    pub fn format(&self) -> PatchFormat {
        match self {
            Patch::SearchReplace(_) => PatchFormat::SearchReplace,
            Patch::UnifiedDiff(_) => PatchFormat::UnifiedDiff,
        }
    }

    /// The paths the patch touches, in order of first appearance, without duplicates.
    pub fn paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = Vec::new();
        let mut push = |p: &str| {
            if !paths.iter().any(|q| q == p) {
                paths.push(p.to_string());
            }
        };
        match self {
            Patch::SearchReplace(blocks) => blocks.iter().for_each(|b| push(&b.path)),
            Patch::UnifiedDiff(diffs) => diffs.iter().for_each(|d| push(d.path())),
        }
        paths
    }

    /// The patch written back out in its own format (what the ledger stores as `patch_text`).
    pub fn to_text(&self) -> String {
        match self {
            Patch::SearchReplace(blocks) => search_replace::render(blocks),
            Patch::UnifiedDiff(diffs) => unified::render(diffs),
        }
    }
}

/// One file before and after a patch. `before: None` means the patch creates the file,
/// `after: None` means it deletes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEdit {
    pub path: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// Finds the patch in a model's reply (prose and markdown fences around it are fine).
pub fn parse(reply_text: &str) -> Result<Patch, ParseError> {
    let text = text::normalize_newlines(reply_text);
    if search_replace::looks_like(&text) {
        return search_replace::parse(&text).map(Patch::SearchReplace);
    }
    if unified::looks_like(&text) {
        return unified::parse(&text).map(Patch::UnifiedDiff);
    }
    Err(ParseError::NoPatch)
}

/// Applies a patch to whole files. `read(path)` returns the file's current content, or `None`
/// when it does not exist. Edits to the same file accumulate; the result has one entry per
/// file, in order of first appearance.
pub fn apply(
    patch: &Patch,
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<FileEdit>, ApplyError> {
    match patch {
        Patch::SearchReplace(blocks) => search_replace::apply(blocks, read),
        Patch::UnifiedDiff(diffs) => unified::apply(diffs, read),
    }
}

#[cfg(test)]
mod tests;
