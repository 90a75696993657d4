//! The process runner and the circuit breaker, with real processes.

use std::process::Command;
use std::time::Duration;

use agentloop_guardrails::run_policy::{
    run_with_limits, CircuitBreaker, LoopOutcome, RunLimits, RunStatus,
};

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script);
    c
}

fn limits(timeout_ms: u64) -> RunLimits {
    RunLimits::new(Duration::from_millis(timeout_ms), None)
}

#[test]
fn exit_codes_map_to_statuses_and_output_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.log");
    for (code, status) in [
        (0, RunStatus::Ok),
        (1, RunStatus::Crashed),
        (2, RunStatus::Crashed),
        (3, RunStatus::Diverged),
        (4, RunStatus::TimedOut),
    ] {
        let out = run_with_limits(
            sh(&format!("echo out{code}; echo err{code} >&2; exit {code}")),
            &limits(20_000),
            &log,
        )
        .unwrap();
        assert_eq!(out.status, status, "exit {code}");
        assert_eq!(out.exit_code, Some(code));
        assert!(out.killed_because.is_none());
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("out0") && text.contains("err3") && text.contains("out4"),
        "{text}"
    );
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("grandchild-survived");
    // The grandchild would create the marker after 2 s if it outlived the kill.
    let script = format!("(sleep 2; touch '{}') & sleep 30", marker.display());
    let out = run_with_limits(sh(&script), &limits(300), &dir.path().join("log")).unwrap();
    assert_eq!(out.status, RunStatus::TimedOut);
    assert_eq!(out.exit_code, None);
    assert!(out.wall_s < 10.0);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !marker.exists(),
        "a process of the group outlived the timeout"
    );
}

#[test]
fn memory_ceiling_kills_the_run() {
    let dir = tempfile::tempdir().unwrap();
    // python3 is not guaranteed; a shell string doubling to ~64 MiB grows the shell's RSS.
    let script =
        "s=xxxxxxxxxxxxxxxx; i=0; while [ $i -lt 22 ]; do s=\"$s$s\"; i=$((i+1)); done; sleep 30";
    let mut l = limits(60_000);
    l.memory_limit = Some(32 * 1024 * 1024);
    let out = run_with_limits(sh(script), &l, &dir.path().join("log")).unwrap();
    assert_eq!(out.status, RunStatus::OutOfMemory, "{out:?}");
    assert!(out.peak_rss_bytes > 32 * 1024 * 1024);
    assert!(out.killed_because.unwrap().contains("ceiling"));
}

#[test]
fn a_nan_or_exploding_loss_aborts_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let nan = "echo '{\"event\":\"step\",\"step\":1,\"loss\":4.2}'; echo '{\"event\":\"step\",\"step\":2,\"loss\":null}'; sleep 30";
    let out = run_with_limits(sh(nan), &limits(60_000), &dir.path().join("log")).unwrap();
    assert_eq!(out.status, RunStatus::Diverged, "{out:?}");
    assert!(out.wall_s < 20.0);
    let blowup = "echo '{\"event\":\"step\",\"loss\":4.0}'; echo '{\"event\":\"step\",\"loss\":400.0}'; sleep 30";
    let out = run_with_limits(sh(blowup), &limits(60_000), &dir.path().join("log")).unwrap();
    assert_eq!(out.status, RunStatus::Diverged);
    // A decreasing loss is left alone.
    let fine = "echo '{\"event\":\"step\",\"loss\":4.0}'; echo '{\"event\":\"step\",\"loss\":3.0}'";
    let out = run_with_limits(sh(fine), &limits(60_000), &dir.path().join("log")).unwrap();
    assert_eq!(out.status, RunStatus::Ok);
}

#[test]
fn missing_program_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let err = run_with_limits(
        Command::new("/nonexistent/trainer"),
        &limits(1000),
        &dir.path().join("log"),
    );
    assert!(err.is_err());
}

#[test]
fn circuit_breaker_trips_after_k_consecutive_failures() {
    let mut b = CircuitBreaker::new(3);
    let crash = || LoopOutcome::Crashed {
        detail: "exit 1".into(),
    };
    let reject = || LoopOutcome::PolicyRejected {
        code: "frozen_path".into(),
    };
    assert!(b.record(crash()).is_none());
    assert!(b.record(reject()).is_none());
    assert!(b.record(LoopOutcome::Decided).is_none()); // a decision resets the streak
    assert!(b.record(crash()).is_none());
    assert!(b.record(reject()).is_none());
    let trip = b.record(crash()).expect("third consecutive failure trips");
    assert!(
        trip.reason.contains("3 consecutive failures"),
        "{}",
        trip.reason
    );
    assert!(
        trip.reason.contains("2 crashes, 1 policy rejections"),
        "{}",
        trip.reason
    );
    assert!(trip.reason.contains("exit 1"), "{}", trip.reason);
    // State persists through JSON.
    b.record(reject());
    let back: CircuitBreaker = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
    assert_eq!(back, b);
}
