//! Schema and migrations, versioned by `PRAGMA user_version`.
//!
//! Each migration runs inside the caller's `BEGIN IMMEDIATE` transaction, so two processes
//! opening a fresh ledger at once cannot both migrate it.

use rusqlite::Connection;

use crate::{LedgerError, Result};

/// Migrations in order; `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2];

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
/// foreign keys) and `migrate` rebuilds them from the events.
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

/// Brings the schema to [`LATEST_VERSION`]; call inside a write transaction.
pub fn migrate(conn: &Connection) -> Result<()> {
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
    if found > 0 && found < LATEST_VERSION {
        // A migration may change how events project: the derived tables follow the events.
        crate::views::rebuild(conn)?;
    }
    Ok(())
}
