//! The audit schedule read from a real ledger's history.

use super::*;
use agentloop_guardrails::audit::AuditRule;
use agentloop_ledger::{EventKind, Ledger, NewEvent};
use serde_json::{json, Value};

const BASE: &str = "0000000000000000000000000000000000000000";

/// A session's events appended to a real ledger, replayed into its history.
struct Events(Vec<(EventKind, Option<String>, Value)>);

impl Events {
    fn new() -> Events {
        Events(vec![(
            EventKind::SessionStart,
            None,
            json!({"budget_s": 600.0, "repo": "/r", "trunk_branch": "agentloop/s1",
                   "base_commit": BASE, "agent": {"kind": "offline"}}),
        )])
    }

    fn push(&mut self, kind: EventKind, change: Option<&str>, payload: Value) -> &mut Self {
        self.0.push((kind, change.map(str::to_string), payload));
        self
    }

    /// An accepted change whose decision claimed `gain`, merged as commit `commit`.
    fn merge(&mut self, change: &str, commit: &str, gain: f64) -> &mut Self {
        self.push(
            EventKind::Propose,
            Some(change),
            json!({"description": change, "rationale": "r", "patch": "p",
                   "patch_format": "search_replace"}),
        )
        .push(
            EventKind::Decision,
            Some(change),
            json!({"outcome": "accepted", "rule_version": "v",
                   "mean_baseline": 1.0, "mean_candidate": 1.0 - gain, "mean_diff": gain}),
        )
        .push(
            EventKind::Merge,
            Some(change),
            json!({"commit": commit, "trunk_branch": "agentloop/s1"}),
        )
    }

    fn rollback(&mut self, change: &str, revert: &str, audit: Option<u64>) -> &mut Self {
        self.push(
            EventKind::Rollback,
            Some(change),
            json!({"reverted_commit": "x", "revert_commit": revert, "reason": "r",
                   "audit": audit}),
        )
    }

    fn audit(&mut self, outcome: &str, extra: Value) -> &mut Self {
        let mut payload = json!({"trunk_commit": "t", "reference_commit": BASE,
                                 "outcome": outcome});
        payload
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        self.push(EventKind::Audit, None, payload)
    }

    fn history(&self) -> SessionState {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path().join("ledger.db")).unwrap();
        for (kind, change, payload) in &self.0 {
            ledger
                .append(NewEvent {
                    kind: *kind,
                    session: "s1".into(),
                    change: change.clone(),
                    payload: payload.clone(),
                })
                .unwrap();
        }
        SessionState::load(&ledger, "s1").unwrap()
    }
}

fn rule(every_merges: usize) -> AuditRule {
    AuditRule {
        every_merges,
        ..AuditRule::default()
    }
}

fn commit(n: u8) -> String {
    format!("{n:040}")
}

fn changes(p: &Pending) -> Vec<String> {
    match p {
        Pending::Start { merges, .. } | Pending::Resolve { merges, .. } => {
            merges.iter().map(|m| m.change.clone()).collect()
        }
        Pending::NotDue { .. } => Vec::new(),
    }
}

#[test]
fn due_after_every_merges_merges_counting_from_the_session_start() {
    let mut e = Events::new();
    e.merge("c000001", &commit(1), 0.1);
    assert_eq!(
        pending(&e.history(), &rule(2)),
        Pending::NotDue { merges: 1 }
    );
    e.merge("c000002", &commit(2), 0.2);
    let p = pending(&e.history(), &rule(2));
    let Pending::Start {
        number,
        reference,
        merges,
    } = &p
    else {
        panic!("{p:?}")
    };
    assert_eq!((*number, reference.as_str()), (1, BASE));
    assert_eq!(merges[1].commit, commit(2));
    assert!((merges.iter().map(|m| m.claimed_gain).sum::<f64>() - 0.3).abs() < 1e-12);
    assert_eq!(
        pending(&e.history(), &rule(3)),
        Pending::NotDue { merges: 2 }
    );
    assert_eq!(
        pending(&e.history(), &rule(0)),
        Pending::NotDue { merges: 2 },
        "off"
    );
}

#[test]
fn rolled_back_merges_do_not_count() {
    let mut e = Events::new();
    e.merge("c000001", &commit(1), 0.1)
        .merge("c000002", &commit(2), 0.1)
        .rollback("c000001", &commit(3), None);
    assert_eq!(
        pending(&e.history(), &rule(2)),
        Pending::NotDue { merges: 1 }
    );
    e.merge("c000003", &commit(4), 0.1);
    assert_eq!(
        changes(&pending(&e.history(), &rule(2))),
        ["c000002", "c000003"]
    );
}

#[test]
fn merges_count_from_the_last_audit_whose_trunk_becomes_the_reference() {
    let mut e = Events::new();
    e.merge("c000001", &commit(1), 0.1)
        .merge("c000002", &commit(2), 0.1)
        .audit(
            "held",
            json!({"audit": 1, "changes": ["c000001", "c000002"], "action": "none"}),
        )
        .merge("c000003", &commit(3), 0.1);
    assert_eq!(
        pending(&e.history(), &rule(2)),
        Pending::NotDue { merges: 1 }
    );
    e.merge("c000004", &commit(4), 0.1);
    let p = pending(&e.history(), &rule(2));
    assert!(
        matches!(&p, Pending::Start { number: 2, reference, .. } if *reference == commit(2)),
        "{p:?}"
    );
    assert_eq!(changes(&p), ["c000003", "c000004"]);
}

#[test]
fn a_flagged_audit_is_resolved_before_anything_else_and_counted_once() {
    let mut e = Events::new();
    e.merge("c000001", &commit(1), 0.1)
        .merge("c000002", &commit(2), 0.1)
        .audit(
            "flagged",
            json!({"audit": 1, "changes": ["c000001", "c000002"], "action": "bisect_rollback"}),
        );
    let p = pending(&e.history(), &rule(2));
    assert!(matches!(&p, Pending::Resolve { number: 1, .. }), "{p:?}");
    assert_eq!(changes(&p), ["c000001", "c000002"]);
    // A probe is a step of the audit, not a resolution.
    e.audit(
        "held",
        json!({"of_audit": 1, "bisect": {"index": 0, "change": "c000001"}}),
    );
    assert!(matches!(
        pending(&e.history(), &rule(2)),
        Pending::Resolve { .. }
    ));
    // The rollback resolves it; the revert commit is the next reference.
    e.rollback("c000002", &commit(5), Some(1));
    assert_eq!(
        pending(&e.history(), &rule(2)),
        Pending::NotDue { merges: 0 }
    );
    e.merge("c000003", &commit(6), 0.1)
        .merge("c000004", &commit(7), 0.1);
    let p = pending(&e.history(), &rule(2));
    assert!(
        matches!(&p, Pending::Start { number: 2, reference, .. } if *reference == commit(5)),
        "{p:?}"
    );
    assert_eq!(changes(&p), ["c000003", "c000004"]);
}

#[test]
fn flag_only_and_refused_rollbacks_resolve_an_audit() {
    let mut e = Events::new();
    e.merge("c000001", &commit(1), 0.1)
        .merge("c000002", &commit(2), 0.1)
        .audit(
            "flagged",
            json!({"audit": 1, "changes": ["c000001", "c000002"], "action": "flag_only"}),
        );
    assert_eq!(
        pending(&e.history(), &rule(2)),
        Pending::NotDue { merges: 0 }
    );

    let mut e = Events::new();
    e.merge("c000001", &commit(1), 0.1)
        .merge("c000002", &commit(2), 0.1)
        .audit(
            "flagged",
            json!({"audit": 1, "changes": ["c000001", "c000002"], "action": "bisect_rollback"}),
        )
        .audit(
            "flagged",
            json!({"of_audit": 1, "resolution": "rollback_refused"}),
        );
    assert_eq!(
        pending(&e.history(), &rule(2)),
        Pending::NotDue { merges: 0 }
    );
}
