//! Derived tables (`changes`, `runs`, `decisions`, `merges`, `rollbacks`): a projection of the
//! events, updated in the append transaction and rebuildable from the events alone.
//!
//! A change's status is `state::ChangeRecord::status` computed in SQL, one event at a time:
//! proposed -> accepted / rejected / crashed / policy_rejected / build_failed (from its decision
//! or policy event), superseded (its discard names the re-test), accepted -> rolled_back.

use std::fmt;
use std::str::FromStr;

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{event_from_row, EVENT_COLUMNS};
use crate::payload::{
    self, Arm, Decision, DecisionOutcome, Discard, Merge, Policy, PolicyOutcome, Propose, Rollback,
    RunResult,
};
use crate::{EventKind, LedgerError, Result};

fn typed<T: serde::de::DeserializeOwned>(kind: EventKind, payload: &Value) -> Result<T> {
    T::deserialize(payload).map_err(|e| LedgerError::InvalidPayload {
        kind: kind.to_string(),
        message: e.to_string(),
    })
}

fn enum_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

/// Makes sure `changes` has a row for `change` (a placeholder if the change was never
/// proposed, so that a misordered event is still recorded rather than refused) and marks
/// `seq` as its latest event.
fn touch_change(conn: &Connection, change: &str, session: &str, seq: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO changes (change_id, session, status, first_seq, last_seq)
         VALUES (?1, ?2, 'proposed', ?3, ?3)
         ON CONFLICT(change_id) DO UPDATE SET last_seq = excluded.last_seq",
    )?
    .execute(params![change, session, seq])?;
    Ok(())
}

fn set_status(conn: &Connection, change: &str, status: ChangeStatus) -> Result<()> {
    conn.prepare_cached("UPDATE changes SET status = ?2 WHERE change_id = ?1")?
        .execute(params![change, status.as_str()])?;
    Ok(())
}

/// Projects one event onto the derived tables.
pub(crate) fn apply(
    conn: &Connection,
    seq: i64,
    kind: EventKind,
    session: &str,
    change: Option<&str>,
    payload: &Value,
) -> Result<()> {
    if let Some(change) = change {
        touch_change(conn, change, session, seq)?;
    }
    // Kinds that require a change were refused at append without one.
    let change_id = change.unwrap_or_default();
    match kind {
        EventKind::Propose => {
            let p: Propose = typed(kind, payload)?;
            conn.prepare_cached(
                "UPDATE changes SET description = ?2, model = ?3,
                        parent_commit = coalesce(?4, parent_commit)
                 WHERE change_id = ?1",
            )?
            .execute(params![change_id, p.description, p.model, p.parent_commit])?;
        }
        EventKind::Policy => {
            let p: Policy = typed(kind, payload)?;
            if p.outcome == PolicyOutcome::Rejected {
                set_status(conn, change_id, ChangeStatus::PolicyRejected)?;
            }
        }
        EventKind::Build => {
            let p: payload::Build = typed(kind, payload)?;
            if let Some(commit) = p.commit {
                conn.prepare_cached("UPDATE changes SET commit_sha = ?2 WHERE change_id = ?1")?
                    .execute(params![change_id, commit])?;
            }
        }
        EventKind::RunResult => apply_run(conn, seq, session, change, typed(kind, payload)?)?,
        EventKind::Decision => {
            apply_decision(conn, seq, session, change_id, typed(kind, payload)?)?
        }
        EventKind::Merge => {
            let p: Merge = typed(kind, payload)?;
            conn.prepare_cached(
                "INSERT INTO merges (seq, session, change_id, commit_sha, trunk_branch, ledger_head)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![seq, session, change_id, p.commit, p.trunk_branch, p.ledger_head])?;
            conn.prepare_cached(
                "UPDATE changes SET status = 'accepted', commit_sha = ?2 WHERE change_id = ?1",
            )?
            .execute(params![change_id, p.commit])?;
        }
        EventKind::Discard => {
            let p: Discard = typed(kind, payload)?;
            conn.prepare_cached("UPDATE changes SET kept_ref = ?2 WHERE change_id = ?1")?
                .execute(params![change_id, p.kept_ref])?;
            if p.superseded_by.is_some() {
                set_status(conn, change_id, ChangeStatus::Superseded)?;
            }
        }
        EventKind::Rollback => {
            let p: Rollback = typed(kind, payload)?;
            conn.prepare_cached(
                "INSERT INTO rollbacks (seq, session, change_id, reverted_commit, revert_commit,
                                        original_merge_seq, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                seq,
                session,
                change_id,
                p.reverted_commit,
                p.revert_commit,
                p.original_merge_seq,
                p.reason
            ])?;
            set_status(conn, change_id, ChangeStatus::RolledBack)?;
        }
        EventKind::SessionStart
        | EventKind::Calibration
        | EventKind::Audit
        | EventKind::Budget
        | EventKind::Error
        | EventKind::SessionEnd
        | EventKind::Compare => {}
    }
    Ok(())
}

fn apply_run(
    conn: &Connection,
    seq: i64,
    session: &str,
    change: Option<&str>,
    run: RunResult,
) -> Result<()> {
    let peak = run.peak_mem_bytes().map(|b| b.min(i64::MAX as u64) as i64);
    conn.prepare_cached(
        "INSERT INTO runs (seq, session, change_id, arm, stage, commit_sha, seed, split, budget,
                           metric, metric_value, exit_status, exit_code, wall_s, peak_mem_bytes,
                           log_sha256)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        seq,
        session,
        change,
        enum_name(&run.arm),
        enum_name(&run.stage),
        run.commit,
        // Seeds are u64 in payloads; SQLite integers are i64, so store the bit pattern.
        run.seed as i64,
        run.split,
        run.budget,
        run.metric_name(),
        run.metric_value(),
        enum_name(&run.exit_status),
        run.exit_code,
        run.wall_s,
        peak,
        run.log_sha256,
    ])?;
    if let (Some(change), Arm::Candidate) = (change, run.arm) {
        conn.prepare_cached(
            "UPDATE changes SET commit_sha = ?2,
                    peak_mem_bytes = max(coalesce(peak_mem_bytes, ?3), coalesce(?3, peak_mem_bytes))
             WHERE change_id = ?1",
        )?
        .execute(params![change, run.commit, peak])?;
    }
    Ok(())
}

fn apply_decision(
    conn: &Connection,
    seq: i64,
    session: &str,
    change: &str,
    d: Decision,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO decisions (seq, session, change_id, outcome, stage, test, n, mean_baseline,
                                mean_candidate, mean_diff, sd_diff, ci_low, ci_high, p_value,
                                min_effect, thresholds, rule_version, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )?
    .execute(params![
        seq,
        session,
        change,
        enum_name(&d.outcome),
        d.stage.as_ref().map(enum_name),
        d.test,
        d.n,
        d.mean_baseline,
        d.mean_candidate,
        d.mean_diff,
        d.sd_diff,
        d.ci_low,
        d.ci_high,
        d.p_value,
        d.min_effect,
        crate::canonical::to_string(&d.thresholds),
        d.rule_version,
        d.reason,
    ])?;
    conn.prepare_cached(
        "UPDATE changes SET status = ?2, decided_seq = ?3, n = ?4, mean_baseline = ?5,
                mean_candidate = ?6, mean_diff = ?7, p_value = ?8
         WHERE change_id = ?1",
    )?
    .execute(params![
        change,
        ChangeStatus::from(d.outcome).as_str(),
        seq,
        d.n,
        d.mean_baseline,
        d.mean_candidate,
        d.mean_diff,
        d.p_value
    ])?;
    Ok(())
}

/// Empties the derived tables and replays every event onto them.
pub(crate) fn rebuild(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "DELETE FROM rollbacks; DELETE FROM merges; DELETE FROM decisions;
         DELETE FROM runs; DELETE FROM changes;",
    )?;
    let mut stmt = conn.prepare(&format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY seq"))?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let e = event_from_row(row)?;
        apply(
            conn,
            e.seq,
            e.kind,
            &e.session,
            e.change.as_deref(),
            &e.payload,
        )?;
    }
    Ok(())
}

pub(crate) fn snapshot(conn: &Connection) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (table, order) in [
        ("changes", "change_id"),
        ("runs", "seq"),
        ("decisions", "seq"),
        ("merges", "seq"),
        ("rollbacks", "seq"),
    ] {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))?;
        let columns = stmt.column_count();
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let mut line = format!("{table}:");
            for i in 0..columns {
                let v: rusqlite::types::Value = row.get(i)?;
                push_cell(&mut line, &v);
            }
            out.push(line);
        }
    }
    Ok(out)
}

/// One cell of a snapshot line. REALs are written in one canonical form (the shortest text
/// that reads back as the same f64, with -0 as 0), so two snapshots compare the numbers
/// themselves and never two printers' spellings of them.
fn push_cell(line: &mut String, value: &rusqlite::types::Value) {
    use rusqlite::types::Value as Sql;
    use std::fmt::Write as _;
    let _ = match value {
        Sql::Real(x) if *x == 0.0 => write!(line, "Real(0)|"),
        Sql::Real(x) => write!(line, "Real({x:e})|"),
        other => write!(line, "{other:?}|"),
    };
}

mod query;
mod rows;

pub use rows::*;
