use std::path::PathBuf;

/// Everything the ledger can refuse or fail at. Messages name the problem and never carry
/// payload contents (which could hold secrets that escaped redaction).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open ledger {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("ledger schema version {found} is newer than this agentloop supports ({supported}); upgrade agentloop")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("payload of a {kind} event must be a JSON object, got {got}")]
    PayloadNotObject { kind: String, got: &'static str },
    #[error("payload of a {kind} event does not match its schema: {message}")]
    InvalidPayload { kind: String, message: String },
    #[error("unknown event kind {0:?}")]
    UnknownKind(String),
    #[error("unknown change status {0:?} (expected one of: proposed, accepted, rejected, crashed, policy-rejected, build-failed, rolled-back)")]
    UnknownStatus(String),
    #[error("a {kind} event must name its change")]
    MissingChange { kind: String },
    #[error("invalid change id {0:?}: expected \"c\" followed by hex digits")]
    InvalidChangeId(String),
    #[error("no change matches {prefix:?}")]
    UnknownChange { prefix: String },
    #[error("change prefix {prefix:?} is ambiguous: it matches {}", .candidates.join(", "))]
    AmbiguousChange {
        prefix: String,
        candidates: Vec<String>,
    },
    #[error("malformed Ledger-Head trailer {line:?}: {reason}")]
    BadTrailer { line: String, reason: String },
    #[error("import refused: the target ledger already holds {0} events (import only into an empty ledger)")]
    ImportIntoNonEmpty(i64),
    #[error("import refused at line {line}: {reason}")]
    BadImport { line: usize, reason: String },
    #[error("unknown export format {0:?} (expected json, jsonl or tsv)")]
    UnknownFormat(String),
    #[error("git repository {path}: {message}")]
    Git { path: PathBuf, message: String },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;
