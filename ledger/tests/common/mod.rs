//! A realistic session shared by the integration tests: five changes that end accepted,
//! rejected, crashed, policy-rejected and rolled back, with calibration, runs and decisions.
#![allow(dead_code)]

use agentloop_ledger::{EventKind, Ledger, NewEvent};
use serde_json::{json, Value};

pub const SESSION: &str = "s20260101";

pub struct Fixture {
    pub accepted: String,
    pub rejected: String,
    pub crashed: String,
    pub policy_rejected: String,
    pub rolled_back: String,
}

pub fn ev(kind: EventKind, change: Option<&str>, payload: Value) -> NewEvent {
    NewEvent {
        kind,
        session: SESSION.to_string(),
        change: change.map(str::to_string),
        payload,
    }
}

pub fn propose(ledger: &Ledger, change: &str, description: &str) {
    ledger
        .append(ev(
            EventKind::Propose,
            Some(change),
            json!({
                "description": description,
                "rationale": format!("Because {description} should lower val_bpb.\nSecond line."),
                "patch": "--- a/trainer/src/optim.rs\n+++ b/trainer/src/optim.rs\n@@ -1,3 +1,3 @@\n fn lr() -> f64 {\n-    3e-4\n+    6e-4\n }\n",
                "patch_format": "unified",
                "prompt_template_sha256": "ab".repeat(32),
                "model": "claude-test",
                "provider": "anthropic",
                "prompt_tokens": 1200,
                "completion_tokens": 300,
                "cost_usd": 0.012,
                "parent_commit": "1111111111111111111111111111111111111111",
                "attempt": 1,
            }),
        ))
        .unwrap();
}

pub fn run(ledger: &Ledger, change: Option<&str>, arm: &str, seed: u64, value: f64, status: &str) {
    let commit = if arm == "baseline" {
        "1111111"
    } else {
        "2222222"
    };
    ledger
        .append(ev(
            EventKind::RunResult,
            change,
            json!({
                "arm": arm, "stage": "confirm", "commit": commit, "seed": seed, "split": "val",
                "budget": "60000tokens",
                "metrics": {"val_bpb": value, "peak_mem_bytes": 2_147_483_648u64, "steps": 50},
                "exit_status": status, "exit_code": if status == "ok" { 0 } else { 1 },
                "wall_s": 12.5, "log_sha256": "cd".repeat(32), "worker": "w0",
            }),
        ))
        .unwrap();
}

pub fn decide(ledger: &Ledger, change: &str, outcome: &str, mean_diff: f64, p: f64) {
    ledger
        .append(ev(
            EventKind::Decision,
            Some(change),
            json!({
                "outcome": outcome, "stage": "confirm", "test": "paired_t_one_sided", "n": 3,
                "mean_baseline": 1.5, "mean_candidate": 1.5 + mean_diff, "mean_diff": mean_diff,
                "sd_diff": 0.002, "ci_low": mean_diff - 0.003, "ci_high": mean_diff + 0.003,
                "p_value": p, "thresholds": {"screen_p": 0.2, "confirm_p": 0.05},
                "min_effect": 0.003, "rule_version": "two-stage/1",
                "reason": format!("{outcome} by rule"),
                "diffs": [mean_diff, mean_diff, mean_diff],
            }),
        ))
        .unwrap();
}

/// Fills `ledger` with one session of five changes.
pub fn populate(ledger: &Ledger) -> Fixture {
    let f = Fixture {
        accepted: "c1a0001".into(),
        rejected: "c2b0002".into(),
        crashed: "c3c0003".into(),
        policy_rejected: "c4d0004".into(),
        rolled_back: "c5e0005".into(),
    };
    ledger
        .append(ev(
            EventKind::SessionStart,
            None,
            json!({"budget_s": 3600.0, "repo": "/tmp/repo", "trunk_branch": "agentloop/s1",
                   "base_commit": "1111111", "agent": {"kind": "offline"},
                   "rule": {"version": "two-stage/1"}}),
        ))
        .unwrap();
    ledger
        .append(ev(
            EventKind::Calibration,
            None,
            json!({"trunk_commit": "1111111", "baseline": [{"seed": 1, "value": 1.5}],
                   "replays": [{"seed": 1, "values": [1.5, 1.5001]}], "run_sd": 0.002,
                   "paired_sd": 0.0015, "nondeterminism_floor": 0.0001, "min_effect": 0.002}),
        ))
        .unwrap();
    run(ledger, None, "baseline", 1, 1.5, "ok");

    for (id, outcome, diff, p) in [
        (f.accepted.as_str(), "accepted", -0.01, 0.001),
        (f.rejected.as_str(), "rejected", 0.002, 0.7),
        (f.rolled_back.as_str(), "accepted", -0.006, 0.01),
    ] {
        propose(ledger, id, &format!("change {id}"));
        ledger
            .append(ev(
                EventKind::Policy,
                Some(id),
                json!({"outcome": "accepted"}),
            ))
            .unwrap();
        ledger
            .append(ev(
                EventKind::Build,
                Some(id),
                json!({"commit": "2222222", "ok": true, "attempt": 1}),
            ))
            .unwrap();
        for seed in [11u64, 12, 13] {
            run(ledger, Some(id), "baseline", seed, 1.5, "ok");
            run(ledger, Some(id), "candidate", seed, 1.5 + diff, "ok");
        }
        decide(ledger, id, outcome, diff, p);
        if outcome == "accepted" {
            ledger
                .append(ev(
                    EventKind::Merge,
                    Some(id),
                    json!({"commit": "3333333", "trunk_branch": "agentloop/s1"}),
                ))
                .unwrap();
        } else {
            ledger
                .append(ev(
                    EventKind::Discard,
                    Some(id),
                    json!({"kept_ref": format!("refs/agentloop/rejected/s1/{id}")}),
                ))
                .unwrap();
        }
    }

    propose(ledger, &f.crashed, "a change that crashes");
    run(
        ledger,
        Some(f.crashed.as_str()),
        "candidate",
        21,
        f64::NAN,
        "crashed",
    );
    ledger
        .append(ev(EventKind::Decision, Some(f.crashed.as_str()), json!({"outcome": "crashed", "stage": "smoke", "rule_version": "two-stage/1", "reason": "exit code 1"})))
        .unwrap();

    propose(ledger, &f.policy_rejected, "edits the evaluation");
    ledger
        .append(ev(EventKind::Policy, Some(f.policy_rejected.as_str()), json!({"outcome": "rejected", "code": "frozen_path", "message": "trainer/src/eval.rs is frozen"})))
        .unwrap();

    ledger
        .append(ev(EventKind::Rollback, Some(f.rolled_back.as_str()), json!({"reverted_commit": "3333333", "revert_commit": "4444444", "original_merge_seq": 30, "reason": "audit flagged"})))
        .unwrap();
    ledger
        .append(ev(
            EventKind::Budget,
            None,
            json!({"spent_s": 100.0, "remaining_s": 3500.0, "in_flight": 0}),
        ))
        .unwrap();
    ledger
        .append(ev(
            EventKind::SessionEnd,
            None,
            json!({"reason": "budget", "accepted": 2, "rejected": 1, "crashed": 1}),
        ))
        .unwrap();
    f
}
