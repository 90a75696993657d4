//! The decision event's payload: a decision made before any statistics, and the headline
//! statistics plus the engine's full record, which `ledger verify` (decision_check.rs)
//! recomputes with the same [`decision_payload`].

use agentloop_guardrails::guards::{first_failure, GuardResult};
use agentloop_guardrails::process::{DecidedAt, Verdict};
use agentloop_ledger::payload::{Decision, DecisionOutcome, Stage};
use anyhow::Result;
use serde_json::{json, Map, Value};

/// A decision made before any statistics (policy, build, smoke).
pub(super) fn simple_decision(
    outcome: DecisionOutcome,
    reason: String,
    rule_version: &str,
) -> Decision {
    let stage = match outcome {
        DecisionOutcome::Crashed => Some(Stage::Smoke),
        _ => None,
    };
    Decision {
        outcome,
        stage,
        test: None,
        n: None,
        mean_baseline: None,
        mean_candidate: None,
        mean_diff: None,
        sd_diff: None,
        ci_low: None,
        ci_high: None,
        p_value: None,
        thresholds: Value::Null,
        min_effect: None,
        rule_version: rule_version.to_string(),
        reason: Some(reason),
        extra: Map::new(),
    }
}

/// The rule's thresholds as the decision event shows them. A v1 rule's shape is kept as it
/// was, so decisions recorded before the sequential screen verify unchanged.
fn thresholds(rule: &agentloop_guardrails::decision::DecisionRule) -> Value {
    if rule.is_greedy() {
        return json!({
            "screen": rule.screen,
            "fixed_seed": rule.fixed_seed,
            "fresh_seed": rule.is_greedy_fresh(),
            "keep_if": "candidate < trunk",
        });
    }
    if rule.is_v3() {
        return json!({
            "screen": rule.screen,
            "confirm": rule.confirm,
            "min_effect": rule.min_effect,
            "alpha": rule.false_accept_bound(),
        });
    }
    let mut t = json!({
        "stages": rule.stages,
        "screen_reject_below_sd": rule.screen_reject_below_sd,
        "min_effect_sd": rule.min_effect_sd,
    });
    if let agentloop_guardrails::decision::ScreenRule::Sequential { .. } = rule.screen {
        t["screen"] = json!(rule.screen);
    }
    t
}

/// The ledger's decision record: headline statistics plus the engine's full record (inputs,
/// rule, calibration), so `ledger verify` can recompute it.
pub(crate) fn decision_payload(d: &agentloop_guardrails::process::Decision) -> Result<Decision> {
    let outcome = match d.verdict {
        Verdict::Accept => DecisionOutcome::Accepted,
        Verdict::Reject => DecisionOutcome::Rejected,
        Verdict::Crash => DecisionOutcome::Crashed,
    };
    let stage = match d.decided_at {
        DecidedAt::Screen => Stage::Screen,
        DecidedAt::Stage(_) => Stage::Confirm,
    };
    let last = d.stages.last();
    let mut extra = Map::new();
    extra.insert("process".into(), serde_json::to_value(d)?);
    extra.insert("runs".into(), json!(d.runs));
    if d.rule.is_greedy() {
        return Ok(greedy_payload(d, outcome, stage, extra));
    }
    Ok(Decision {
        outcome,
        stage: Some(stage),
        test: last.map(|_| "paired_t_one_sided".to_string()).or_else(|| {
            d.screen.as_ref().map(|s| match (&s.sequential, &s.paired) {
                (_, Some(_)) => "screen_paired_sprt".to_string(),
                (Some(_), None) => "screen_sprt".to_string(),
                (None, None) => "screen_z".to_string(),
            })
        }),
        n: last
            .map(|s| s.pairs.len() as u32)
            .or(d.screen.as_ref().map(|s| match (&s.sequential, &s.paired) {
                (_, Some(p)) => p.pairs.len() as u32,
                (Some(seq), None) => seq.values.len() as u32,
                (None, None) => 1,
            })),
        mean_baseline: last
            .map(|s| s.mean_baseline)
            .or(d.screen.as_ref().map(|s| s.baseline_mean)),
        mean_candidate: last
            .map(|s| s.mean_candidate)
            .or(d.screen.as_ref().map(|s| s.candidate)),
        mean_diff: last
            .map(|s| s.test.mean)
            .or(d.screen.as_ref().map(|s| s.gain)),
        sd_diff: last.map(|s| s.test.sd).or(d
            .screen
            .as_ref()
            .and_then(|s| s.paired.as_ref())
            .map(|p| p.sd_used)),
        ci_low: last.map(|s| s.test.ci_low),
        ci_high: last.map(|s| s.test.ci_high),
        p_value: last.map(|s| s.test.p),
        thresholds: thresholds(&d.rule),
        min_effect: Some(d.calibration.min_effect(&d.rule)),
        rule_version: d.rule_version.clone(),
        reason: Some(d.reason.clone()),
        extra,
    })
}

/// Records the guards' results with an accept, and turns it into a reject with reason
/// `guard:<metric>` when one failed. `ledger verify` replays this on the recomputed results.
pub(crate) fn apply_guards(decision: &mut Decision, results: Vec<GuardResult>) -> Result<()> {
    if decision.outcome == DecisionOutcome::Accepted {
        if let Some(failed) = first_failure(&results) {
            decision.outcome = DecisionOutcome::Rejected;
            decision.reason = Some(format!(
                "{}: {} (the {} test alone accepted: {})",
                failed.tag(),
                failed.reason,
                decision.rule_version,
                decision.reason.as_deref().unwrap_or("")
            ));
        }
    }
    decision
        .extra
        .insert("guards".into(), serde_json::to_value(&results)?);
    Ok(())
}

/// What a greedy rule's decision event says, and what `ledger show` and the report mark as
/// having no statistical test: the one run, the trunk value it was compared with, and the
/// rule's name; no sd, interval or p-value, because none was computed.
pub(crate) const NO_STATISTICAL_TEST: &str = "no statistical test";

fn greedy_payload(
    d: &agentloop_guardrails::process::Decision,
    outcome: DecisionOutcome,
    stage: Stage,
    mut extra: Map<String, Value>,
) -> Decision {
    extra.insert("statistical_test".into(), json!(NO_STATISTICAL_TEST));
    extra.insert("rule".into(), json!(d.rule_version));
    let screen = d.screen.as_ref();
    Decision {
        outcome,
        stage: Some(stage),
        test: screen.map(|_| agentloop_ledger::review::KEEP_IF_LOWER.to_string()),
        n: screen.map(|_| 1),
        mean_baseline: screen.map(|s| s.baseline_mean),
        mean_candidate: screen.map(|s| s.candidate),
        mean_diff: screen.map(|s| s.gain),
        sd_diff: None,
        ci_low: None,
        ci_high: None,
        p_value: None,
        thresholds: thresholds(&d.rule),
        min_effect: None,
        rule_version: d.rule_version.clone(),
        reason: Some(d.reason.clone()),
        extra,
    }
}
