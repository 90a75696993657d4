//! A session: start or resume, reconcile git with the ledger, calibrate the trunk, then run
//! changes until the budget, `--max-changes` or the circuit breaker ends it: one after another
//! with one worker, several at once with more (`parallel`).

use std::path::PathBuf;
use std::time::Duration;

use agentloop_guardrails::target::TargetSpec;
use agentloop_ledger::payload::{
    AgentInfo, Budget, DecisionOutcome, ErrorEvent, SessionEnd, SessionStart,
};
use agentloop_ledger::Ledger;
use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use super::audit::AuditStep;
use super::budget::{Stop, StopReason};
use super::change::{ChangeEnd, ChangeRunner};
use super::history::{sessions, SessionHistory};
use super::proposals::{Proposals, SharedProposals};
use super::record::Recorder;
use super::trunk::Trunk;
use super::workspace::Workspace;
use crate::executor::{Executor, ExecutorConfig};
use crate::git::trunk_branch;
use crate::orchestrator::parallel;

#[derive(Debug, Clone)]
pub struct Options {
    pub budget: Duration,
    pub max_changes: Option<u32>,
    pub agent_kind: String,
    pub model: Option<String>,
    /// The one cargo target directory every build shares.
    pub target_dir: PathBuf,
    /// Fix attempts after a failed build (each one a new proposal, recorded).
    pub fix_attempts: u32,
    /// Consecutive crashes / policy rejections / build failures that pause the loop.
    pub breaker_k: u32,
    /// How live progress is shown (a bar on a terminal, plain lines otherwise).
    pub progress: crate::progress::Mode,
    /// `--workers N`: changes in flight at once (default: `[executor] slots`, or on a resume
    /// the number the session started with).
    pub workers: Option<usize>,
    /// The OS sandbox of builds and runs (`crate::sandbox::describe`): recorded in
    /// `session_start` and on every resume.
    pub sandbox: Value,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub session: String,
    pub resumed: bool,
    pub reason: String,
    pub accepted: u32,
    pub rejected: u32,
    pub crashed: u32,
    pub decided: u32,
}

/// Runs (or resumes) a session to its end. The caller holds the workspace lock.
pub fn run(
    ws: &Workspace,
    target: &TargetSpec,
    proposals: &mut (dyn Proposals + Send),
    opts: &Options,
    stop_on_signals: bool,
) -> Result<Outcome> {
    let ledger = Ledger::open(ws.ledger_path())
        .with_context(|| format!("opening the ledger {}", ws.ledger_path().display()))?;
    let config = ExecutorConfig::from_target_extra(&target.extra)?;
    let (history, resumed) = begin(ws, target, ledger, opts, &config)?;
    let workers = workers_for(opts, &history, &config);
    let session = history.session.clone();
    let left = (history.start.budget_s - history.spent_s).max(0.0);
    let stop = Stop::after(Duration::from_secs_f64(left));
    if stop_on_signals {
        stop.on_signals();
    }
    let rec = Recorder::new(Ledger::open(ws.ledger_path())?, &session)
        .with_progress(crate::progress::Progress::new(opts.progress))?;
    let env = vec![(
        "CARGO_TARGET_DIR".to_string(),
        opts.target_dir.to_string_lossy().into_owned(),
    )];
    let exec = crate::executor::from_config(&config.with_workers(workers)?)?;
    tracing::info!(
        "training runs execute on: {} ({workers} change(s) at once)",
        exec.describe()
    );
    let proposals = SharedProposals::new(proposals);
    let mut trunk = Trunk::new(
        ws,
        target,
        &rec,
        &session,
        env.clone(),
        exec.as_ref(),
        stop.clone(),
    );
    trunk.reconcile(&history)?;

    let mut runner = ChangeRunner {
        ws,
        target,
        rec: &rec,
        session: &session,
        env: &env,
        exec: exec.as_ref(),
        stop: &stop,
        proposals: &proposals,
        fix_attempts: opts.fix_attempts,
        stage: "start",
    };
    let mut stages = std::collections::BTreeMap::new();
    let looped: Result<String> = if workers > 1 {
        (|| -> Result<String> {
            // Audits run alone: the workers stop taking new changes when one is due, the
            // changes in flight finish, the audit runs here, and the workers go on.
            let mut ended: Option<String> = None;
            Ok(loop {
                let history = load(&rec.ledger, &session)?;
                if let Some(r) = stop.reason() {
                    break r.as_str().to_string();
                }
                runner.stage = "audit";
                match super::audit::run_if_due(&trunk, &history)? {
                    AuditStep::NotDue => {}
                    AuditStep::Done | AuditStep::Stopped => continue,
                }
                if let Some(reason) = ended.take() {
                    break reason;
                }
                let (reason, stopped_at) = parallel::run(
                    &parallel::Shared {
                        root: &ws.root,
                        target,
                        progress: rec.shared_progress(),
                        session: &session,
                        env: &env,
                        exec: exec.as_ref(),
                        stop: &stop,
                        proposals: &proposals,
                        opts,
                    },
                    workers,
                )?;
                stages = stopped_at;
                if reason != parallel::AUDIT_DUE {
                    // One more turn: an audit that came due with the last merges still runs.
                    ended = Some(reason);
                }
            })
        })()
    } else {
        (|| -> Result<String> {
            Ok(loop {
                let history = load(&rec.ledger, &session)?;
                if let Some(r) = stop.reason() {
                    break r.as_str().to_string();
                }
                runner.stage = "audit";
                match super::audit::run_if_due(&trunk, &history)? {
                    AuditStep::NotDue => {}
                    AuditStep::Done | AuditStep::Stopped => continue,
                }
                if let Some(max) = opts.max_changes {
                    if history.decided() >= max && history.in_flight().is_none() {
                        break "max_changes".into();
                    }
                }
                if let Some(why) = breaker_tripped(&history, opts.breaker_k) {
                    tracing::warn!("circuit breaker: {why}");
                    break format!("circuit_breaker: {why}");
                }
                runner.stage = "trunk";
                match trunk.ready(&history)? {
                    None => continue, // stopped mid-way; the top of the loop records why
                    Some(ready) => {
                        let change = history.in_flight().cloned().unwrap_or_else(|| {
                            super::history::ChangeRecord {
                                id: agentloop_ledger::new_change_id(),
                                ..Default::default()
                            }
                        });
                        match runner.process(&ready, &change)? {
                            ChangeEnd::Settled => {}
                            ChangeEnd::Stopped => continue,
                            ChangeEnd::Exhausted => break "proposer_exhausted".into(),
                        }
                    }
                }
            })
        })()
    };
    let reason = match looped {
        Ok(r) => r,
        Err(e) => {
            // Recorded so a reader of the ledger sees why the session stopped; the session
            // stays resumable (no session_end), as after a kill.
            let _ = rec.append(
                None,
                &ErrorEvent {
                    stage: runner.stage.to_string(),
                    message: format!("{e:#}"),
                    extra: Map::new(),
                },
            );
            return Err(e);
        }
    };
    let history = load(&rec.ledger, &session)?;
    if stop.is_stopped() {
        let in_flight: Vec<&str> = history.in_flight_all().map(|c| c.id.as_str()).collect();
        let mut extra = Map::new();
        if let Some(c) = in_flight.first() {
            let stage = stages.get(*c).copied().unwrap_or(runner.stage);
            extra.insert("change".into(), Value::String(c.to_string()));
            extra.insert("stage".into(), Value::String(stage.to_string()));
        }
        if workers > 1 {
            extra.insert("changes".into(), json!(in_flight));
            extra.insert("stages".into(), json!(stages));
        }
        extra.insert("reason".into(), Value::String(reason.clone()));
        rec.append(
            None,
            &Budget {
                spent_s: history.spent_s,
                remaining_s: (history.start.budget_s - history.spent_s).max(0.0),
                in_flight: in_flight.len() as u32,
                extra,
            },
        )?;
    }
    let end_reason = match stop.reason() {
        Some(StopReason::Interrupted) => "interrupted".to_string(),
        _ => reason.clone(),
    };
    let outcome = Outcome {
        session: session.clone(),
        resumed,
        reason: end_reason.clone(),
        accepted: history.count(DecisionOutcome::Accepted),
        rejected: history.count(DecisionOutcome::Rejected),
        crashed: history.count(DecisionOutcome::Crashed),
        decided: history.decided(),
    };
    rec.append(
        None,
        &SessionEnd {
            reason: end_reason.clone(),
            accepted: outcome.accepted,
            rejected: outcome.rejected,
            crashed: outcome.crashed,
            extra: Map::new(),
        },
    )?;
    if end_reason != "interrupted" {
        trunk.clean_all()?;
    }
    Ok(outcome)
}

/// The executor the target's `[executor]` table asks for (one local slot by default).
pub fn executor_for(target: &TargetSpec) -> Result<Box<dyn Executor>> {
    let config = ExecutorConfig::from_target_extra(&target.extra)?;
    crate::executor::from_config(&config)
}

/// `--workers`, else what the session started with, else one per two `[executor] slots`.
fn workers_for(opts: &Options, history: &SessionHistory, config: &ExecutorConfig) -> usize {
    let recorded = history
        .start
        .extra
        .get("workers")
        .and_then(Value::as_u64)
        .map(|n| n as usize);
    opts.workers
        .or(recorded)
        .unwrap_or(config.default_workers())
        .max(1)
}

pub fn load(ledger: &Ledger, session: &str) -> Result<SessionHistory> {
    let events = ledger.events_for_session(session)?;
    SessionHistory::replay(session, &events)?
        .with_context(|| format!("session {session} has no session_start event in the ledger"))
}

/// The session to work on: the last one if it can be resumed, else a new one.
fn begin(
    ws: &Workspace,
    target: &TargetSpec,
    ledger: Ledger,
    opts: &Options,
    config: &ExecutorConfig,
) -> Result<(SessionHistory, bool)> {
    let all = ledger.events()?;
    if let Some(last) = sessions(&all).last() {
        let h = load(&ledger, last)?;
        if h.resumable() {
            let rec = Recorder::new(ledger, last);
            rec.append(
                None,
                &Budget {
                    spent_s: h.spent_s,
                    remaining_s: (h.start.budget_s - h.spent_s).max(0.0),
                    in_flight: h.in_flight_all().count() as u32,
                    extra:
                        json!({"resumed": true, "workers": opts.workers, "sandbox": opts.sandbox})
                            .as_object()
                            .cloned()
                            .unwrap_or_default(),
                },
            )?;
            tracing::info!(
                "resuming session {last} ({:.0}s of budget spent)",
                h.spent_s
            );
            return Ok((load(&rec.ledger, last)?, true));
        }
    }
    let suffix = &agentloop_ledger::new_change_id()[1..5];
    let session = format!("s{}-{suffix}", chrono::Utc::now().format("%Y%m%d-%H%M%S"));
    let base = ws.git.head_commit()?;
    let trunk = trunk_branch(&session);
    let workers = opts.workers.unwrap_or(config.default_workers()).max(1);
    let run_config = config.clone().with_workers(workers)?;
    let executor = crate::executor::from_config(&run_config)?.describe();
    let rec = Recorder::new(ledger, &session);
    rec.append(
        None,
        &SessionStart {
            budget_s: opts.budget.as_secs_f64(),
            repo: ws.root.to_string_lossy().into_owned(),
            trunk_branch: trunk.clone(),
            base_commit: base.to_string(),
            target_sha256: super::runs::file_sha256(&ws.root.join("agentloop.toml")),
            agent: AgentInfo {
                kind: opts.agent_kind.clone(),
                model: opts.model.clone(),
                extra: Map::new(),
            },
            rule: serde_json::to_value(&target.decision)?,
            extra: json!({
                "max_changes": opts.max_changes,
                "fix_attempts": opts.fix_attempts,
                "breaker_k": opts.breaker_k,
                "target_dir": opts.target_dir,
                "workers": workers,
                "executor": executor,
                "slots": run_config.slots,
                "sandbox": opts.sandbox,
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        },
    )?;
    // Recorded first, then acted on: a kill here leaves a session whose trunk `reconcile` creates.
    ws.git
        .set_branch(&trunk, base, "agentloop: session start")?;
    tracing::info!("session {session} started on {trunk} at {base}");
    Ok((load(&rec.ledger, &session)?, false))
}

/// K consecutive crashed, policy-rejected or unbuildable changes pause the loop.
pub(crate) fn breaker_tripped(history: &SessionHistory, k: u32) -> Option<String> {
    if k == 0 {
        return None;
    }
    let bad: Vec<_> = history
        .changes
        .iter()
        .filter_map(|c| c.counted_decision())
        .rev()
        .take(k as usize)
        .collect();
    if bad.len() < k as usize {
        return None;
    }
    let all_bad = bad.iter().all(|d| {
        matches!(
            d.outcome,
            DecisionOutcome::Crashed
                | DecisionOutcome::PolicyRejected
                | DecisionOutcome::BuildFailed
        )
    });
    all_bad.then(|| {
        let reasons: Vec<String> = bad
            .iter()
            .rev()
            .map(|d| {
                d.reason
                    .clone()
                    .unwrap_or_else(|| format!("{:?}", d.outcome))
            })
            .collect();
        format!(
            "{k} consecutive changes crashed or were refused: {}",
            reasons.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentloop_ledger::{EventKind, NewEvent};
    use serde_json::json;

    fn ledger_with(events: &[(EventKind, Option<&str>, Value)]) -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path().join("ledger.db")).unwrap();
        for (kind, change, payload) in events {
            ledger
                .append(NewEvent {
                    kind: *kind,
                    session: "s1".into(),
                    change: change.map(str::to_string),
                    payload: payload.clone(),
                })
                .unwrap();
        }
        (dir, ledger)
    }

    fn start() -> (EventKind, Option<&'static str>, Value) {
        (
            EventKind::SessionStart,
            None,
            json!({"budget_s": 600.0, "repo": "/r", "trunk_branch": "agentloop/s1",
                   "base_commit": "0000000000000000000000000000000000000000",
                   "agent": {"kind": "offline"}}),
        )
    }

    fn decided(
        change: &'static str,
        outcome: &str,
    ) -> Vec<(EventKind, Option<&'static str>, Value)> {
        vec![
            (
                EventKind::Propose,
                Some(change),
                json!({"description": "d", "rationale": "r", "patch": "p", "patch_format": "search_replace"}),
            ),
            (
                EventKind::Decision,
                Some(change),
                json!({"outcome": outcome, "rule_version": "v", "reason": format!("{outcome} because")}),
            ),
            (EventKind::Discard, Some(change), json!({})),
        ]
    }

    #[test]
    fn killed_or_interrupted_sessions_resume_and_finished_ones_do_not() {
        let (_d, l) = ledger_with(&[start()]);
        assert!(
            load(&l, "s1").unwrap().resumable(),
            "killed: no session_end"
        );
        let end = |reason: &str| {
            (
                EventKind::SessionEnd,
                None,
                json!({"reason": reason, "accepted": 0, "rejected": 0, "crashed": 0}),
            )
        };
        let (_d, l) = ledger_with(&[start(), end("interrupted")]);
        assert!(load(&l, "s1").unwrap().resumable());
        let (_d, l) = ledger_with(&[start(), end("budget_spent")]);
        assert!(!load(&l, "s1").unwrap().resumable());
        // Interrupted, resumed, then killed: still resumable.
        let resumed = (
            EventKind::Budget,
            None,
            json!({"spent_s": 1.0, "remaining_s": 599.0, "resumed": true}),
        );
        let (_d, l) = ledger_with(&[start(), end("interrupted"), resumed]);
        assert!(load(&l, "s1").unwrap().resumable());
    }

    #[test]
    fn breaker_trips_after_k_consecutive_bad_decisions_only() {
        let mut events = vec![start()];
        events.extend(decided("c000001", "crashed"));
        events.extend(decided("c000002", "policy_rejected"));
        events.extend(decided("c000003", "rejected"));
        events.extend(decided("c000004", "build_failed"));
        events.extend(decided("c000005", "crashed"));
        let (_d, l) = ledger_with(&events);
        let h = load(&l, "s1").unwrap();
        assert_eq!(
            breaker_tripped(&h, 3),
            None,
            "a plain rejection resets the count"
        );
        let why = breaker_tripped(&h, 2).unwrap();
        assert!(
            why.contains("2 consecutive") && why.contains("build_failed because"),
            "{why}"
        );
        assert_eq!(h.decided(), 5);
        assert!(h.in_flight().is_none());
    }
}
