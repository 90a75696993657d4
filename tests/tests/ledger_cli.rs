//! `agentloop ledger list|show|verify|export` on a ledger the loop itself wrote (a toy-target
//! session of three changes: two accepted, one rejected), through the real binary.

use agentloop_ledger::{EventKind, NewEvent};
use agentloop_tests::toy::ToyOptions;
use agentloop_tests::TargetRepo;
use serde_json::Value;

agentloop_tests::e2e_paths!();

fn run(repo: &TargetRepo, args: &[&str]) -> (i32, String, String) {
    repo.run_agentloop(BIN.as_ref(), &target_dir(), args)
        .unwrap()
}

fn ledger(repo: &TargetRepo, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["ledger"];
    all.extend_from_slice(args);
    run(repo, &all)
}

/// The ids of the changes with `status` in `ledger list --json`.
fn ids_with(list: &Value, status: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == status)
        .map(|c| c["change_id"].as_str().unwrap().to_string())
        .collect()
}

/// The shortest prefix of `id` that no other id shares.
fn unique_prefix(id: &str, all: &[String]) -> String {
    (2..=id.len())
        .map(|n| &id[..n])
        .find(|p| all.iter().filter(|o| o.starts_with(p)).count() == 1)
        .unwrap()
        .to_string()
}

#[test]
fn ledger_review_commands_on_a_ledger_the_loop_wrote() {
    let repo = TargetRepo::toy(&ToyOptions::default()).unwrap();
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

    // list --json: every change, with the derived status and statistics.
    let (code, out, err) = ledger(&repo, &["list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    let all: Vec<String> = ids_with(&list, "accepted")
        .into_iter()
        .chain(ids_with(&list, "rejected"))
        .collect();
    assert_eq!(list.as_array().unwrap().len(), 3, "{out}");
    let accepted = ids_with(&list, "accepted");
    let rejected = ids_with(&list, "rejected");
    assert_eq!((accepted.len(), rejected.len()), (2, 1), "{out}");
    assert!(list[0]["p_value"].is_number() && list[0]["n"].is_number());

    // list --status filters; the table has no colour codes when stdout is not a terminal.
    let (code, out, _) = ledger(&repo, &["list", "--status", "rejected"]);
    assert_eq!(code, 0);
    assert!(out.contains(&rejected[0]), "{out}");
    assert!(
        !accepted.iter().any(|id| out.contains(id.as_str())),
        "{out}"
    );
    assert!(!out.contains('\x1b'), "{out}");
    let (_, out, _) = ledger(&repo, &["list", "--status", "rolled-back"]);
    assert_eq!(out.trim(), "no changes recorded with status rolled-back");

    // show by unique prefix: rationale, diff, per-seed runs, decision statistics, timeline.
    let id = &accepted[0];
    let (code, out, err) = ledger(&repo, &["show", &unique_prefix(id, &all)]);
    assert_eq!(code, 0, "{err}");
    for part in [
        format!("change {id}  [accepted]"),
        "Rationale".into(),
        "Patch".into(),
        "-lr = 0.1".into(),
        "Runs per seed (val_bpb)".into(),
        "confirm".into(),
        "Decision (seq".into(),
        "test paired_t_one_sided".into(),
        "outcome accepted".into(),
        "Timeline".into(),
        "merge".into(),
    ] {
        assert!(out.contains(&part), "missing {part:?} in:\n{out}");
    }
    assert!(!out.contains('\x1b'), "no colour on a pipe:\n{out}");
    // Per-seed gains carry the decision's sign: an accepted change gained on every pair.
    let confirm_gains: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("confirm"))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(confirm_gains.len(), 3, "{out}");
    assert!(confirm_gains.iter().all(|g| g.starts_with('+')), "{out}");

    // A prefix every id shares is refused, listing the candidates.
    let (code, _, err) = ledger(&repo, &["show", "c"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is ambiguous") && all.iter().all(|id| err.contains(id.as_str())),
        "{err}"
    );
    let (code, _, err) = ledger(&repo, &["show", "czzz"]);
    assert_eq!(code, 1);
    assert!(err.contains("czzz"), "{err}");

    // verify: chain, views, git trailers, and every decision re-run.
    let (code, out, err) = ledger(&repo, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("recomputed       3"), "{out}");
    assert!(out.contains("OK: the ledger verifies"), "{out}");

    // export in each format.
    let events = repo.events().unwrap();
    let (code, out, _) = ledger(&repo, &["export", "--format", "jsonl"]);
    assert_eq!(code, 0);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), events.len());
    assert_eq!(
        lines.last().unwrap()["entry_hash"],
        events.last().unwrap().entry_hash
    );
    let (code, out, _) = ledger(&repo, &["export", "--format", "json"]);
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc["events"].as_array().unwrap().len(),
        events.len(),
        "{out}"
    );
    assert_eq!(doc["head"]["hash"], events.last().unwrap().entry_hash);
    let (code, out, _) = ledger(&repo, &["export", "--format", "tsv"]);
    assert_eq!(code, 0);
    let mut rows = out.lines();
    assert!(rows
        .next()
        .unwrap()
        .starts_with("commit\tval_bpb\tmemory_gb\tstatus"));
    assert_eq!(
        rows.filter(|r| r.contains("\taccepted\t") || r.contains("\trejected\t"))
            .count(),
        3,
        "{out}"
    );
}

#[test]
fn verify_names_a_decision_whose_stored_outcome_does_not_reproduce() {
    let repo = TargetRepo::toy(&ToyOptions::default()).unwrap();
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
    let (code, out, _) = ledger(&repo, &["verify", "--no-git"]);
    assert_eq!(code, 0, "{out}");

    // Through the API, so the chain is intact: only the recomputation can catch it.
    let l = repo.ledger().unwrap();
    let rejected = l
        .events()
        .unwrap()
        .into_iter()
        .find(|e| e.kind == EventKind::Decision && e.payload["outcome"] == "rejected")
        .expect("the session rejected a change");
    let mut forged = rejected.payload.clone();
    forged["outcome"] = "accepted".into();
    let seq = l
        .append(NewEvent {
            kind: EventKind::Decision,
            session: rejected.session.clone(),
            change: rejected.change.clone(),
            payload: forged,
        })
        .unwrap()
        .seq;
    drop(l);

    let (code, out, _) = ledger(&repo, &["verify", "--no-git"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("first bad seq {seq}")), "{out}");
    assert!(
        out.contains(&format!("seq {seq}: decision does not reproduce"))
            && out.contains("stored outcome \"accepted\""),
        "{out}"
    );
}
