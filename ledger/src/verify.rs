//! Proving the record is intact: the hash chain, SQLite's own checks, the derived tables, the
//! git trailers, and (through a hook) the stored decisions.

use std::fmt;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::chain::{self, EntryFields, GENESIS_HASH};
use crate::event::{event_from_row, EVENT_COLUMNS};
use crate::{git_anchor, head_ref, views, ChainHead, Event, Ledger, Result};

/// Re-runs one stored event's computation: `None` when it does not apply to this event,
/// `Some(Err(why))` when the stored outcome cannot be reproduced. The guardrails crate plugs
/// its decision engine in here without the ledger depending on it.
pub type RecomputeHook<'a> = &'a dyn Fn(&Event) -> Option<Result<(), String>>;

/// What to check beyond the chain and SQLite's integrity checks.
#[derive(Default, Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// Check the `Ledger-Head` trailers on this repository's agentloop branches and the
    /// values of its `refs/agentloop/ledger-head` reflog.
    pub repo: Option<&'a Path>,
    /// Re-run stored decisions.
    pub recompute: Option<RecomputeHook<'a>>,
    /// Check that the derived tables equal a rebuild from the events.
    pub check_views: bool,
}

/// One thing found wrong; `seq` is the event it concerns, when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub seq: Option<i64>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "seq {seq}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub events_checked: i64,
    pub head: Option<ChainHead>,
    /// The lowest seq any problem concerns.
    pub first_bad_seq: Option<i64>,
    pub problems: Vec<Problem>,
    pub trailers_checked: usize,
    /// Values of the `refs/agentloop/ledger-head` reflog checked.
    #[serde(default)]
    pub ref_anchors_checked: usize,
    pub recomputed: usize,
}

impl VerifyReport {
    fn new() -> Self {
        VerifyReport {
            ok: true,
            events_checked: 0,
            head: None,
            first_bad_seq: None,
            problems: Vec::new(),
            trailers_checked: 0,
            ref_anchors_checked: 0,
            recomputed: 0,
        }
    }

    fn problem(&mut self, seq: Option<i64>, message: impl Into<String>) {
        self.problems.push(Problem {
            seq,
            message: message.into(),
        });
    }

    fn finish(mut self) -> Self {
        self.ok = self.problems.is_empty();
        self.first_bad_seq = self.problems.iter().filter_map(|p| p.seq).min();
        self
    }
}

impl Ledger {
    /// Recomputes the hash chain and runs SQLite's `integrity_check` and `foreign_key_check`.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_with(&VerifyOptions::default())
    }

    /// [`Ledger::verify`] plus the checks `options` asks for. Problems are reported, not
    /// returned as errors: an `Err` means verification itself could not run.
    pub fn verify_with(&self, options: &VerifyOptions<'_>) -> Result<VerifyReport> {
        let mut report = VerifyReport::new();
        run_checks(&self.conn, Some(self.path()), options, &mut report)?;
        Ok(report.finish())
    }
}

/// Verifies the ledger file at `path`, even one too damaged for [`Ledger::open`] (a truncated
/// file, for instance): then it reads what it still can, so the report names the first seq
/// that is lost. An `Err` means not even that was possible (no such file, not a database).
pub fn verify_path(path: &Path, options: &VerifyOptions<'_>) -> Result<VerifyReport> {
    match Ledger::open(path) {
        Ok(ledger) => ledger.verify_with(options),
        Err(open_error) if path.is_file() => {
            let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
            // writable_schema makes SQLite read a file shorter than its header says instead of
            // refusing it; query_only makes sure this salvage pass changes nothing.
            conn.execute_batch("PRAGMA writable_schema = ON; PRAGMA query_only = ON;")?;
            let mut report = VerifyReport::new();
            report.problem(
                None,
                format!("the ledger cannot be opened normally: {open_error}"),
            );
            let salvage = VerifyOptions {
                check_views: false,
                ..*options
            };
            // A damaged file: one connection, one check after the other.
            run_checks(&conn, None, &salvage, &mut report)?;
            Ok(report.finish())
        }
        Err(open_error) => Err(open_error),
    }
}

/// `path` (the file `conn` has open) lets SQLite's own checks run on a second connection
/// while this thread walks the chain: the two take about as long, so on two cores verify
/// takes the time of the longer rather than their sum.
fn run_checks(
    conn: &Connection,
    path: Option<&Path>,
    options: &VerifyOptions<'_>,
    report: &mut VerifyReport,
) -> Result<()> {
    match path.and_then(open_reader) {
        Some(reader) => {
            let sqlite_problems = std::thread::scope(|scope| {
                let checks = scope.spawn(move || {
                    let mut side = VerifyReport::new();
                    check_sqlite(&reader, &mut side);
                    side.problems
                });
                check_chain(conn, report);
                checks.join()
            });
            match sqlite_problems {
                Ok(problems) => report.problems.extend(problems),
                Err(_) => report.problem(None, "SQLite's checks panicked"),
            }
        }
        None => {
            check_chain(conn, report);
            check_sqlite(conn, report);
        }
    }
    if options.check_views {
        check_views(conn, report);
    }
    if let Some(repo) = options.repo {
        check_trailers(conn, repo, report)?;
    }
    if let Some(hook) = options.recompute {
        recompute(conn, hook, report)?;
    }
    Ok(())
}

/// A read-only connection to the ledger file, or `None` (then the checks share `conn`).
/// integrity_check looks every index entry up in its table: a page cache that holds the
/// tables (memory is only taken as pages are read) and memory-mapped reads make those
/// lookups memory accesses instead of one read syscall each.
fn open_reader(path: &Path) -> Option<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).ok()?;
    conn.pragma_update(None, "cache_size", -131_072).ok()?;
    // mmap_size answers with a row, hence query_row.
    conn.query_row("PRAGMA mmap_size = 1073741824", [], |_| Ok(()))
        .ok()?;
    Some(conn)
}

fn check_views(conn: &Connection, report: &mut VerifyReport) {
    let outcome = (|| -> Result<Option<String>> {
        let stored = views::snapshot(conn)?;
        // Rebuild inside a transaction that is always rolled back: verify changes nothing.
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let rebuilt = views::rebuild(conn).and_then(|_| views::snapshot(conn));
        conn.execute_batch("ROLLBACK")?;
        Ok(first_difference(&stored, &rebuilt?))
    })();
    match outcome {
        Ok(None) => {}
        Ok(Some(diff)) => report.problem(
            None,
            format!("derived tables differ from the events (run rebuild-views): {diff}"),
        ),
        Err(e) => report.problem(None, format!("derived tables could not be rebuilt: {e}")),
    }
}

fn recompute(conn: &Connection, hook: RecomputeHook<'_>, report: &mut VerifyReport) -> Result<()> {
    let mut stmt = conn.prepare(&format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY seq"))?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let event = match event_from_row(row) {
            Ok(event) => event,
            Err(e) => {
                let seq = row.get::<_, i64>(0).ok();
                report.problem(seq, format!("event cannot be decoded: {e}"));
                continue;
            }
        };
        match hook(&event) {
            None => {}
            Some(Ok(())) => report.recomputed += 1,
            Some(Err(why)) => {
                report.recomputed += 1;
                report.problem(
                    Some(event.seq),
                    format!("{} does not reproduce: {why}", event.kind),
                );
            }
        }
    }
    Ok(())
}

fn first_difference(stored: &[String], rebuilt: &[String]) -> Option<String> {
    if stored == rebuilt {
        return None;
    }
    let mismatch = stored.iter().zip(rebuilt).find(|(a, b)| a != b);
    Some(match mismatch {
        Some((a, b)) => format!("stored row {a} but the events give {b}"),
        None => format!(
            "{} derived rows stored, {} derived from the events",
            stored.len(),
            rebuilt.len()
        ),
    })
}

/// Walks the events in seq order, recomputing each row's hashes and its link to the previous
/// row. A read failure (a truncated or corrupt file) is reported at the first unreadable seq.
fn check_chain(conn: &Connection, report: &mut VerifyReport) {
    let mut last: Option<(i64, String)> = None;
    let outcome = (|| -> rusqlite::Result<()> {
        let mut stmt = conn.prepare(
            "SELECT seq, ts, kind, session, change_id, payload, payload_sha256, prev_hash,
                    entry_hash FROM events ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let ts = row.get_ref(1)?.as_str()?;
            let kind = row.get_ref(2)?.as_str()?;
            let session = row.get_ref(3)?.as_str()?;
            let change = row.get_ref(4)?.as_str_or_null()?;
            let payload = row.get_ref(5)?.as_str()?;
            let payload_sha256 = row.get_ref(6)?.as_str()?;
            let prev_hash = row.get_ref(7)?.as_str()?;
            let entry_hash = row.get_ref(8)?.as_str()?;

            let (expected_seq, expected_prev) = match &last {
                Some((s, h)) => (s + 1, h.as_str()),
                None => (1, GENESIS_HASH),
            };
            if seq != expected_seq {
                report.problem(
                    Some(expected_seq),
                    format!(
                        "event missing: seq jumps from {} to {seq}",
                        expected_seq - 1
                    ),
                );
            } else if prev_hash != expected_prev {
                report.problem(
                    Some(seq),
                    format!(
                        "prev_hash {} does not match the entry hash of seq {} ({})",
                        short(prev_hash),
                        seq - 1,
                        short(expected_prev)
                    ),
                );
            }
            let actual_payload_sha = chain::sha256_hex(payload.as_bytes());
            if actual_payload_sha != payload_sha256 {
                report.problem(
                    Some(seq),
                    format!(
                        "payload does not match its hash (stored {}, payload hashes to {})",
                        short(payload_sha256),
                        short(&actual_payload_sha)
                    ),
                );
            }
            let actual_entry = chain::entry_hash(&EntryFields {
                seq,
                prev_hash,
                payload_sha256,
                ts,
                kind,
                session,
                change,
            });
            if actual_entry != entry_hash {
                report.problem(
                    Some(seq),
                    format!(
                        "entry hash {} does not match the row's contents ({})",
                        short(entry_hash),
                        short(&actual_entry)
                    ),
                );
            }
            report.events_checked += 1;
            last = Some((seq, entry_hash.to_string()));
        }
        Ok(())
    })();
    if let Err(e) = outcome {
        let next = last.as_ref().map_or(1, |(s, _)| s + 1);
        report.problem(
            Some(next),
            format!("events from seq {next} on cannot be read: {e}"),
        );
    }
    report.head = last.map(|(seq, hash)| ChainHead { seq, hash });
}

fn check_sqlite(conn: &Connection, report: &mut VerifyReport) {
    let integrity = (|| -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare("PRAGMA integrity_check")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    })();
    match integrity {
        Ok(lines) if lines == ["ok"] => {}
        Ok(lines) => {
            for line in lines.into_iter().take(20) {
                report.problem(None, format!("integrity_check: {line}"));
            }
        }
        Err(e) => report.problem(None, format!("integrity_check could not run: {e}")),
    }
    let foreign = (|| -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
        let rows = stmt.query_map([], |r| {
            Ok(format!(
                "row {} of {} refers to a missing row of {}",
                r.get::<_, Option<i64>>(1)?.unwrap_or_default(),
                r.get::<_, String>(0)?,
                r.get::<_, String>(2)?
            ))
        })?;
        rows.collect()
    })();
    match foreign {
        Ok(lines) => {
            for line in lines.into_iter().take(20) {
                report.problem(None, format!("foreign_key_check: {line}"));
            }
        }
        Err(e) => report.problem(None, format!("foreign_key_check could not run: {e}")),
    }
}

/// Every head anchored outside the database: the `Ledger-Head` trailers and the values of
/// [`head_ref::HEAD_REF`]'s reflog. An anchored seq past the ledger's end means its tail was
/// cut off; an anchored hash that differs means the event was rewritten.
fn check_trailers(conn: &Connection, repo: &Path, report: &mut VerifyReport) -> Result<()> {
    let mut lookup = conn.prepare("SELECT entry_hash FROM events WHERE seq = ?1")?;
    let ledger_end = report.head.as_ref().map_or(0, |h| h.seq);
    let mut anchored = Vec::new();
    for anchor in git_anchor::anchors(repo)? {
        report.trailers_checked += 1;
        let commit = &anchor.commit[..anchor.commit.len().min(12)];
        anchored.push((format!("commit {commit}"), anchor.head));
    }
    for anchor in head_ref::anchors(repo)? {
        report.ref_anchors_checked += 1;
        anchored.push((anchor.source, anchor.head));
    }
    for (source, head) in anchored {
        let head = match head {
            Ok(head) => head,
            Err(why) => {
                report.problem(None, format!("{source}: {why}"));
                continue;
            }
        };
        let stored: Option<String> = lookup
            .query_row([head.seq], |r| r.get(0))
            .optional()
            .unwrap_or(None);
        match stored {
            None if head.seq > ledger_end => report.problem(
                Some(head.seq),
                format!(
                    "the ledger was truncated: {source} anchors seq {} but the ledger has no \
                     such event (it ends at seq {ledger_end}): events were removed or the \
                     ledger was replaced",
                    head.seq
                ),
            ),
            None => report.problem(
                Some(head.seq),
                format!(
                    "{source} anchors seq {} but the ledger has no such event: events were \
                     removed",
                    head.seq
                ),
            ),
            Some(hash) if hash != head.hash => report.problem(
                Some(head.seq),
                format!(
                    "the ledger was rewritten: {source} anchors hash {} but the ledger holds {} \
                     at seq {}",
                    short(&head.hash),
                    short(&hash),
                    head.seq
                ),
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}
