//! Schema and migrations, versioned by `PRAGMA user_version`.
//!
//! Each migration runs inside the caller's `BEGIN IMMEDIATE` transaction, so two processes
//! opening a fresh ledger at once cannot both migrate it.

use rusqlite::Connection;

use crate::{LedgerError, Result};

/// Migrations in order; `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3];

pub const LATEST_VERSION: i64 = MIGRATIONS.len() as i64;

const V1: &str = r#"
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY CHECK (seq >= 1),
    ts             TEXT    NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('session_start','calibration','propose',
                       'policy','build','run_result','decision','merge','discard','audit',
                       'rollback','budget','error','session_end')),
    session        TEXT    NOT NULL,
    change_id      TEXT,
    payload        TEXT    NOT NULL,
    payload_sha256 TEXT    NOT NULL,
    prev_hash      TEXT    NOT NULL,
    entry_hash     TEXT    NOT NULL UNIQUE
) STRICT;
CREATE INDEX events_by_session ON events(session, seq);
CREATE INDEX events_by_change ON events(change_id, seq) WHERE change_id IS NOT NULL;

-- A guard against accidents, not a proof: the hash chain is the proof.
CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the events table is append-only: UPDATE refused'); END;
CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the events table is append-only: DELETE refused'); END;

-- Derived tables: rebuilt from the events alone, kept current on append.
CREATE TABLE changes (
    change_id      TEXT    PRIMARY KEY,
    session        TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('proposed','accepted','rejected','crashed',
                       'policy_rejected','build_failed','rolled_back')),
    description    TEXT,
    model          TEXT,
    parent_commit  TEXT,
    commit_sha     TEXT,
    first_seq      INTEGER NOT NULL REFERENCES events(seq),
    last_seq       INTEGER NOT NULL REFERENCES events(seq),
    decided_seq    INTEGER REFERENCES events(seq),
    n              INTEGER,
    mean_baseline  REAL,
    mean_candidate REAL,
    mean_diff      REAL,
    p_value        REAL,
    peak_mem_bytes INTEGER,
    kept_ref       TEXT
) STRICT;
CREATE INDEX changes_by_status ON changes(status);

CREATE TABLE runs (
    seq            INTEGER PRIMARY KEY REFERENCES events(seq),
    session        TEXT    NOT NULL,
    change_id      TEXT    REFERENCES changes(change_id),
    arm            TEXT    NOT NULL,
    stage          TEXT    NOT NULL,
    commit_sha     TEXT    NOT NULL,
    seed           INTEGER NOT NULL,
    split          TEXT    NOT NULL,
    budget         TEXT,
    metric         TEXT    NOT NULL,
    metric_value   REAL,
    exit_status    TEXT    NOT NULL,
    exit_code      INTEGER,
    wall_s         REAL,
    peak_mem_bytes INTEGER,
    log_sha256     TEXT
) STRICT;
CREATE INDEX runs_by_change ON runs(change_id, seq);

CREATE TABLE decisions (
    seq            INTEGER PRIMARY KEY REFERENCES events(seq),
    session        TEXT    NOT NULL,
    change_id      TEXT    NOT NULL REFERENCES changes(change_id),
    outcome        TEXT    NOT NULL,
    stage          TEXT,
    test           TEXT,
    n              INTEGER,
    mean_baseline  REAL,
    mean_candidate REAL,
    mean_diff      REAL,
    sd_diff        REAL,
    ci_low         REAL,
    ci_high        REAL,
    p_value        REAL,
    min_effect     REAL,
    thresholds     TEXT    NOT NULL,
    rule_version   TEXT    NOT NULL,
    reason         TEXT
) STRICT;
CREATE INDEX decisions_by_change ON decisions(change_id, seq);

CREATE TABLE merges (
    seq            INTEGER PRIMARY KEY REFERENCES events(seq),
    session        TEXT    NOT NULL,
    change_id      TEXT    NOT NULL REFERENCES changes(change_id),
    commit_sha     TEXT    NOT NULL,
    trunk_branch   TEXT    NOT NULL,
    ledger_head    TEXT
) STRICT;

CREATE TABLE rollbacks (
    seq                INTEGER PRIMARY KEY REFERENCES events(seq),
    session            TEXT    NOT NULL,
    change_id          TEXT    NOT NULL REFERENCES changes(change_id),
    reverted_commit    TEXT    NOT NULL,
    revert_commit      TEXT    NOT NULL,
    original_merge_seq INTEGER,
    reason             TEXT    NOT NULL
) STRICT;
"#;

/// `changes.status` may be `superseded`. The derived tables are emptied (children first, for the
/// foreign keys); `migrate` says so, and the caller rebuilds them from the events.
const V2: &str = r#"
DELETE FROM rollbacks; DELETE FROM merges; DELETE FROM decisions; DELETE FROM runs;
DELETE FROM changes;
DROP TABLE changes;
CREATE TABLE changes (
    change_id      TEXT    PRIMARY KEY,
    session        TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('proposed','accepted','rejected','crashed',
                       'policy_rejected','build_failed','superseded','rolled_back')),
    description    TEXT,
    model          TEXT,
    parent_commit  TEXT,
    commit_sha     TEXT,
    first_seq      INTEGER NOT NULL REFERENCES events(seq),
    last_seq       INTEGER NOT NULL REFERENCES events(seq),
    decided_seq    INTEGER REFERENCES events(seq),
    n              INTEGER,
    mean_baseline  REAL,
    mean_candidate REAL,
    mean_diff      REAL,
    p_value        REAL,
    peak_mem_bytes INTEGER,
    kept_ref       TEXT
) STRICT;
CREATE INDEX changes_by_status ON changes(status);
"#;

/// Event kind `compare` (`agentloop compare`, the final verdict). SQLite cannot alter a CHECK
/// constraint, so the events are copied as they are (seq, hashes and all) into a table that
/// allows it; the derived tables are emptied first (their foreign keys point at the events)
/// and rebuilt by the caller.
const V3: &str = r#"
DELETE FROM rollbacks; DELETE FROM merges; DELETE FROM decisions; DELETE FROM runs;
DELETE FROM changes;
DROP TRIGGER events_refuse_update;
DROP TRIGGER events_refuse_delete;
CREATE TABLE events_v3 (
    seq            INTEGER PRIMARY KEY CHECK (seq >= 1),
    ts             TEXT    NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('session_start','calibration','propose',
                       'policy','build','run_result','decision','merge','discard','audit',
                       'rollback','budget','error','session_end','compare')),
    session        TEXT    NOT NULL,
    change_id      TEXT,
    payload        TEXT    NOT NULL,
    payload_sha256 TEXT    NOT NULL,
    prev_hash      TEXT    NOT NULL,
    entry_hash     TEXT    NOT NULL UNIQUE
) STRICT;
INSERT INTO events_v3 (seq, ts, kind, session, change_id, payload, payload_sha256, prev_hash, entry_hash)
    SELECT seq, ts, kind, session, change_id, payload, payload_sha256, prev_hash, entry_hash FROM events;
DROP TABLE events;
ALTER TABLE events_v3 RENAME TO events;
CREATE INDEX events_by_session ON events(session, seq);
CREATE INDEX events_by_change ON events(change_id, seq) WHERE change_id IS NOT NULL;
CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the events table is append-only: UPDATE refused'); END;
CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the events table is append-only: DELETE refused'); END;
"#;

/// Brings the schema to [`LATEST_VERSION`]; call inside a write transaction. `true` when the
/// derived tables must be rebuilt from the events (an existing ledger was migrated).
pub fn migrate(conn: &Connection) -> Result<bool> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > LATEST_VERSION {
        return Err(LedgerError::SchemaTooNew {
            found,
            supported: LATEST_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        conn.execute_batch(sql)?;
        conn.pragma_update(None, "user_version", index as i64 + 1)?;
    }
    // A migration may change how events project: the derived tables follow the events.
    Ok(found > 0 && found < LATEST_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventKind, Ledger, NewEvent};
    use serde_json::json;

    /// A ledger written before `compare` existed (schema v2) opens, keeps every event and
    /// hash, verifies, and then accepts a `compare` event.
    #[test]
    fn a_v2_ledger_migrates_to_v3_with_its_chain_intact() {
        let dir = tempfile::tempdir().unwrap();
        let new_path = dir.path().join("new.db");
        let ledger = Ledger::open(&new_path).unwrap();
        for kind in [EventKind::Budget, EventKind::Budget] {
            ledger
                .append(NewEvent {
                    kind,
                    session: "s1".into(),
                    change: None,
                    payload: json!({"spent_s": 1.0, "remaining_s": 2.0}),
                })
                .unwrap();
        }
        let rows = ledger.events().unwrap();
        drop(ledger);
        // The same events in a database built by the v1 and v2 migrations only.
        let old_path = dir.path().join("old.db");
        let conn = Connection::open(&old_path).unwrap();
        conn.execute_batch(V1).unwrap();
        conn.execute_batch(V2).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        let src = Connection::open(&new_path).unwrap();
        let mut read = src.prepare("SELECT * FROM events ORDER BY seq").unwrap();
        let mut q = read.query([]).unwrap();
        while let Some(r) = q.next().unwrap() {
            let values: Vec<rusqlite::types::Value> = (0..9).map(|i| r.get(i).unwrap()).collect();
            conn.execute(
                "INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                rusqlite::params_from_iter(values),
            )
            .unwrap();
        }
        let err = conn.execute(
            "INSERT INTO events VALUES (9, 't', 'compare', 's', NULL, '{}', 'h', 'p', 'e')",
            [],
        );
        assert!(err.is_err(), "v2 refuses the new kind");
        drop(conn);
        let migrated = Ledger::open(&old_path).unwrap();
        assert_eq!(migrated.events().unwrap(), rows);
        assert!(migrated.verify().unwrap().ok);
        migrated
            .append(NewEvent {
                kind: EventKind::Compare,
                session: "s1".into(),
                change: None,
                payload: json!({"a_rev": "a", "b_rev": "b", "a_commit": "a", "b_commit": "b",
                    "split": "holdout", "metric": "val_bpb", "pairs": [], "n": 0,
                    "mean_diff": 0.0, "sd_diff": 0.0, "ci_low": 0.0, "ci_high": 0.0,
                    "p_value": 0.5}),
            })
            .unwrap();
        assert!(migrated.verify().unwrap().ok);
        // Still append-only after the table was rebuilt.
        let raw = Connection::open(&old_path).unwrap();
        assert!(raw.execute("DELETE FROM events", []).is_err());
    }
}
