//! The tail-cut attack of issue 18 on a ledger the loop wrote: with the append-only triggers
//! dropped, the events after the last merge or rollback are deleted together with their
//! derived rows. The chain is consistent on its own, but the loop anchored the head outside
//! the database at every decision and at session end, and `agentloop ledger verify` names
//! the truncation. The user's `[ledger] anchor_command` got every anchored head too.

use agentloop_ledger::head_ref::HEAD_REF;
use agentloop_ledger::EventKind;
use agentloop_tests::toy::ToyOptions;
use agentloop_tests::TargetRepo;

agentloop_tests::e2e_paths!();

fn run(repo: &TargetRepo, args: &[&str]) -> (i32, String, String) {
    repo.run_agentloop(BIN.as_ref(), &target_dir(), args)
        .unwrap()
}

#[test]
fn cutting_the_ledgers_tail_after_the_last_merge_is_reported_by_verify() {
    let outside = tempfile::tempdir().unwrap();
    let sink = outside.path().join("heads.txt");
    // The anchor command records every head it is given, and fails at session end: a failure
    // is logged and does not stop the loop.
    let command = format!(
        "echo \"$1:$2:$3 $AGENTLOOP_LEDGER_SEQ\" >> '{}'; test \"$3\" != session_end || {{ echo 'remote log unreachable' >&2; exit 7; }}",
        sink.display()
    );
    let opts = ToyOptions {
        executor: format!(
            "[ledger]\nanchor_command = {}\n",
            toml::Value::String(command)
        ),
        ..ToyOptions::default()
    };
    let repo = TargetRepo::toy(&opts).unwrap();
    let (code, _, err) = run(
        &repo,
        &[
            "start",
            "--budget",
            "10m",
            "--max-changes",
            "3",
            "--agent",
            "offline",
        ],
    );
    assert_eq!(code, 0, "{err}");
    repo.verify_with_cli(BIN.as_ref(), &target_dir()).unwrap();

    let events = repo.events().unwrap();
    let end = events.last().unwrap();
    assert_eq!(end.kind, EventKind::SessionEnd);
    let last_merge = events
        .iter()
        .rfind(|e| matches!(e.kind, EventKind::Merge | EventKind::Rollback))
        .expect("the toy session merges a change")
        .seq;
    assert!(last_merge < end.seq);

    // The ref holds the final head, its reflog one value per settling event (read as git
    // stores it: `git reflog` lists commits only, and these entries point at blobs).
    let value = repo.git(&["cat-file", "-p", HEAD_REF]).unwrap();
    assert_eq!(value.trim(), format!("{}:{}", end.seq, end.entry_hash));
    let reflog =
        std::fs::read_to_string(repo.root.join(".git/logs").join(HEAD_REF)).unwrap_or_default();
    assert!(
        reflog.contains(&format!("{}:{} (session_end)", end.seq, end.entry_hash)),
        "reflog: {reflog}\nanchor log: {:?}\n{err}",
        std::fs::read_to_string(repo.root.join(".agentloop/anchors.log"))
    );
    let settling = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::Decision
                    | EventKind::Merge
                    | EventKind::Rollback
                    | EventKind::Audit
                    | EventKind::SessionEnd
            )
        })
        .count();
    assert_eq!(reflog.lines().count(), settling, "{reflog}");
    // The anchor command got the same heads, as arguments and in the environment.
    let sent = std::fs::read_to_string(&sink).unwrap();
    assert_eq!(sent.lines().count(), settling, "{sent}");
    assert!(
        sent.contains(&format!(
            "{}:{}:session_end {}",
            end.seq, end.entry_hash, end.seq
        )),
        "{sent}"
    );
    let log = std::fs::read_to_string(repo.root.join(".agentloop/anchors.log")).unwrap();
    assert!(
        log.contains("anchor_command") && log.contains("remote log unreachable"),
        "{log}"
    );
    assert_eq!(
        log.lines().count(),
        1,
        "only the session end's command failed: {log}"
    );

    // The attack: triggers dropped, the tail deleted, the derived rows cleaned up.
    let db = repo.root.join(".agentloop/ledger.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA foreign_keys = OFF;
         DROP TRIGGER events_refuse_update; DROP TRIGGER events_refuse_delete;",
    )
    .unwrap();
    let cut = conn
        .execute("DELETE FROM events WHERE seq > ?1", [last_merge])
        .unwrap();
    assert!(cut > 0);
    drop(conn);
    let (code, _, err) = run(&repo, &["ledger", "rebuild-views"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&repo, &["ledger", "verify", "--no-git"]);
    assert_eq!(
        code, 0,
        "without the anchors the cut ledger looks whole:\n{out}{err}"
    );

    let (code, out, err) = run(&repo, &["ledger", "verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("FAILED"), "{out}");
    assert!(
        out.contains("the ledger was truncated")
            && out.contains(&format!("anchors seq {}", end.seq))
            && out.contains(&format!("ends at seq {last_merge}"))
            && out.contains(HEAD_REF),
        "{out}"
    );
}
