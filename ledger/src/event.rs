//! One stored event, and how it is read back from an `events` row. Its own file so the
//! derived views can replay rows without importing the ledger handle.

use rusqlite::Row;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::payload::EventPayload;
use crate::{EventKind, LedgerError, Result};

/// One stored event, exactly as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: i64,
    /// RFC 3339, UTC, milliseconds.
    pub ts: String,
    pub kind: EventKind,
    pub session: String,
    pub change: Option<String>,
    pub payload: Value,
    pub payload_sha256: String,
    pub prev_hash: String,
    pub entry_hash: String,
}

impl Event {
    /// The payload as the typed struct of its kind.
    pub fn payload_as<P: EventPayload>(&self) -> Result<P> {
        serde_json::from_value(self.payload.clone()).map_err(|e| LedgerError::InvalidPayload {
            kind: self.kind.to_string(),
            message: e.to_string(),
        })
    }
}

pub(crate) const EVENT_COLUMNS: &str =
    "seq, ts, kind, session, change_id, payload, payload_sha256, prev_hash, entry_hash";

pub(crate) fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    let kind: String = row.get(2)?;
    let payload: String = row.get(5)?;
    let conversion = |i: usize, e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e)
    };
    Ok(Event {
        seq: row.get(0)?,
        ts: row.get(1)?,
        kind: kind
            .parse()
            .map_err(|e: LedgerError| conversion(2, e.into()))?,
        session: row.get(3)?,
        change: row.get(4)?,
        payload: serde_json::from_str(&payload).map_err(|e| conversion(5, e.into()))?,
        payload_sha256: row.get(6)?,
        prev_hash: row.get(7)?,
        entry_hash: row.get(8)?,
    })
}
