//! Export (JSON, JSONL, TSV) and import (JSON, JSONL) of a ledger.
//!
//! JSON and JSONL carry every event verbatim with its hashes, so an import reproduces the
//! same chain, the same head, and therefore still matches the git trailers. TSV is a summary
//! of changes for people and spreadsheets, with the columns of autoresearch's results.tsv
//! first (commit, val_bpb, memory_gb, status, description).

use std::fmt;
use std::io::{BufRead, Write};
use std::str::FromStr;

use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::chain::{self, EntryFields, GENESIS_HASH};
use crate::{canonical, change_id, payload, views, ChainHead, Event, Ledger, LedgerError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Jsonl,
    Tsv,
}

impl FromStr for Format {
    type Err = LedgerError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "jsonl" | "ndjson" => Ok(Format::Jsonl),
            "tsv" => Ok(Format::Tsv),
            _ => Err(LedgerError::UnknownFormat(s.to_string())),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "json",
            Format::Jsonl => "jsonl",
            Format::Tsv => "tsv",
        })
    }
}

/// The JSON export document.
#[derive(Debug, Serialize, Deserialize)]
pub struct JsonExport {
    pub format: String,
    pub version: u32,
    pub head: Option<ChainHead>,
    pub events: Vec<Event>,
}

const JSON_FORMAT_NAME: &str = "agentloop-ledger";

/// The TSV header: autoresearch's columns, then ours.
pub const TSV_COLUMNS: &[&str] = &[
    "commit",
    "val_bpb",
    "memory_gb",
    "status",
    "description",
    "change_id",
    "session",
    "baseline_val_bpb",
    "delta",
    "p_value",
    "n",
    "decided_seq",
];

/// Writes the whole ledger to `out` in `format`.
pub fn export(ledger: &Ledger, format: Format, out: &mut dyn Write) -> Result<()> {
    match format {
        Format::Jsonl => {
            for event in ledger.events()? {
                serde_json::to_writer(&mut *out, &event)?;
                out.write_all(b"\n")?;
            }
        }
        Format::Json => {
            let doc = JsonExport {
                format: JSON_FORMAT_NAME.to_string(),
                version: 1,
                head: ledger.head()?,
                events: ledger.events()?,
            };
            serde_json::to_writer_pretty(&mut *out, &doc)?;
            out.write_all(b"\n")?;
        }
        Format::Tsv => export_tsv(ledger, out)?,
    }
    out.flush()?;
    Ok(())
}

fn export_tsv(ledger: &Ledger, out: &mut dyn Write) -> Result<()> {
    writeln!(out, "{}", TSV_COLUMNS.join("\t"))?;
    let num = |v: Option<f64>, places: usize| v.map_or(String::new(), |v| format!("{v:.places$}"));
    for c in ledger.changes(None)? {
        let fields = [
            c.commit
                .as_deref()
                .map_or(String::new(), |s| s[..s.len().min(7)].to_string()),
            num(c.mean_candidate, 6),
            num(c.peak_mem_bytes.map(|b| b as f64 / (1u64 << 30) as f64), 1),
            c.status.label(),
            c.description.clone().unwrap_or_default(),
            c.change_id.clone(),
            c.session.clone(),
            num(c.mean_baseline, 6),
            num(c.mean_diff, 6),
            c.p_value.map_or(String::new(), |p| format!("{p:.3e}")),
            c.n.map_or(String::new(), |n| n.to_string()),
            c.decided_seq.map_or(String::new(), |s| s.to_string()),
        ];
        let cleaned: Vec<String> = fields.iter().map(|f| tsv_field(f)).collect();
        writeln!(out, "{}", cleaned.join("\t"))?;
    }
    Ok(())
}

/// Tabs and newlines would break the row; a description is one line in the TSV.
fn tsv_field(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}

/// Imports a JSON or JSONL export into an empty ledger, checking every event's hashes and
/// links first: a file that does not verify is refused whole, naming the first bad line.
/// Events are copied verbatim (not re-redacted: that would change their hashes).
/// Returns the number of events imported.
pub fn import(ledger: &Ledger, format: Format, input: &mut dyn BufRead) -> Result<i64> {
    let events: Vec<(usize, Event)> = match format {
        Format::Jsonl => {
            let mut events = Vec::new();
            for (index, line) in input.lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let event = serde_json::from_str(&line).map_err(|e| LedgerError::BadImport {
                    line: index + 1,
                    reason: e.to_string(),
                })?;
                events.push((index + 1, event));
            }
            events
        }
        Format::Json => {
            let doc: JsonExport =
                serde_json::from_reader(input).map_err(|e| LedgerError::BadImport {
                    line: e.line(),
                    reason: e.to_string(),
                })?;
            if doc.format != JSON_FORMAT_NAME {
                return Err(LedgerError::BadImport {
                    line: 1,
                    reason: format!("not an agentloop ledger export (format {:?})", doc.format),
                });
            }
            // JSON has no line per event; number them by position instead.
            doc.events
                .into_iter()
                .enumerate()
                .map(|(i, e)| (i + 1, e))
                .collect()
        }
        Format::Tsv => {
            return Err(LedgerError::BadImport {
                line: 1,
                reason: "TSV is a summary and cannot be imported; use json or jsonl".into(),
            })
        }
    };
    let rows = events
        .into_iter()
        .scan(None::<(i64, String)>, |last, (line, event)| {
            Some(check_imported(last, line, event))
        })
        .collect::<Result<Vec<_>>>()?;

    ledger.write(|conn| {
        let existing: i64 = conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
        if existing > 0 {
            return Err(LedgerError::ImportIntoNonEmpty(existing));
        }
        let mut insert = conn.prepare(
            "INSERT INTO events (seq, ts, kind, session, change_id, payload, payload_sha256,
                                 prev_hash, entry_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for (event, payload_text) in &rows {
            insert.execute(params![
                event.seq,
                event.ts,
                event.kind.as_str(),
                event.session,
                event.change,
                payload_text,
                event.payload_sha256,
                event.prev_hash,
                event.entry_hash
            ])?;
            views::apply(
                conn,
                event.seq,
                event.kind,
                &event.session,
                event.change.as_deref(),
                &event.payload,
            )?;
        }
        Ok(rows.len() as i64)
    })
}

/// Checks one imported event against the previous one; returns it with its canonical payload.
fn check_imported(
    last: &mut Option<(i64, String)>,
    line: usize,
    event: Event,
) -> Result<(Event, String)> {
    let bad = |reason: String| LedgerError::BadImport { line, reason };
    let (expected_seq, expected_prev) = match last {
        Some((seq, hash)) => (*seq + 1, hash.clone()),
        None => (1, GENESIS_HASH.to_string()),
    };
    if event.seq != expected_seq {
        return Err(bad(format!(
            "expected seq {expected_seq}, found {}",
            event.seq
        )));
    }
    if event.prev_hash != expected_prev {
        return Err(bad(format!(
            "seq {}: prev_hash does not match the previous event's entry hash",
            event.seq
        )));
    }
    if let Some(id) = &event.change {
        change_id::validate(id).map_err(|e| bad(format!("seq {}: {e}", event.seq)))?;
    }
    if event.kind.requires_change() && event.change.is_none() {
        return Err(bad(format!(
            "seq {}: a {} event must name its change",
            event.seq, event.kind
        )));
    }
    payload::validate(event.kind, &event.payload)
        .map_err(|e| bad(format!("seq {}: payload: {e}", event.seq)))?;
    let payload_text = canonical::to_string(&event.payload);
    if chain::sha256_hex(payload_text.as_bytes()) != event.payload_sha256 {
        return Err(bad(format!(
            "seq {}: payload does not match its hash",
            event.seq
        )));
    }
    let entry = chain::entry_hash(&EntryFields {
        seq: event.seq,
        prev_hash: &event.prev_hash,
        payload_sha256: &event.payload_sha256,
        ts: &event.ts,
        kind: event.kind.as_str(),
        session: &event.session,
        change: event.change.as_deref(),
    });
    if entry != event.entry_hash {
        return Err(bad(format!(
            "seq {}: entry hash does not match the event",
            event.seq
        )));
    }
    *last = Some((event.seq, event.entry_hash.clone()));
    Ok((event, payload_text))
}
