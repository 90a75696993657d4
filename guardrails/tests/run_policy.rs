//! The circuit breaker. (The divergence watch is tested in `run_policy`'s unit tests and,
//! with real processes, through the loop's process runner in `agent`.)

use agentloop_guardrails::run_policy::{CircuitBreaker, LoopOutcome};

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
