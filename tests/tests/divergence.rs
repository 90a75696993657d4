//! The loop's runs are under the divergence watch: a training run that streams a NaN loss and
//! then hangs is killed at once and recorded `diverged`, not left to reach its timeout.

use agentloop_ledger::EventKind;
use agentloop_tests::toy::ToyOptions;
use agentloop_tests::{check, kinds, offline_start, TargetRepo};

agentloop_tests::e2e_paths!();

#[test]
fn a_run_streaming_a_nan_loss_then_hanging_is_killed_and_recorded_diverged() {
    // lr = 5: the toy prints a null loss, then sleeps past the 1-minute run timeout.
    let repo = TargetRepo::toy(&ToyOptions {
        offline_values: vec![5.0],
        ..ToyOptions::default()
    })
    .unwrap();
    let (code, _, err) = repo
        .run_agentloop(BIN.as_ref(), &target_dir(), &offline_start("1"))
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let summary = check::consistent(&repo, "main").unwrap();
    let events = repo.events().unwrap();
    let smoke = kinds(&events, EventKind::RunResult)
        .into_iter()
        .find(|e| e.payload["stage"] == "smoke")
        .expect("a smoke run");
    let p = &smoke.payload;
    assert_eq!(p["exit_status"], "diverged", "{p}");
    assert!(
        p["killed_because"].as_str().unwrap().contains("non-finite"),
        "{p}"
    );
    assert!(
        p["wall_s"].as_f64().unwrap() < 30.0,
        "killed long before the timeout: {p}"
    );
    let decision = summary.decisions.values().next().unwrap();
    assert_eq!(
        serde_json::to_value(decision.outcome).unwrap(),
        "crashed",
        "{decision:?}"
    );
    assert!(summary.merged.is_empty());
}
