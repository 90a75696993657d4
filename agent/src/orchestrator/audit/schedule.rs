//! When an audit is due and what it covers, read from the session's history (pure: no git,
//! no runs).

use agentloop_guardrails::audit::AuditRule;
use agentloop_ledger::payload::Audit;
use agentloop_ledger::state::SessionState;
use serde_json::Value;

use super::{Merged, Pending};
use crate::orchestrator::seeds::seed_for;
use crate::orchestrator::trunk::Trunk;

/// Reads the session's audits from its history (pure: no git, no runs).
pub fn pending(history: &SessionState, rule: &AuditRule) -> Pending {
    let last = history
        .audits
        .iter()
        .rev()
        .filter(|(_, a)| a.extra.get("of_audit").is_none())
        .find_map(|(seq, a)| Some((*seq, a, a.extra.get("audit")?.as_u64()?)));
    let Some((seq, audit, number)) = last else {
        return due(
            history,
            rule,
            1,
            history.start_seq,
            &history.start.base_commit,
        );
    };
    if !is_resolved(history, audit, number) {
        let ids: Vec<String> = audit
            .extra
            .get("changes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        return Pending::Resolve {
            number,
            audit_seq: seq,
            audit: Box::new(audit.clone()),
            merges: merged(history, i64::MIN)
                .into_iter()
                .filter(|m| ids.contains(&m.change))
                .collect(),
        };
    }
    let end = end_of_audit(history, number, seq);
    let reference = trunk_at(history, end);
    due(history, rule, number + 1, end, &reference)
}

fn due(
    history: &SessionState,
    rule: &AuditRule,
    number: u64,
    since_seq: i64,
    reference: &str,
) -> Pending {
    let merges = merged(history, since_seq);
    if !rule.is_due(merges.len()) {
        return Pending::NotDue {
            merges: merges.len(),
        };
    }
    Pending::Start {
        number,
        reference: reference.to_string(),
        merges,
    }
}

/// Held, flagged with `flag_only`, or flagged and then rolled back or refused a rollback.
fn is_resolved(history: &SessionState, audit: &Audit, number: u64) -> bool {
    audit.outcome != "flagged"
        || audit.extra.get("action").and_then(Value::as_str) != Some("bisect_rollback")
        || history
            .changes
            .iter()
            .filter_map(|c| c.rollback.as_ref())
            .any(|(_, r)| r.extra.get("audit").and_then(Value::as_u64) == Some(number))
        || steps_of(history, number).any(|(_, a)| a.extra.contains_key("resolution"))
}

/// The bisection probes and the resolution recorded for audit `number`.
pub(super) fn steps_of(history: &SessionState, number: u64) -> impl Iterator<Item = &(i64, Audit)> {
    history
        .audits
        .iter()
        .filter(move |(_, a)| a.extra.get("of_audit").and_then(Value::as_u64) == Some(number))
}

/// The last event that belongs to audit `number` (the audit, its steps, its rollback).
fn end_of_audit(history: &SessionState, number: u64, audit_seq: i64) -> i64 {
    let steps = steps_of(history, number).map(|(s, _)| *s);
    let rollbacks = history
        .changes
        .iter()
        .filter_map(|c| c.rollback.as_ref())
        .filter(|(_, r)| r.extra.get("audit").and_then(Value::as_u64) == Some(number))
        .map(|(s, _)| *s);
    steps.chain(rollbacks).fold(audit_seq, i64::max)
}

/// The trunk commit as of `seq`: the last merge or rollback at or before it, else the base.
fn trunk_at(history: &SessionState, seq: i64) -> String {
    let mut moves: Vec<(i64, &str)> = Vec::new();
    for c in &history.changes {
        if let Some((s, m)) = &c.merge {
            moves.push((*s, &m.commit));
        }
        if let Some((s, r)) = &c.rollback {
            moves.push((*s, &r.revert_commit));
        }
    }
    moves
        .into_iter()
        .filter(|(s, _)| *s <= seq)
        .max_by_key(|(s, _)| *s)
        .map_or(history.start.base_commit.clone(), |(_, c)| c.to_string())
}

/// Changes merged after `seq` and not rolled back, in merge order.
fn merged(history: &SessionState, seq: i64) -> Vec<Merged> {
    let mut out: Vec<(i64, Merged)> = history
        .changes
        .iter()
        .filter(|c| c.rollback.is_none())
        .filter_map(|c| {
            let (merge_seq, merge) = c.merge.as_ref()?;
            let (_, d) = c.decision.as_ref()?;
            // The gain as the decision engine defines it: trunk minus candidate.
            let gain = match (d.mean_baseline, d.mean_candidate) {
                (Some(b), Some(c)) => b - c,
                _ => d.mean_diff.unwrap_or(0.0),
            };
            (*merge_seq > seq).then(|| {
                (
                    *merge_seq,
                    Merged {
                        change: c.id.clone(),
                        commit: merge.commit.clone(),
                        claimed_gain: gain,
                    },
                )
            })
        })
        .collect();
    out.sort_by_key(|(s, _)| *s);
    out.into_iter().map(|(_, m)| m).collect()
}

pub(super) fn seeds(trunk: &Trunk, rule: &AuditRule, number: u64) -> Vec<u64> {
    (0..rule.pairs as u32)
        .map(|i| seed_for(&trunk.session, None, &format!("audit-{number}"), i))
        .collect()
}
