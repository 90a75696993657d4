//! The review commands' output: what `agentloop ledger list|show|verify` print.

mod common;

use agentloop_ledger::review::{self, Style};
use agentloop_ledger::{ChangeStatus, EventKind, Ledger, VerifyOptions};
use common::{ev, populate};
use serde_json::json;

const PLAIN: Style = Style { color: false };

fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::new();
    f(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn list_filters_by_status_and_prints_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path().join("l.db")).unwrap();
    let f = populate(&ledger);
    let all = text(|o| review::list(&ledger, None, false, PLAIN, o).unwrap());
    let lines: Vec<&str> = all.lines().collect();
    assert!(lines[0].starts_with("CHANGE"), "{all}");
    assert_eq!(lines.len(), 6, "{all}");

    let rolled = text(|o| {
        review::list(
            &ledger,
            Some("rolled-back".parse().unwrap()),
            false,
            PLAIN,
            o,
        )
        .unwrap()
    });
    assert_eq!(rolled.lines().count(), 2, "{rolled}");
    assert!(
        rolled.contains(&f.rolled_back) && rolled.contains("rolled-back"),
        "{rolled}"
    );
    assert!(rolled.contains("-0.00600"), "the effect is shown: {rolled}");

    let policy = text(|o| {
        review::list(&ledger, Some(ChangeStatus::PolicyRejected), false, PLAIN, o).unwrap()
    });
    assert!(
        policy.contains(&f.policy_rejected) && !policy.contains(&f.accepted),
        "{policy}"
    );

    let json =
        text(|o| review::list(&ledger, Some(ChangeStatus::Accepted), true, PLAIN, o).unwrap());
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["change_id"], f.accepted.as_str());
    assert_eq!(rows[0]["status"], "accepted");
}

#[test]
fn unknown_status_filter_lists_the_valid_ones() {
    let err = "merged".parse::<ChangeStatus>().unwrap_err();
    assert!(err.to_string().contains("policy-rejected"), "{err}");
}

#[test]
fn show_prints_rationale_diff_seeds_statistics_and_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path().join("l.db")).unwrap();
    let f = populate(&ledger);
    let out = text(|o| review::show(&ledger, "c1a", PLAIN, o).unwrap());
    for expected in [
        "change c1a0001  [accepted]",
        "Because change c1a0001 should lower val_bpb.",
        "model        claude-test via anthropic",
        "tokens       1200 prompt + 300 completion ($0.0120)",
        "-    3e-4",
        "+    6e-4",
        "Runs per seed (val_bpb)",
        "p = 1.00e-3",
        "outcome accepted: accepted by rule",
        "rule two-stage/1",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }
    // Three paired seeds, each with both arms and the gain (baseline - candidate, the sign
    // of the decision's mean_diff: positive = the change helped).
    let seed_rows: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("confirm"))
        .collect();
    assert_eq!(seed_rows.len(), 3, "{out}");
    assert!(
        seed_rows[0].contains("1.50000")
            && seed_rows[0].contains("1.49000")
            && seed_rows[0].contains("+0.01000"),
        "{out}"
    );
    let timeline = out.split("Timeline").nth(1).unwrap();
    assert_eq!(
        timeline.lines().filter(|l| !l.trim().is_empty()).count(),
        11,
        "{timeline}"
    );

    let crashed = text(|o| review::show(&ledger, &f.crashed, PLAIN, o).unwrap());
    assert!(crashed.contains("crashed"), "{crashed}");

    let err = review::show(&ledger, "c", PLAIN, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("ambiguous"), "{err}");
}

#[test]
fn show_colours_a_search_replace_patch_as_a_unified_diff() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path().join("l.db")).unwrap();
    let patch = "trainer/src/model.rs\n<<<<<<< SEARCH\nlet a = 1;\nlet b = 2;\n=======\nlet a = 1;\nlet b = 3;\n>>>>>>> REPLACE\n";
    ledger
        .append(ev(
            EventKind::Propose,
            Some("cbeef01"),
            json!({"description": "d", "rationale": "r", "patch": patch, "patch_format": "search_replace"}),
        ))
        .unwrap();
    let out = text(|o| review::show(&ledger, "cbeef", Style { color: true }, o).unwrap());
    assert!(
        out.contains("\x1b[1m--- a/trainer/src/model.rs\x1b[0m"),
        "{out}"
    );
    assert!(out.contains("\x1b[31m-let b = 2;\x1b[0m"), "{out}");
    assert!(out.contains("\x1b[32m+let b = 3;\x1b[0m"), "{out}");
    assert!(out.contains("  let a = 1;"), "context line kept: {out}");
}

#[test]
fn verify_output_names_the_first_bad_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let ledger = Ledger::open(&path).unwrap();
    populate(&ledger);
    let mut out = Vec::new();
    assert!(review::verify(&ledger, &VerifyOptions::default(), &mut out).unwrap());
    assert!(String::from_utf8(out)
        .unwrap()
        .contains("OK: the ledger verifies"));

    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("DROP TRIGGER events_refuse_update; UPDATE events SET ts = '2020-01-01T00:00:00.000Z' WHERE seq = 3;")
        .unwrap();
    let mut out = Vec::new();
    assert!(!review::verify(&ledger, &VerifyOptions::default(), &mut out).unwrap());
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("FAILED: 1 problem(s), first bad seq 3"),
        "{out}"
    );
}
