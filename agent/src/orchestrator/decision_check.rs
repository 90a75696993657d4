//! `ledger verify`'s recompute hook: re-runs each stored decision and checks that the event's
//! headline (outcome, statistics) is what that decision gives.
//!
//! The ledger crate knows nothing of the decision engine; it calls [`Recomputer::recompute`]
//! for every event, in seq order, through `VerifyOptions::recompute`. The recomputer folds each
//! session as it goes, so a v3 decision's cached trunk values (the common control it started
//! from) are checked against the runs the ledger recorded before it.

use std::cell::RefCell;
use std::collections::BTreeMap;

use agentloop_guardrails::guards::{self, Guard, GuardResult};
use agentloop_guardrails::process::{self, Decision as ProcessRecord, Verdict};
use agentloop_ledger::state::SessionState;
use agentloop_ledger::{Event, EventKind};
use serde_json::Value;

/// `ledger verify`'s hook with memory: each session's state as of the event being checked
/// (`None` once a session's events stop folding; that is reported once).
#[derive(Default)]
pub struct Recomputer {
    sessions: RefCell<BTreeMap<String, Option<SessionState>>>,
}

impl Recomputer {
    /// [`recompute`], plus the v3 common-control check on decision events.
    pub fn recompute(&self, event: &Event) -> Option<Result<(), String>> {
        let own = recompute(event);
        let cached = self.fold(event);
        match (own, cached) {
            (Some(Err(e)), _) | (_, Some(Err(e))) => Some(Err(e)),
            (own, cached) => own.or(cached),
        }
    }

    /// Checks `event` against its session's state before it, then folds it in.
    fn fold(&self, event: &Event) -> Option<Result<(), String>> {
        let mut sessions = self.sessions.borrow_mut();
        let Some(state) = sessions.get_mut(&event.session) else {
            if event.kind != EventKind::SessionStart {
                return None; // not a session's event: nothing to check it against
            }
            let begun = SessionState::begin(event);
            let failed = begun
                .as_ref()
                .err()
                .map(|e| Err(format!("session start: {e}")));
            sessions.insert(event.session.clone(), begun.ok());
            return failed;
        };
        let current = state.as_mut()?;
        let checked = if event.kind == EventKind::Decision {
            match (
                cached_values(current, event),
                declared_guards(current, event),
            ) {
                (Some(Err(e)), _) | (_, Some(Err(e))) => Some(Err(e)),
                (cached, guards) => cached.or(guards),
            }
        } else {
            None
        };
        if let Err(e) = current.apply(event) {
            *state = None;
            return Some(Err(format!(
                "session {} cannot be folded from here on, so its later v3 decisions are not checked against their trunk runs: {e}",
                event.session
            )));
        }
        checked
    }
}

/// A v3 decision's cached trunk values against the runs recorded before it (`None`: not a v3
/// decision; a record that does not parse is reported by [`recompute`]).
fn cached_values(before: &SessionState, event: &Event) -> Option<Result<(), String>> {
    let record = event.payload.get("process")?;
    let decision: ProcessRecord = serde_json::from_value(record.clone()).ok()?;
    decision.common.as_ref()?;
    let Some(change) = event.change.as_deref() else {
        return Some(Err("a v3 decision names no change".into()));
    };
    Some(super::common_control::check_cached(
        before, change, &decision,
    ))
}

/// Whether a decision the statistical rule accepted carries a result for every guard its
/// session declared at start, with the declared bound (`None`: nothing to check: no guards
/// declared, as in sessions recorded before they were, a greedy rule, or no accept). Without
/// this a loop could drop a guard, or loosen its bound, and every recorded result would still
/// recompute.
fn declared_guards(state: &SessionState, event: &Event) -> Option<Result<(), String>> {
    let declared: Vec<Guard> =
        match serde_json::from_value(state.start.extra.get("guards")?.clone()) {
            Ok(d) => d,
            Err(e) => {
                return Some(Err(format!(
                    "session start: `guards` is not a list of guards: {e}"
                )))
            }
        };
    if declared.is_empty() {
        return None;
    }
    let decision: ProcessRecord =
        serde_json::from_value(event.payload.get("process")?.clone()).ok()?;
    if decision.verdict != Verdict::Accept || decision.rule.is_greedy() {
        return None;
    }
    let change = event.change.as_deref().unwrap_or("?");
    let recorded: Vec<GuardResult> = match event.payload.get("guards") {
        Some(v) => match serde_json::from_value(v.clone()) {
            Ok(r) => r,
            Err(e) => return Some(Err(format!("change {change}: not a guards record: {e}"))),
        },
        None => Vec::new(),
    };
    let missing: Vec<String> = declared
        .iter()
        .filter(|g| {
            !recorded
                .iter()
                .any(|r| r.metric == g.metric && r.bound == g.bound)
        })
        .map(|g| format!("{} {:?}", g.metric, g.bound))
        .collect();
    if missing.is_empty() {
        return Some(Ok(()));
    }
    Some(Err(format!(
        "change {change}: the rule accepted it, but its decision records no result for the guard(s) the session declared: {}",
        missing.join(", ")
    )))
}

/// `None` for events with nothing to recompute; for a decision event, whether its stored
/// outcome and statistics reproduce from the engine record in its `process` field (alone:
/// [`Recomputer`] adds the checks that need the events before it).
pub fn recompute(event: &Event) -> Option<Result<(), String>> {
    if event.kind == EventKind::Compare {
        return Some(super::compare::stats::recheck(&event.payload));
    }
    if event.kind != EventKind::Decision {
        return None;
    }
    match event.payload.get("process") {
        Some(record) => Some(check(&event.payload, record)),
        // Policy, build and smoke-crash decisions involve no statistics; but an accept is only
        // ever made by the statistical test, so one without its record cannot be trusted.
        None if is_accept(&event.payload) => Some(Err(
            "an accepted decision carries no `process` record to recompute".into(),
        )),
        None => None,
    }
}

fn is_accept(payload: &Value) -> bool {
    payload.get("outcome").and_then(Value::as_str) == Some("accepted")
}

fn check(payload: &Value, record: &Value) -> Result<(), String> {
    process::recompute(record)?;
    let decision: ProcessRecord = serde_json::from_value(record.clone())
        .map_err(|e| format!("not a decision record: {e}"))?;
    let mut expected =
        super::change::decision_record::decision_payload(&decision).map_err(|e| e.to_string())?;
    if let Some(stored) = payload.get("guards") {
        // The guards, recomputed from their stored pairs, may have turned the accept around.
        let results: Vec<GuardResult> = serde_json::from_value(stored.clone())
            .map_err(|e| format!("not a guards record: {e}"))?;
        guards::recompute(&results)?;
        super::change::decision_record::apply_guards(&mut expected, results)
            .map_err(|e| e.to_string())?;
    }
    let expected = serde_json::to_value(&expected).map_err(|e| e.to_string())?;
    let Value::Object(expected) = expected else {
        return Err("the recomputed decision is not a JSON object".into());
    };
    // The record itself was just re-run; every other field is the headline derived from it.
    for (key, want) in expected.iter().filter(|(key, _)| *key != "process") {
        let got = payload.get(key).unwrap_or(&Value::Null);
        if got != want {
            return Err(format!(
                "stored {key} {} but its decision record gives {}",
                short(got),
                short(want)
            ));
        }
    }
    Ok(())
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: EventKind, payload: Value) -> Event {
        Event {
            seq: 7,
            ts: "2026-01-01T00:00:00.000Z".into(),
            kind,
            session: "s1".into(),
            change: Some("c1a2b3c".into()),
            payload,
            payload_sha256: String::new(),
            prev_hash: String::new(),
            entry_hash: String::new(),
        }
    }

    #[test]
    fn only_decisions_are_recomputed_and_an_accept_needs_its_record() {
        let propose = event(EventKind::Propose, json!({"outcome": "accepted"}));
        assert_eq!(recompute(&propose), None);
        let policy_reject = event(
            EventKind::Decision,
            json!({"outcome": "policy_rejected", "rule_version": "v1"}),
        );
        assert_eq!(recompute(&policy_reject), None);
        let bare_accept = event(
            EventKind::Decision,
            json!({"outcome": "accepted", "rule_version": "v1", "p_value": 0.001}),
        );
        let err = recompute(&bare_accept).unwrap().unwrap_err();
        assert!(err.contains("no `process` record"), "{err}");
    }

    #[test]
    fn a_record_that_is_not_a_decision_is_reported() {
        let garbled = event(
            EventKind::Decision,
            json!({"outcome": "rejected", "rule_version": "v1", "process": {"verdict": 3}}),
        );
        let err = recompute(&garbled).unwrap().unwrap_err();
        assert!(err.contains("not a decision record"), "{err}");
    }
}
