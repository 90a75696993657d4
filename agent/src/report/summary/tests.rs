use super::change::effect_of;
use super::*;
use agentloop_ledger::payload::Decision;
use serde_json::json;

fn decision(base: f64, cand: f64, diff: f64, ci: (f64, f64)) -> Decision {
    serde_json::from_value(json!({
        "outcome": "accepted", "rule_version": "t", "mean_baseline": base,
        "mean_candidate": cand, "mean_diff": diff, "ci_low": ci.0, "ci_high": ci.1,
    }))
    .unwrap()
}

#[test]
fn effect_is_trunk_minus_candidate_whichever_way_the_record_stored_it() {
    // The decision engine's convention: mean_diff is the gain.
    let (e, ci) = effect_of(&decision(1.5, 1.49, 0.01, (0.006, 0.014)));
    assert!((e.unwrap() - 0.01).abs() < 1e-12);
    assert_eq!(ci, Some((0.006, 0.014)));
    // A record of candidate minus trunk is turned around, interval too.
    let (e, ci) = effect_of(&decision(1.5, 1.49, -0.01, (-0.014, -0.006)));
    assert!((e.unwrap() - 0.01).abs() < 1e-12);
    assert_eq!(ci, Some((0.006, 0.014)));
}

fn event(seq: i64, ts: &str, kind: EventKind, payload: serde_json::Value) -> Event {
    Event {
        seq,
        ts: ts.into(),
        kind,
        session: "s".into(),
        change: None,
        payload,
        payload_sha256: String::new(),
        prev_hash: String::new(),
        entry_hash: String::new(),
    }
}

#[test]
fn budget_counts_only_the_time_the_loop_was_alive() {
    let start = json!({"budget_s": 600.0, "repo": "/r", "trunk_branch": "t",
                       "base_commit": "b", "agent": {"kind": "offline"}});
    let budget = |resumed: bool| json!({"spent_s": 0.0, "remaining_s": 0.0, "resumed": resumed});
    let events = [
        event(1, "2026-01-01T00:00:00Z", EventKind::SessionStart, start),
        event(2, "2026-01-01T00:01:00Z", EventKind::Budget, budget(false)),
        // Killed here; resumed an hour later.
        event(3, "2026-01-01T01:01:00Z", EventKind::Budget, budget(true)),
        event(4, "2026-01-01T01:01:30Z", EventKind::Budget, budget(false)),
    ];
    let s = SessionSummary::from_events(&events).unwrap();
    assert_eq!(s.spent_s, 90.0);
    assert_eq!(s.left_s, 510.0);
    assert_eq!(s.ended, None);
}

#[test]
fn a_payload_that_does_not_fit_its_kind_is_named() {
    let events = [event(
        7,
        "2026-01-01T00:00:00Z",
        EventKind::SessionStart,
        json!({"budget_s": "lots"}),
    )];
    let err = SessionSummary::from_events(&events).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("event 7 (session_start)"), "{text}");
}
