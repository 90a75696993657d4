//! Reading the derived tables through an open [`Ledger`].

use rusqlite::Row;

use super::rows::*;
use super::snapshot;
use crate::{ChangeStatus, Ledger, LedgerError, Result};

fn change_from_row(row: &Row<'_>) -> rusqlite::Result<ChangeRow> {
    let status: String = row.get(2)?;
    Ok(ChangeRow {
        change_id: row.get(0)?,
        session: row.get(1)?,
        status: status.parse().map_err(|e: LedgerError| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into())
        })?,
        description: row.get(3)?,
        model: row.get(4)?,
        parent_commit: row.get(5)?,
        commit: row.get(6)?,
        first_seq: row.get(7)?,
        last_seq: row.get(8)?,
        decided_seq: row.get(9)?,
        n: row.get(10)?,
        mean_baseline: row.get(11)?,
        mean_candidate: row.get(12)?,
        mean_diff: row.get(13)?,
        p_value: row.get(14)?,
        peak_mem_bytes: row.get(15)?,
        kept_ref: row.get(16)?,
    })
}

const CHANGE_COLUMNS: &str = "change_id, session, status, description, model, parent_commit,
    commit_sha, first_seq, last_seq, decided_seq, n, mean_baseline, mean_candidate, mean_diff,
    p_value, peak_mem_bytes, kept_ref";

impl Ledger {
    /// Changes in the order they were first recorded, optionally only those with `status`.
    pub fn changes(&self, status: Option<ChangeStatus>) -> Result<Vec<ChangeRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CHANGE_COLUMNS} FROM changes WHERE ?1 IS NULL OR status = ?1 ORDER BY first_seq"
        ))?;
        let rows = stmt.query_map([status.map(ChangeStatus::as_str)], change_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One change by full id.
    pub fn change(&self, change_id: &str) -> Result<Option<ChangeRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CHANGE_COLUMNS} FROM changes WHERE change_id = ?1"
        ))?;
        let mut rows = stmt.query_map([change_id], change_from_row)?;
        Ok(rows.next().transpose()?)
    }

    /// The runs of one change (both arms), or with `None` the runs tied to no change
    /// (calibration, audits), in seq order.
    pub fn runs(&self, change_id: Option<&str>) -> Result<Vec<RunRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, session, change_id, arm, stage, commit_sha, seed, split, budget, metric,
                    metric_value, exit_status, exit_code, wall_s, peak_mem_bytes, log_sha256
             FROM runs WHERE change_id IS ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([change_id], |r| {
            Ok(RunRow {
                seq: r.get(0)?,
                session: r.get(1)?,
                change_id: r.get(2)?,
                arm: r.get(3)?,
                stage: r.get(4)?,
                commit: r.get(5)?,
                seed: r.get(6)?,
                split: r.get(7)?,
                budget: r.get(8)?,
                metric: r.get(9)?,
                metric_value: r.get(10)?,
                exit_status: r.get(11)?,
                exit_code: r.get(12)?,
                wall_s: r.get(13)?,
                peak_mem_bytes: r.get(14)?,
                log_sha256: r.get(15)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The decisions about one change, in seq order.
    pub fn decisions(&self, change_id: &str) -> Result<Vec<DecisionRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, session, change_id, outcome, stage, test, n, mean_baseline, mean_candidate,
                    mean_diff, sd_diff, ci_low, ci_high, p_value, min_effect, thresholds,
                    rule_version, reason
             FROM decisions WHERE change_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([change_id], |r| {
            Ok(DecisionRow {
                seq: r.get(0)?,
                session: r.get(1)?,
                change_id: r.get(2)?,
                outcome: r.get(3)?,
                stage: r.get(4)?,
                test: r.get(5)?,
                n: r.get(6)?,
                mean_baseline: r.get(7)?,
                mean_candidate: r.get(8)?,
                mean_diff: r.get(9)?,
                sd_diff: r.get(10)?,
                ci_low: r.get(11)?,
                ci_high: r.get(12)?,
                p_value: r.get(13)?,
                min_effect: r.get(14)?,
                thresholds: r.get(15)?,
                rule_version: r.get(16)?,
                reason: r.get(17)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every derived table's rows as text, in a fixed order: equal snapshots mean equal
    /// tables. Used to check that the tables match what the events say.
    pub fn views_snapshot(&self) -> Result<Vec<String>> {
        snapshot(&self.conn)
    }
}
