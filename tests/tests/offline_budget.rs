//! `agentloop start --budget 3m` with the offline proposer on a fresh clone, with the default
//! configuration: the session ends by itself within the budget (plus a small grace for the
//! run in flight), records decisions, and leaves a ledger that verifies.

use std::time::{Duration, Instant};

use agentloop_ledger::EventKind;
use agentloop_tests::{check, output, TargetOptions, TargetRepo};

agentloop_tests::e2e_paths!();

#[test]
fn three_minute_offline_session_on_a_fresh_clone() {
    let origin = TargetRepo::create(&TargetOptions::real()).unwrap();
    let repo = origin.clone_fresh().unwrap();
    // Build the trainer once outside the budget, as a user's earlier `cargo build` would have:
    // what is measured is the loop, not a cold compile of candle.
    let warm = std::process::Command::new("cargo")
        .args(["build", "-p", "agentloop-trainer"])
        .current_dir(&repo.root)
        .env("CARGO_TARGET_DIR", target_dir())
        .status()
        .unwrap();
    assert!(warm.success());

    let started = Instant::now();
    let out = output(repo.agentloop(
        BIN.as_ref(),
        &target_dir(),
        &["start", "--budget", "3m", "--agent", "offline"],
    ))
    .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let events = repo.events().unwrap();
    // The base commit's build precedes the budget (a set-up step, timed in session_start).
    let base_build_s = events
        .iter()
        .find(|e| e.kind == EventKind::SessionStart)
        .and_then(|e| e.payload["base_build_s"].as_f64())
        .expect("session_start times the base build");
    let budgeted = took.saturating_sub(Duration::from_secs_f64(base_build_s));
    assert!(
        budgeted < Duration::from_secs(180 + 60),
        "the budget was overrun: {took:?}, {base_build_s:.1}s of it building the base"
    );
    let summary = check::consistent(&repo, "main").unwrap();
    assert!(
        !summary.decisions.is_empty(),
        "no decision in 3 minutes:\n{stderr}"
    );
    let end = events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::SessionEnd)
        .unwrap();
    assert!(
        ["budget_spent", "proposer_exhausted"]
            .contains(&end.payload["reason"].as_str().unwrap_or("")),
        "{:?}",
        end.payload
    );
    assert!(events.iter().any(|e| e.kind == EventKind::Calibration));
}
