//! The ledger handle: opening, appending, reading.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chain::{self, EntryFields, GENESIS_HASH};
use crate::event::{event_from_row, Event, EVENT_COLUMNS};
use crate::payload::{self, EventPayload};
use crate::redact::Redactor;
use crate::{canonical, change_id, schema, views, EventKind, LedgerError, Result};

/// How long a writer waits for another process's write transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// An event to append. The ledger assigns seq, time and hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: EventKind,
    pub session: String,
    pub change: Option<String>,
    pub payload: Value,
}

impl NewEvent {
    /// An event from a typed payload of [`crate::payload`].
    pub fn typed<P: EventPayload>(
        session: impl Into<String>,
        change: Option<String>,
        payload: &P,
    ) -> Result<Self> {
        Ok(NewEvent {
            kind: P::KIND,
            session: session.into(),
            change,
            payload: serde_json::to_value(payload)?,
        })
    }
}

/// What [`Ledger::append`] assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    pub seq: i64,
    pub entry_hash: String,
}

/// The last event of the chain: what a git trailer anchors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: String,
}

/// An open ledger. Each process (or thread) opens its own; SQLite's locking serializes the
/// writers, and every append is one `BEGIN IMMEDIATE` transaction.
pub struct Ledger {
    pub(crate) conn: Connection,
    path: PathBuf,
    redactor: Redactor,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("path", &self.path).finish()
    }
}

impl Ledger {
    /// Opens (creating it and its directory if needed) and migrates the ledger at `path`.
    /// The redactor knows the values of this process's secret-looking environment variables.
    pub fn open(path: impl AsRef<Path>) -> Result<Ledger> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let open_err = |source| LedgerError::Open {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mode = enable_wal(&conn).map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(rusqlite::Error::InvalidParameterName(format!(
                "journal_mode is {mode}, WAL could not be enabled"
            ))));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(open_err)?;
        let ledger = Ledger {
            conn,
            path,
            redactor: Redactor::from_env(),
        };
        ledger.write(|conn| {
            if schema::migrate(conn)? {
                views::rebuild(conn)?;
            }
            Ok(())
        })?;
        Ok(ledger)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Also redact this exact string (e.g. an API key read from a config file) from payloads.
    pub fn add_secret(&mut self, secret: &str) {
        self.redactor.add_literal(secret);
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction: committed if it returns Ok, rolled back
    /// otherwise (and if it panics).
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        struct RollbackOnDrop<'a>(Option<&'a Connection>);
        impl Drop for RollbackOnDrop<'_> {
            fn drop(&mut self) {
                if let Some(conn) = self.0 {
                    let _ = conn.execute_batch("ROLLBACK");
                }
            }
        }
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut guard = RollbackOnDrop(Some(&self.conn));
        let value = f(&self.conn)?;
        self.conn.execute_batch("COMMIT")?;
        guard.0 = None;
        Ok(value)
    }

    /// Appends one event (after redacting its payload) and updates the derived tables, in one
    /// transaction.
    pub fn append(&self, event: NewEvent) -> Result<Appended> {
        let mut appended = self.append_batch(vec![event])?;
        Ok(appended.remove(0))
    }

    /// Appends several events atomically: all of them or none.
    pub fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>> {
        let prepared = events
            .into_iter()
            .map(|e| self.prepare(e))
            .collect::<Result<Vec<_>>>()?;
        self.write(|conn| {
            let mut head = head_of(conn)?;
            let ts = now_rfc3339();
            let mut out = Vec::with_capacity(prepared.len());
            let mut insert = conn.prepare_cached(
                "INSERT INTO events (seq, ts, kind, session, change_id, payload, payload_sha256,
                                     prev_hash, entry_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for p in &prepared {
                let seq = head.as_ref().map_or(1, |h| h.seq + 1);
                let prev_hash = head
                    .as_ref()
                    .map_or(GENESIS_HASH.to_string(), |h| h.hash.clone());
                let entry_hash = chain::entry_hash(&EntryFields {
                    seq,
                    prev_hash: &prev_hash,
                    payload_sha256: &p.payload_sha256,
                    ts: &ts,
                    kind: p.event.kind.as_str(),
                    session: &p.event.session,
                    change: p.event.change.as_deref(),
                });
                insert.execute(params![
                    seq,
                    ts,
                    p.event.kind.as_str(),
                    p.event.session,
                    p.event.change,
                    p.payload_text,
                    p.payload_sha256,
                    prev_hash,
                    entry_hash,
                ])?;
                views::apply(
                    conn,
                    seq,
                    p.event.kind,
                    &p.event.session,
                    p.event.change.as_deref(),
                    &p.stored_payload,
                )?;
                head = Some(ChainHead {
                    seq,
                    hash: entry_hash.clone(),
                });
                out.push(Appended { seq, entry_hash });
            }
            Ok(out)
        })
    }

    /// Redacts, validates and canonicalizes an event outside the write lock.
    fn prepare(&self, mut event: NewEvent) -> Result<Prepared> {
        let kind = event.kind.to_string();
        if !event.payload.is_object() {
            return Err(LedgerError::PayloadNotObject {
                kind,
                got: json_type(&event.payload),
            });
        }
        match &event.change {
            Some(id) => change_id::validate(id)?,
            None if event.kind.requires_change() => {
                return Err(LedgerError::MissingChange { kind });
            }
            None => {}
        }
        event.payload = self.redactor.redact(&event.payload);
        event.session = self.redactor.redact_text(&event.session);
        payload::validate(event.kind, &event.payload)
            .map_err(|message| LedgerError::InvalidPayload { kind, message })?;
        let payload_text = canonical::to_string(&event.payload);
        let payload_sha256 = chain::sha256_hex(payload_text.as_bytes());
        // The derived tables are fed what a rebuild will read back (the stored text, parsed),
        // not the caller's in-memory numbers: one path, so both always agree to the bit.
        let stored_payload = serde_json::from_str(&payload_text)?;
        Ok(Prepared {
            event,
            payload_text,
            payload_sha256,
            stored_payload,
        })
    }

    /// The last event's seq and entry hash; `None` for an empty ledger.
    pub fn head(&self) -> Result<Option<ChainHead>> {
        head_of(&self.conn)
    }

    /// The number of events.
    pub fn len(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))?)
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// All events in seq order.
    pub fn events(&self) -> Result<Vec<Event>> {
        self.query_events("1 = 1", params![])
    }

    pub fn events_for_session(&self, session: &str) -> Result<Vec<Event>> {
        self.query_events("session = ?1", params![session])
    }

    /// The events of one change (full id; see [`Ledger::resolve_change`] for prefixes).
    pub fn events_for_change(&self, change: &str) -> Result<Vec<Event>> {
        self.query_events("change_id = ?1", params![change])
    }

    /// The event at `seq`, if any.
    pub fn event(&self, seq: i64) -> Result<Option<Event>> {
        Ok(self
            .query_events("seq = ?1", params![seq])?
            .into_iter()
            .next())
    }

    fn query_events(&self, condition: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Event>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE {condition} ORDER BY seq");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(args, event_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The full id of the one change whose id starts with `prefix` (the leading "c" optional).
    pub fn resolve_change(&self, prefix: &str) -> Result<String> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT change_id FROM events WHERE change_id IS NOT NULL")?;
        let ids = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        change_id::resolve(prefix, ids.iter().map(String::as_str))
    }

    /// A fresh change id that no event of this ledger uses yet.
    pub fn allocate_change_id(&self) -> Result<String> {
        loop {
            let id = change_id::new_change_id();
            let used: bool = self.conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM events WHERE change_id = ?1)",
                [&id],
                |r| r.get(0),
            )?;
            if !used {
                return Ok(id);
            }
        }
    }

    /// Recomputes every derived table from the events alone.
    pub fn rebuild_views(&self) -> Result<()> {
        self.write(views::rebuild)
    }
}

struct Prepared {
    event: NewEvent,
    payload_text: String,
    payload_sha256: String,
    stored_payload: Value,
}

pub(crate) fn head_of(conn: &Connection) -> Result<Option<ChainHead>> {
    Ok(conn
        .query_row(
            "SELECT seq, entry_hash FROM events ORDER BY seq DESC LIMIT 1",
            [],
            |r| {
                Ok(ChainHead {
                    seq: r.get(0)?,
                    hash: r.get(1)?,
                })
            },
        )
        .optional()?)
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Switches a connection to WAL. When several processes open a new ledger at once, the switch
/// can answer SQLITE_BUSY without waiting on the busy handler (it needs the database to itself),
/// so it is retried here, with a short sleep, for as long as the busy timeout allows.
fn enable_wal(conn: &Connection) -> rusqlite::Result<String> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        // journal_mode answers with a row, hence query_row rather than pragma_update.
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}
