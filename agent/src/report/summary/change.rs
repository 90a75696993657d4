//! What one change came to, from its events: state, stage, effect and reason.

use agentloop_ledger::payload::{
    Build, Decision, DecisionOutcome, ExitStatus, Policy, PolicyOutcome, Propose, Rollback,
    RunResult, Stage,
};
use agentloop_ledger::ChangeStatus;

use super::{ChangeState, ChangeSummary, Counts};

/// One change's events, as the replay collects them.
#[derive(Debug, Default)]
pub(super) struct ChangeLog {
    pub(super) id: String,
    pub(super) first_seq: i64,
    pub(super) proposals: Vec<Propose>,
    pub(super) policy: Option<Policy>,
    pub(super) builds: Vec<Build>,
    pub(super) runs: Vec<RunResult>,
    pub(super) decision: Option<Decision>,
    pub(super) merged: bool,
    pub(super) discarded: bool,
    /// Where it ended up, as the ledger's one fold of the events says.
    pub(super) status: ChangeStatus,
    pub(super) rollback: Option<Rollback>,
    pub(super) trunk_before: Option<f64>,
}

pub(super) fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

pub(super) fn candidate_mean(runs: &[RunResult]) -> Option<f64> {
    mean(
        runs.iter()
            .filter(|r| r.arm == agentloop_ledger::payload::Arm::Candidate)
            .filter(|r| r.exit_status == ExitStatus::Ok)
            .filter_map(RunResult::metric_value),
    )
}

pub(super) fn state_of(c: &ChangeLog) -> ChangeState {
    match c.status {
        ChangeStatus::Proposed => ChangeState::InFlight,
        ChangeStatus::Accepted => ChangeState::Accepted,
        ChangeStatus::Rejected => ChangeState::Rejected,
        ChangeStatus::Crashed => ChangeState::Crashed,
        ChangeStatus::PolicyRejected => ChangeState::PolicyRejected,
        ChangeStatus::BuildFailed => ChangeState::BuildFailed,
        ChangeStatus::Superseded => ChangeState::Superseded,
        ChangeStatus::RolledBack => ChangeState::RolledBack,
    }
}

/// The step the loop is on for an undecided or unsettled change.
pub(super) fn stage_of(c: &ChangeLog) -> String {
    if let Some(d) = &c.decision {
        return if d.outcome == DecisionOutcome::Accepted && !c.merged {
            "merge"
        } else {
            "discard"
        }
        .into();
    }
    if let Some(r) = c.runs.last() {
        return match r.stage {
            Stage::Smoke => "smoke",
            Stage::Screen => "screen",
            Stage::Confirm => "confirm",
            Stage::Audit => "audit",
            Stage::Calibration => "calibration",
            Stage::Remeasure => "remeasure",
            Stage::Compare => "compare",
        }
        .into();
    }
    match (c.builds.last(), &c.policy) {
        (Some(b), _) if b.ok => "smoke".into(),
        (Some(_), _) => "fix_build".into(),
        (None, Some(_)) => "build".into(),
        (None, None) => "policy".into(),
    }
}

/// The gain and its interval, trunk minus candidate. The decision engine records
/// `mean_diff` as that gain; a record that stored candidate minus trunk instead is recognised
/// by its means and turned around, so the sign on the chart is always "positive helped".
pub(super) fn effect_of(d: &Decision) -> (Option<f64>, Option<(f64, f64)>) {
    let from_means = d.mean_baseline.zip(d.mean_candidate).map(|(b, c)| b - c);
    let ci = d.ci_low.zip(d.ci_high);
    match (from_means, d.mean_diff) {
        (Some(gain), Some(diff)) if (diff + gain).abs() < (diff - gain).abs() => {
            (Some(gain), ci.map(|(lo, hi)| (-hi, -lo)))
        }
        (Some(gain), _) => (Some(gain), ci),
        (None, diff) => (diff, ci),
    }
}

pub(super) fn summarize_change(c: &ChangeLog, index: usize) -> ChangeSummary {
    let state = state_of(c);
    let last = c.proposals.last();
    let (effect, ci) = c.decision.as_ref().map(effect_of).unwrap_or((None, None));
    ChangeSummary {
        id: c.id.clone(),
        index,
        first_seq: c.first_seq,
        state,
        stage: (state == ChangeState::InFlight).then(|| stage_of(c)),
        description: last.map(|p| p.description.clone()).unwrap_or_default(),
        rationale: last.map(|p| p.rationale.clone()).unwrap_or_default(),
        patch: last.map(|p| p.patch.clone()).unwrap_or_default(),
        model: last.and_then(|p| p.model.clone()),
        effect,
        ci,
        p_value: c.decision.as_ref().and_then(|d| d.p_value),
        no_test: c.decision.as_ref().and_then(|d| d.test.as_deref())
            == Some(agentloop_ledger::review::KEEP_IF_LOWER),
        mean_baseline: c.decision.as_ref().and_then(|d| d.mean_baseline),
        candidate_metric: c
            .decision
            .as_ref()
            .and_then(|d| d.mean_candidate)
            .or_else(|| candidate_mean(&c.runs)),
        trunk_metric_before: c.trunk_before,
        runs: c.runs.len(),
        run_s: c.runs.iter().filter_map(|r| r.wall_s).sum(),
        reason: reason_of(c),
        prompt_tokens: c.proposals.iter().filter_map(|p| p.prompt_tokens).sum(),
        completion_tokens: c.proposals.iter().filter_map(|p| p.completion_tokens).sum(),
        cost_usd: c.proposals.iter().filter_map(|p| p.cost_usd).sum(),
    }
}

/// Why it ended: the policy's words for a policy rejection (they name the rule and the path),
/// the decision's otherwise.
fn reason_of(c: &ChangeLog) -> Option<String> {
    match &c.policy {
        Some(p) if p.outcome == PolicyOutcome::Rejected => Some(format!(
            "policy {}: {}",
            p.code.as_deref().unwrap_or("rejected"),
            p.message.as_deref().unwrap_or("")
        )),
        _ => c.decision.as_ref().and_then(|d| {
            let guards = d.extra.get("guards").map(guards_line).unwrap_or_default();
            d.reason.as_ref().map(|r| format!("{r}{guards}"))
        }),
    }
}

/// "; guards: peak_mem_bytes pass (1.002), tokens_per_s FAIL (0.61)": each guard's verdict and
/// measured ratio (or increase), from the decision's `guards` record.
fn guards_line(guards: &serde_json::Value) -> String {
    let parts: Vec<String> = guards
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            let pass = g.get("pass").and_then(|p| p.as_bool()) == Some(true);
            let estimate = g
                .get("estimate")
                .and_then(|e| e.as_f64())
                .map_or("-".into(), |e| format!("{e:.3}"));
            format!(
                "{} {} ({estimate})",
                g.get("metric").and_then(|m| m.as_str()).unwrap_or("?"),
                if pass { "pass" } else { "FAIL" }
            )
        })
        .collect();
    format!("; guards: {}", parts.join(", "))
}

pub(super) fn count(states: &[ChangeState]) -> Counts {
    let n = |s: ChangeState| states.iter().filter(|c| **c == s).count();
    Counts {
        proposed: states.len(),
        accepted: n(ChangeState::Accepted) + n(ChangeState::RolledBack),
        kept: n(ChangeState::Accepted),
        rejected: n(ChangeState::Rejected),
        crashed: n(ChangeState::Crashed),
        policy_rejected: n(ChangeState::PolicyRejected),
        build_failed: n(ChangeState::BuildFailed),
        rolled_back: n(ChangeState::RolledBack),
        superseded: n(ChangeState::Superseded),
        in_flight: n(ChangeState::InFlight),
    }
}
