use thiserror::Error;

/// The reply did not contain a patch we can read. Messages are addressed to the model.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error(
        "the reply contains no patch: expected search/replace blocks \
         (`<<<<<<< SEARCH` ... `=======` ... `>>>>>>> REPLACE`) or a unified diff (`--- a/x`, `+++ b/x`, `@@`)"
    )]
    NoPatch,
    #[error("SEARCH block {block} has no file path: put the path on its own line right before `<<<<<<< SEARCH`")]
    MissingPath { block: usize },
    #[error("SEARCH block {block} for {path} is not closed: expected `{expected}` after line {line} of the reply")]
    Unterminated {
        block: usize,
        path: String,
        expected: &'static str,
        line: usize,
    },
    #[error("unified diff: {message} (line {line} of the reply)")]
    BadDiff { line: usize, message: String },
    #[error(
        "the reply has no `DESCRIPTION:` line: start the reply with `DESCRIPTION: <one line>`"
    )]
    MissingDescription,
    #[error(
        "the reply has no `RATIONALE:` line: add `RATIONALE: <why this should lower the metric>`"
    )]
    MissingRationale,
}

/// The patch could not be applied to the files. Messages are addressed to the model.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApplyError {
    #[error("SEARCH block {block} for {path} matched 0 times{hint}")]
    NoMatch {
        block: usize,
        path: String,
        /// Why it probably failed, starting with "; " (may be empty).
        hint: String,
    },
    #[error(
        "SEARCH block {block} for {path} matched {count} times (at lines {lines}); \
         include more surrounding lines so that it matches exactly once"
    )]
    Ambiguous {
        block: usize,
        path: String,
        count: usize,
        lines: String,
    },
    #[error("SEARCH block {block} for {path}: the file does not exist; to create it, leave the SEARCH part empty")]
    MissingFile { block: usize, path: String },
    #[error("SEARCH block {block} for {path}: the SEARCH part is empty but the file already exists; put the lines to replace in SEARCH")]
    FileExists { block: usize, path: String },
    #[error("diff for {path}: the file does not exist; a new file needs `--- /dev/null`")]
    DiffMissingFile { path: String },
    #[error("diff for {path}: `--- /dev/null` creates a file, but {path} already exists")]
    DiffFileExists { path: String },
    #[error("hunk {hunk} of {path} ({header}) does not apply: {reason}")]
    HunkMismatch {
        hunk: usize,
        path: String,
        header: String,
        reason: String,
    },
    #[error("diff deletes {path}, but its removed lines do not match the file: {reason}")]
    DeleteMismatch { path: String, reason: String },
}
