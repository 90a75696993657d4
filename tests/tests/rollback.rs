//! `agentloop rollback`: a clean revert becomes a new trunk commit with a rollback event linked
//! to the original merge and a re-measurement of the trunk; a revert that conflicts with a later
//! change is refused, naming it, and changes nothing; rolling back a rejected or an already
//! rolled-back change is a clear error.

use agentloop::testing::{CannedReply, ScriptedServer};
use agentloop_ledger::payload::DecisionOutcome;
use agentloop_ledger::EventKind;
use agentloop_tests::toy::ToyOptions;
use agentloop_tests::{check, TargetRepo};

agentloop_tests::e2e_paths!();

fn edit(description: &str, search: &str, replace: &str) -> CannedReply {
    CannedReply::openai_chat(
        &format!(
            "DESCRIPTION: {description}\nRATIONALE: closer to the optimum.\n\nconfig.toml\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"
        ),
        100,
        40,
    )
}

fn run(repo: &TargetRepo, args: &[&str]) -> (i32, String, String) {
    repo.run_agentloop(BIN.as_ref(), &target_dir(), args)
        .unwrap()
}

#[test]
fn rollback_reverts_cleanly_or_refuses_and_names_the_conflict() {
    // The cheapest session that merges: it also runs the final verdict (3 pairs on holdout).
    let repo = TargetRepo::toy(&ToyOptions {
        verdict_pairs: 3,
        ..ToyOptions::default()
    })
    .unwrap();
    let server = ScriptedServer::start([
        edit("lr 0.1 -> 0.03", "lr = 0.1", "lr = 0.03"),
        edit(
            "weight decay 0.5 -> 0.1",
            "weight_decay = 0.5",
            "weight_decay = 0.1",
        ),
        edit("lr 0.03 -> 0.01", "lr = 0.03", "lr = 0.01"),
        edit("lr 0.01 -> 0.3", "lr = 0.01", "lr = 0.3"),
    ])
    .unwrap();
    let url = server.openai_base_url();
    let (code, out, err) = run(
        &repo,
        &[
            "start",
            "--budget",
            "5m",
            "--max-changes",
            "4",
            "--agent",
            "openai",
            "--model",
            "m",
            "--base-url",
            &url,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("final verdict (base vs trunk): holdout gain"),
        "{out}"
    );
    let summary = check::consistent(&repo, "main").unwrap();
    // The final verdict: base (lr 0.1, wd 0.5) vs final trunk (lr 0.01, wd 0.1) on holdout,
    // where the toy's weight decay is best at 0.9: 1.66 -> 1.64, a gain of 0.020 on every seed.
    let events = repo.events().unwrap();
    let verdict = events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::Compare)
        .expect("a final verdict");
    let v: agentloop_ledger::payload::Compare = verdict.payload_as().unwrap();
    assert_eq!(v.extra["final_verdict"], true);
    assert_eq!((v.split.as_str(), v.n), ("holdout", 3));
    assert!((v.mean_diff + 0.02).abs() < 1e-6, "{v:?}");
    assert_eq!(events.last().unwrap().kind, EventKind::SessionEnd);
    let calibrated: Vec<u64> = events
        .iter()
        .filter(|e| e.kind == EventKind::Calibration)
        .flat_map(|e| {
            e.payload_as::<agentloop_ledger::payload::Calibration>()
                .unwrap()
                .baseline
        })
        .map(|s| s.seed)
        .collect();
    assert!(
        v.pairs.iter().all(|p| !calibrated.contains(&p.seed)),
        "fresh seeds"
    );
    let (_, status, _) = run(&repo, &["status"]);
    assert!(
        status.contains("verdict   holdout gain 0.020 val_bpb [0.020, 0.020] (3 pairs)"),
        "{status}"
    );
    let report_dir = repo.root.join(".agentloop/test-report");
    let (code, _, err) = run(&repo, &["report", "--out", report_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(report_dir.join("report.html")).unwrap();
    assert!(
        html.contains("final verdict: holdout gain 0.020 val_bpb"),
        "the report shows the verdict"
    );
    let events = repo.events().unwrap();
    let mut order: Vec<String> = Vec::new();
    for e in &events {
        if let Some(c) = &e.change {
            if !order.contains(c) {
                order.push(c.clone());
            }
        }
    }
    let outcomes: Vec<DecisionOutcome> =
        order.iter().map(|c| summary.decisions[c].outcome).collect();
    assert_eq!(
        outcomes,
        vec![
            DecisionOutcome::Accepted,
            DecisionOutcome::Accepted,
            DecisionOutcome::Accepted,
            DecisionOutcome::Rejected
        ]
    );
    let (a, b, c, d) = (&order[0], &order[1], &order[2], &order[3]);
    let trunk = format!("agentloop/{}", summary.session);
    let tip_before = repo.git(&["rev-parse", &trunk]).unwrap();
    let events_before = repo.events().unwrap().len();

    // A rejected change cannot be rolled back.
    let (code, _, err) = run(&repo, &["rollback", d]);
    assert_eq!(code, 1);
    assert!(
        err.contains("was not accepted") && err.contains("rejected"),
        "{err}"
    );

    // Reverting A conflicts with C (same line): refused, naming C, nothing changed.
    let (code, _, err) = run(&repo, &["rollback", &a[..5]]);
    assert_eq!(code, 1);
    assert!(
        err.contains("conflicts") && err.contains(c.as_str()),
        "{err}"
    );
    assert_eq!(repo.git(&["rev-parse", &trunk]).unwrap(), tip_before);
    assert_eq!(repo.events().unwrap().len(), events_before);

    // B reverts cleanly: a new trunk commit, a linked rollback event, a re-measured trunk.
    let (code, out, err) = run(&repo, &["rollback", b]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("re-measured"), "{out}");
    let tip_after = repo.git(&["rev-parse", &trunk]).unwrap();
    assert_ne!(tip_after, tip_before);
    let parent = repo
        .git(&["rev-parse", &format!("{}^", tip_after.trim())])
        .unwrap();
    assert_eq!(
        parent, tip_before,
        "the revert is a new commit on top of the trunk"
    );
    let config = repo
        .git(&["show", &format!("{trunk}:config.toml")])
        .unwrap();
    assert!(
        config.contains("weight_decay = 0.5") && config.contains("lr = 0.01"),
        "{config}"
    );
    let message = repo.git(&["log", "-1", "--format=%B", &trunk]).unwrap();
    assert!(
        message.contains(&format!("Change-Id: {b}")) && message.contains("Ledger-Head:"),
        "{message}"
    );

    let events = repo.events().unwrap();
    let merge_seq = events
        .iter()
        .find(|e| e.kind == EventKind::Merge && e.change.as_deref() == Some(b.as_str()))
        .unwrap()
        .seq;
    let rollback = events
        .iter()
        .find(|e| e.kind == EventKind::Rollback)
        .unwrap();
    assert_eq!(rollback.change.as_deref(), Some(b.as_str()));
    assert_eq!(
        rollback.payload["original_merge_seq"].as_i64(),
        Some(merge_seq)
    );
    assert_eq!(
        rollback.payload["revert_commit"].as_str(),
        Some(tip_after.trim())
    );
    let remeasured = events
        .iter()
        .filter(|e| e.seq > rollback.seq && e.kind == EventKind::Calibration)
        .count();
    assert_eq!(remeasured, 1, "the trunk is re-measured after the rollback");
    assert!(repo.ledger().unwrap().verify().unwrap().ok);

    // Twice is an error.
    let (code, _, err) = run(&repo, &["rollback", b]);
    assert_eq!(code, 1);
    assert!(err.contains("already rolled back"), "{err}");

    let (code, out, _) = run(&repo, &["status", "--json"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["rolled_back"], 1);
    assert_eq!(status["accepted"], 3);
}
