//! Tampering is detected: each kind of alteration on its own, against a real SQLite file and a
//! real git repository.

mod common;

use std::path::{Path, PathBuf};

use agentloop_ledger::chain::{entry_hash, sha256_hex, EntryFields};
use agentloop_ledger::{trailer, ChainHead, Event, EventKind, Ledger, VerifyOptions};
use common::{ev, populate};
use rusqlite::Connection;
use serde_json::json;

/// A populated ledger, plus `extra` budget events so the file spans many pages.
fn ledger_with(extra: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(&path).unwrap();
    populate(&ledger);
    let batch = (0..extra)
        .map(|i| {
            ev(
                EventKind::Budget,
                None,
                json!({"spent_s": i as f64, "remaining_s": 1.0, "note": "x".repeat(200)}),
            )
        })
        .collect();
    ledger.append_batch(batch).unwrap();
    assert!(ledger.verify().unwrap().ok, "the untouched ledger verifies");
    (dir, path)
}

/// A raw connection with the append-only triggers dropped, as an attacker would.
fn vandal(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA foreign_keys = OFF;
         DROP TRIGGER events_refuse_update; DROP TRIGGER events_refuse_delete;",
    )
    .unwrap();
    conn
}

fn verify(path: &Path) -> agentloop_ledger::VerifyReport {
    Ledger::open(path).unwrap().verify().unwrap()
}

fn problems(report: &agentloop_ledger::VerifyReport) -> String {
    report
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn an_edited_payload_is_detected_at_its_seq() {
    let (_dir, path) = ledger_with(0);
    let conn = vandal(&path);
    let changed = conn
        .execute(
            "UPDATE events SET payload = replace(payload, '\"p_value\":0.7', '\"p_value\":0.0123')
             WHERE kind = 'decision' AND payload LIKE '%\"p_value\":0.7%'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let seq: i64 = conn
        .query_row(
            "SELECT seq FROM events WHERE payload LIKE '%\"p_value\":0.0123,%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let report = verify(&path);
    assert!(!report.ok);
    assert_eq!(report.first_bad_seq, Some(seq));
    assert!(
        problems(&report).contains("payload does not match its hash"),
        "{}",
        problems(&report)
    );
}

#[test]
fn a_deleted_row_is_detected() {
    let (_dir, path) = ledger_with(0);
    vandal(&path)
        .execute("DELETE FROM events WHERE seq = 7", [])
        .unwrap();
    let report = verify(&path);
    assert!(!report.ok);
    assert_eq!(report.first_bad_seq, Some(7));
    assert!(
        problems(&report).contains("seq 7: event missing: seq jumps from 6 to 8"),
        "{}",
        problems(&report)
    );
}

#[test]
fn two_swapped_rows_are_detected() {
    let (_dir, path) = ledger_with(0);
    let conn = vandal(&path);
    conn.execute_batch(
        "UPDATE events SET seq = 1000000 WHERE seq = 9;
         UPDATE events SET seq = 9 WHERE seq = 12;
         UPDATE events SET seq = 12 WHERE seq = 1000000;",
    )
    .unwrap();
    let report = verify(&path);
    assert!(!report.ok);
    assert_eq!(report.first_bad_seq, Some(9));
    let text = problems(&report);
    assert!(text.contains("seq 9: prev_hash"), "{text}");
    assert!(text.contains("seq 12:"), "{text}");
}

#[test]
fn a_hash_recomputed_for_one_row_only_breaks_the_next_link() {
    let (_dir, path) = ledger_with(0);
    let conn = vandal(&path);
    let target = 10;
    let (ts, kind, session, change, prev): (String, String, String, Option<String>, String) = conn
        .query_row(
            "SELECT ts, kind, session, change_id, prev_hash FROM events WHERE seq = ?1",
            [target],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    let forged_payload = r#"{"forged":true}"#;
    let payload_sha = sha256_hex(forged_payload.as_bytes());
    let forged_entry = entry_hash(&EntryFields {
        seq: target,
        prev_hash: &prev,
        payload_sha256: &payload_sha,
        ts: &ts,
        kind: &kind,
        session: &session,
        change: change.as_deref(),
    });
    conn.execute(
        "UPDATE events SET payload = ?1, payload_sha256 = ?2, entry_hash = ?3 WHERE seq = ?4",
        rusqlite::params![forged_payload, payload_sha, forged_entry, target],
    )
    .unwrap();
    let report = verify(&path);
    assert!(!report.ok);
    // Row 10 is self-consistent now; the chain breaks where row 11 still points at the old hash.
    assert_eq!(report.first_bad_seq, Some(target + 1));
    assert!(
        problems(&report).contains(&format!("seq {}: prev_hash", target + 1)),
        "{}",
        problems(&report)
    );
}

#[test]
fn a_relabelled_event_is_detected() {
    let (_dir, path) = ledger_with(0);
    vandal(&path)
        .execute(
            "UPDATE events SET session = 'another-session' WHERE seq = 4",
            [],
        )
        .unwrap();
    let report = verify(&path);
    assert_eq!(report.first_bad_seq, Some(4));
    assert!(
        problems(&report).contains("entry hash"),
        "{}",
        problems(&report)
    );
}

#[test]
fn a_truncated_file_is_detected() {
    let (_dir, path) = ledger_with(600);
    // All connections are closed, so the WAL has been checkpointed into the main file.
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 100_000, "the file spans many pages ({len} bytes)");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len * 2 / 3).unwrap();
    drop(file);
    let report = agentloop_ledger::verify_path(&path, &VerifyOptions::default()).unwrap();
    assert!(!report.ok, "a truncated ledger must not verify");
    let text = problems(&report);
    assert!(text.contains("database disk image is malformed"), "{text}");
    // The events before the cut still check out; the first lost one is named.
    let first_bad = report.first_bad_seq.expect("a seq is named");
    assert!(first_bad > 1 && first_bad <= 644, "{text}");
    assert_eq!(report.events_checked, first_bad - 1, "{text}");
    assert!(
        text.contains(&format!("events from seq {first_bad} on cannot be read")),
        "{text}"
    );
}

/// A git repository whose `agentloop/s1` branch carries the given commit messages.
fn repo_with_messages(messages: &[String]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init(dir.path()).unwrap();
    let sig = git2::Signature::now("agentloop", "agentloop@example.invalid").unwrap();
    let tree_id = repo.index().unwrap().write_tree().unwrap();
    let tree = repo.find_tree(tree_id).unwrap();
    let mut parent: Option<git2::Commit> = None;
    for message in messages {
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let oid = repo
            .commit(None, &sig, &sig, message, &tree, &parents)
            .unwrap();
        parent = Some(repo.find_commit(oid).unwrap());
    }
    repo.branch("agentloop/s1", parent.as_ref().unwrap(), true)
        .unwrap();
    dir
}

fn head_at(path: &Path, seq: i64) -> ChainHead {
    let event: Event = Ledger::open(path).unwrap().event(seq).unwrap().unwrap();
    ChainHead {
        seq,
        hash: event.entry_hash,
    }
}

fn verify_against(path: &Path, repo: &Path) -> agentloop_ledger::VerifyReport {
    Ledger::open(path)
        .unwrap()
        .verify_with(&VerifyOptions {
            repo: Some(repo),
            ..Default::default()
        })
        .unwrap()
}

#[test]
fn matching_git_trailers_verify() {
    let (_dir, path) = ledger_with(0);
    let messages = vec![
        "base\n".to_string(),
        format!(
            "Merge c1a0001\n\nChange-Id: c1a0001\n{}\n",
            trailer::format(&head_at(&path, 10))
        ),
        format!(
            "Revert c5e0005\n\n{}\n",
            trailer::format(&head_at(&path, 30))
        ),
    ];
    let repo = repo_with_messages(&messages);
    let report = verify_against(&path, repo.path());
    assert!(report.ok, "{}", problems(&report));
    assert_eq!(report.trailers_checked, 2);
}

#[test]
fn a_git_trailer_that_disagrees_is_detected() {
    let (_dir, path) = ledger_with(0);
    let wrong = ChainHead {
        seq: 12,
        hash: "e".repeat(64),
    };
    let messages = vec![
        format!(
            "Merge c1a0001\n\n{}\n",
            trailer::format(&head_at(&path, 10))
        ),
        format!("Merge c5e0005\n\n{}\n", trailer::format(&wrong)),
    ];
    let repo = repo_with_messages(&messages);
    let report = verify_against(&path, repo.path());
    assert!(!report.ok);
    assert_eq!(report.first_bad_seq, Some(12));
    assert!(
        problems(&report).contains("anchors hash eeeeeeeeeeee but the ledger holds"),
        "{}",
        problems(&report)
    );
}

#[test]
fn events_removed_from_the_tail_are_caught_by_a_trailer() {
    let (_dir, path) = ledger_with(0);
    let last = Ledger::open(&path).unwrap().head().unwrap().unwrap();
    let repo = repo_with_messages(&[format!("Merge\n\n{}\n", trailer::format(&last))]);
    vandal(&path)
        .execute("DELETE FROM events WHERE seq >= ?1", [last.seq - 2])
        .unwrap();
    // The shortened chain is internally consistent...
    assert!(verify(&path)
        .problems
        .iter()
        .all(|p| !p.message.contains("prev_hash")));
    // ...but the repository remembers where it ended.
    let report = verify_against(&path, repo.path());
    assert!(!report.ok);
    assert_eq!(report.first_bad_seq, Some(last.seq));
    assert!(
        problems(&report).contains("has no such event"),
        "{}",
        problems(&report)
    );
}

#[test]
fn vandalised_derived_tables_are_detected() {
    let (_dir, path) = ledger_with(0);
    Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE changes SET status = 'accepted' WHERE change_id = 'c2b0002'",
            [],
        )
        .unwrap();
    let ledger = Ledger::open(&path).unwrap();
    assert!(
        ledger.verify().unwrap().ok,
        "the events themselves are intact"
    );
    let report = ledger
        .verify_with(&VerifyOptions {
            check_views: true,
            ..Default::default()
        })
        .unwrap();
    assert!(!report.ok);
    assert!(
        problems(&report).contains("derived tables differ"),
        "{}",
        problems(&report)
    );
    // Verification changed nothing: the vandalised row is still there until a rebuild.
    assert_eq!(
        ledger.change("c2b0002").unwrap().unwrap().status.as_str(),
        "accepted"
    );
}

#[test]
fn stored_decisions_are_recomputed_through_the_hook() {
    let (_dir, path) = ledger_with(0);
    let ledger = Ledger::open(&path).unwrap();
    // A stand-in decision rule: accept iff p < 0.05 and the gain is at least min_effect.
    let rule = |e: &Event| -> Option<Result<(), String>> {
        if e.kind != EventKind::Decision || e.payload.get("p_value").is_none() {
            return None;
        }
        let p = e.payload["p_value"].as_f64().unwrap();
        let gain = -e.payload["mean_diff"].as_f64().unwrap();
        let min_effect = e.payload["min_effect"].as_f64().unwrap();
        let expected = if p < 0.05 && gain >= min_effect {
            "accepted"
        } else {
            "rejected"
        };
        let stored = e.payload["outcome"].as_str().unwrap();
        (stored != expected)
            .then(|| Err(format!("stored {stored}, rule gives {expected}")))
            .or(Some(Ok(())))
    };
    let report = ledger
        .verify_with(&VerifyOptions {
            recompute: Some(&rule),
            ..Default::default()
        })
        .unwrap();
    assert!(report.ok, "{}", problems(&report));
    assert_eq!(report.recomputed, 3);

    let appended = ledger
        .append(ev(
            EventKind::Decision,
            Some("c2b0002"),
            json!({"outcome": "accepted", "p_value": 0.4, "mean_diff": -0.001, "min_effect": 0.003,
                   "rule_version": "two-stage/1"}),
        ))
        .unwrap();
    let report = ledger
        .verify_with(&VerifyOptions {
            recompute: Some(&rule),
            ..Default::default()
        })
        .unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_bad_seq, Some(appended.seq));
    assert!(problems(&report)
        .contains("decision does not reproduce: stored accepted, rule gives rejected"));
}

/// The attack of issue 18: with the triggers dropped, the events after the last merge are
/// deleted together with their derived rows. No trailer anchors them, but the head ref's
/// reflog kept every head the loop anchored, so the cut is still found.
#[test]
fn a_tail_cut_after_the_last_trailer_is_caught_by_the_head_refs_reflog() {
    use agentloop_ledger::head_ref;
    let (_dir, path) = ledger_with(0);
    let ledger = Ledger::open(&path).unwrap();
    let end = ledger.head().unwrap().unwrap();
    let merged_at = end.seq - 4;
    let repo = repo_with_messages(&[format!(
        "Merge\n\n{}\n",
        trailer::format(&head_at(&path, merged_at))
    )]);
    // The loop anchors a decision and a session end after the merge.
    for seq in [merged_at, end.seq - 1, end.seq] {
        head_ref::record(repo.path(), &head_at(&path, seq), "decision").unwrap();
    }
    let report = verify_against(&path, repo.path());
    assert!(report.ok, "{}", problems(&report));
    assert_eq!(
        report.ref_anchors_checked, 4,
        "three reflog entries and the ref itself"
    );

    let conn = vandal(&path);
    conn.execute("DELETE FROM events WHERE seq > ?1", [merged_at])
        .unwrap();
    // The derived rows go too, so the views agree with the shortened chain.
    drop(conn);
    Ledger::open(&path).unwrap().rebuild_views().unwrap();
    assert!(verify(&path).ok, "the cut ledger is consistent on its own");

    let report = verify_against(&path, repo.path());
    assert!(!report.ok);
    let text = problems(&report);
    assert!(text.contains("the ledger was truncated"), "{text}");
    assert!(text.contains(&format!("anchors seq {}", end.seq)), "{text}");
    assert!(
        text.contains("refs/agentloop/ledger-head reflog entry 0"),
        "{text}"
    );
    assert_eq!(report.first_bad_seq, Some(end.seq - 1));
}

/// A whole ledger rebuilt with a consistent chain (every hash recomputed) still disagrees with
/// the hashes the reflog kept.
#[test]
fn a_ledger_rebuilt_with_a_consistent_chain_disagrees_with_the_head_ref() {
    use agentloop_ledger::head_ref;
    let (_dir, original) = ledger_with(0);
    let repo = repo_with_messages(&["base\n".to_string()]);
    head_ref::record(repo.path(), &head_at(&original, 9), "merge").unwrap();
    // The same events appended again: a valid chain, other timestamps, other hashes.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let (_dir2, forged) = ledger_with(0);
    assert!(verify(&forged).ok);
    let text = problems(&verify_against(&forged, repo.path()));
    assert!(
        text.contains("the ledger was rewritten") && text.contains("at seq 9"),
        "{text}"
    );
}
