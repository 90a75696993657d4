//! The final verdict: a session killed while it compares base and final trunk resumes and
//! finishes it, reusing the runs already recorded; a session whose budget runs out keeps the
//! verdict's time and still ends on time, with the verdict recorded; `ledger verify` passes.

use std::time::{Duration, Instant};

use agentloop_ledger::payload::{Compare, RunResult, Stage};
use agentloop_ledger::{Event, EventKind};
use agentloop_tests::toy::ToyOptions;
use agentloop_tests::{check, kill_group, kinds, output, spawn_group, TargetRepo};

agentloop_tests::e2e_paths!();

fn verdict_runs(events: &[Event]) -> Vec<RunResult> {
    kinds(events, EventKind::RunResult)
        .iter()
        .map(|e| e.payload_as::<RunResult>().unwrap())
        .filter(|r| r.stage == Stage::Compare)
        .collect()
}

#[test]
fn a_kill_during_the_verdict_resumes_and_finishes_it_without_running_twice() {
    let repo = TargetRepo::toy(&ToyOptions {
        verdict_pairs: 6,
        ..ToyOptions::default()
    })
    .unwrap();
    let args = [
        "start",
        "--budget",
        "10m",
        "--max-changes",
        "3",
        "--agent",
        "offline",
    ];
    let mut cmd = repo.agentloop(BIN.as_ref(), &target_dir(), &args);
    cmd.env("AGENTLOOP_PAUSE_AFTER_EVENT_MS", "150");
    let mut child = spawn_group(cmd).unwrap();
    let started = Instant::now();
    loop {
        let events = repo.events().unwrap_or_default();
        if verdict_runs(&events).len() >= 3 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "ended before the verdict"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no verdict runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_group(&mut child);
    let before = verdict_runs(&repo.events().unwrap());
    assert!(kinds(&repo.events().unwrap(), EventKind::Compare).is_empty());

    let out = output(repo.agentloop(BIN.as_ref(), &target_dir(), &args)).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("final verdict (base vs trunk): holdout gain"),
        "{stdout}"
    );
    let events = repo.events().unwrap();
    let compares = kinds(&events, EventKind::Compare);
    assert_eq!(compares.len(), 1);
    let v: Compare = compares[0].payload_as().unwrap();
    assert_eq!(v.n, 6);
    // The runs recorded before the kill were reused: each (side, seed) ran once.
    let after = verdict_runs(&events);
    assert_eq!(after.len(), 12, "{} runs before the kill", before.len());
    for r in &before {
        assert!(
            v.pairs.iter().any(|p| p.seed == r.seed),
            "reused seed {}",
            r.seed
        );
    }
    assert_eq!(events.last().unwrap().kind, EventKind::SessionEnd);
    check::consistent(&repo, "main").unwrap();
    repo.verify_with_cli(BIN.as_ref(), &target_dir()).unwrap();
    let worktrees = repo.git(&["worktree", "list"]).unwrap();
    assert_eq!(worktrees.lines().count(), 1, "{worktrees}");
}

#[test]
fn the_verdicts_time_comes_out_of_the_budget() {
    // Runs of 0.3 s and more learning rates than the budget can decide: only the budget ends
    // the session, and the verdict (8 pairs, 16 runs) must fit in it.
    let repo = TargetRepo::toy(&ToyOptions {
        verdict_pairs: 8,
        run_sleep_s: 0.3,
        offline_values: vec![
            0.01, 0.03, 0.003, 0.02, 0.05, 0.007, 0.015, 0.04, 0.005, 0.025, 0.012, 0.008,
        ],
        ..ToyOptions::default()
    })
    .unwrap();
    let budget = 25.0;
    let started = Instant::now();
    let out = output(repo.agentloop(
        BIN.as_ref(),
        &target_dir(),
        &["start", "--budget", "25s", "--agent", "offline"],
    ))
    .unwrap();
    let took = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ended: budget_spent"), "{stdout}");
    let events = repo.events().unwrap();
    let end = kinds(&events, EventKind::SessionEnd)[0];
    let said = end.payload["verdict"].as_str().unwrap_or_default();
    assert!(
        said.starts_with("holdout gain") || said == "no merges: nothing to compare",
        "{:?}",
        end.payload
    );
    if said.starts_with("holdout gain") {
        assert_eq!(kinds(&events, EventKind::Compare).len(), 1);
    }
    // Ends on time: the sandbox probe and a run in flight are the only grace.
    assert!(took < budget + 5.0, "took {took:.1}s of a {budget}s budget");
    repo.verify_with_cli(BIN.as_ref(), &target_dir()).unwrap();
}

#[test]
fn a_trunk_that_never_moved_has_nothing_to_compare_and_runs_nothing() {
    // The only learning rate offered (0.3) is worse than the trunk's (0.1): nothing merges.
    let repo = TargetRepo::toy(&ToyOptions {
        verdict_pairs: 4,
        offline_values: vec![0.3],
        ..ToyOptions::default()
    })
    .unwrap();
    let out = output(repo.agentloop(
        BIN.as_ref(),
        &target_dir(),
        &["start", "--budget", "5m", "--agent", "offline"],
    ))
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("final verdict (base vs trunk): no merges: nothing to compare"),
        "{stdout}"
    );
    let events = repo.events().unwrap();
    assert!(kinds(&events, EventKind::Compare).is_empty());
    assert!(verdict_runs(&events).is_empty());
    let end = kinds(&events, EventKind::SessionEnd)[0];
    assert_eq!(end.payload["verdict"], "no merges: nothing to compare");
    let status = output(repo.agentloop(BIN.as_ref(), &target_dir(), &["status"])).unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("verdict   no merges: nothing to compare"),
        "{status}"
    );
}
