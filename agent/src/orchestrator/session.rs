//! A session begins (or resumes), reconciles git with the ledger, hands its changes to the
//! scheduler until the budget, `--max-changes`, the proposer or the circuit breaker ends it,
//! and ends: the stop recorded (`budget`), then `session_end`.

use std::time::Duration;

use agentloop_guardrails::target::TargetSpec;
use agentloop_ledger::payload::{AgentInfo, Budget, DecisionOutcome, SessionEnd, SessionStart};
use agentloop_ledger::Ledger;
use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use super::proposals::{Proposals, SharedProposals};
use super::record::Recorder;
pub use super::scheduler::Options;
use super::scheduler::{self, workers_for};
use super::trunk::Trunk;
use super::workspace::Workspace;
use crate::executor::budget::{Stop, StopReason};
use crate::executor::ExecutorConfig;
use crate::git::trunk_branch;
use agentloop_ledger::state::{sessions, SessionState};

#[derive(Debug, Clone)]
pub struct Outcome {
    pub session: String,
    pub resumed: bool,
    pub reason: String,
    pub accepted: u32,
    pub rejected: u32,
    pub crashed: u32,
    pub decided: u32,
    /// The final verdict's line ("holdout gain ..."), `None` when turned off or interrupted.
    pub verdict: Option<String>,
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
    let env = vec![(
        "CARGO_TARGET_DIR".to_string(),
        opts.target_dir.to_string_lossy().into_owned(),
    )];
    let setup = Stop::new();
    if stop_on_signals {
        setup.on_signals();
    }
    let (history, resumed) = begin(ws, target, ledger, opts, &config, &env, &setup)?;
    let workers = workers_for(opts, &history, &config);
    let session = history.session.clone();
    let left = (history.start.budget_s - history.spent_s).max(0.0);
    let end = std::time::Instant::now() + Duration::from_secs_f64(left);
    // `stop` ends the session; `proposing` ends the changes early enough for the verdict.
    let stop = Stop::after(Duration::from_secs_f64(left));
    let proposing = Stop::after(Duration::from_secs_f64(left));
    if stop_on_signals {
        stop.on_signals();
        proposing.on_signals();
    }
    let verdict_pairs = super::pause::LoopConfig::from_target(target)?.verdict_pairs;
    let rec = Recorder::new(Ledger::open(ws.ledger_path())?, &session)
        .with_progress(crate::progress::Progress::new(opts.progress))?;
    let exec = crate::executor::from_config(&config.with_workers(workers)?)?;
    tracing::info!(
        "training runs execute on: {} ({workers} change(s) at once)",
        exec.describe()
    );
    let proposals = SharedProposals::new(proposals);
    let trunk = Trunk::new(
        ws,
        target,
        &rec,
        &session,
        env.clone(),
        exec.as_ref(),
        proposing.clone(),
    );
    trunk.reconcile(&history)?;

    // Before the first change starts (a resumed session may have little time left).
    super::compare::verdict::reserve(&proposing, end, verdict_pairs, exec.slots(), &history);
    let scheduled = std::sync::atomic::AtomicBool::new(false);
    let shared = rec.shared_progress();
    let ledger_path = ws.ledger_path();
    let ended = std::thread::scope(|scope| {
        scope.spawn(|| {
            super::compare::verdict::keep_time(
                &ledger_path,
                &session,
                shared,
                (verdict_pairs, exec.slots()),
                (&proposing, end),
                &scheduled,
            )
        });
        let ended = scheduler::run(
            &scheduler::Shared {
                root: &ws.root,
                target,
                progress: rec.shared_progress(),
                session: &session,
                env: &env,
                exec: exec.as_ref(),
                stop: &proposing,
                proposals: &proposals,
                opts,
            },
            &trunk,
            workers,
        );
        scheduled.store(true, std::sync::atomic::Ordering::SeqCst);
        ended
    })?;
    let (reason, stages) = (ended.reason, ended.stages);
    let history = rec.state()?;
    if proposing.is_stopped() {
        let in_flight: Vec<&str> = history.in_flight_all().map(|c| c.id.as_str()).collect();
        let mut extra = Map::new();
        if let Some(c) = in_flight.first() {
            let stage = stages.get(*c).copied().unwrap_or(ended.stage);
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
                resumed: false,
                extra,
            },
        )?;
    }
    let mut end_reason = match proposing.reason() {
        Some(StopReason::Interrupted) => "interrupted".to_string(),
        _ => reason.clone(),
    };
    let mut end_extra = Map::new();
    let mut verdict_line = None;
    if end_reason != "interrupted" {
        let ctx = super::compare::Ctx {
            ws,
            target,
            rec: &rec,
            env: &env,
            exec: exec.as_ref(),
            stop: &stop,
        };
        let events = rec.ledger.events()?;
        let verdict = super::compare::verdict::run(&ctx, &rec.state()?, verdict_pairs, &events)?;
        if stop.reason() == Some(StopReason::Interrupted) {
            // Ctrl-C during the verdict: the session resumes and finishes it.
            end_reason = "interrupted".into();
        } else if let Some(line) = verdict.line() {
            tracing::info!("final verdict: {line}");
            end_extra.insert("verdict".into(), Value::String(line.clone()));
            verdict_line = Some(line);
        }
    }
    let history = rec.state()?;
    let outcome = Outcome {
        session: session.clone(),
        resumed,
        reason: end_reason.clone(),
        accepted: history.count(DecisionOutcome::Accepted),
        rejected: history.count(DecisionOutcome::Rejected),
        crashed: history.count(DecisionOutcome::Crashed),
        decided: history.decided(),
        verdict: verdict_line,
    };
    // Clean up before `session_end`: a kill in between leaves a session that resumes and
    // cleans again, never an ended session with worktrees nobody removes.
    if end_reason != "interrupted" {
        trunk.clean_all()?;
        super::audit::remove_worktrees(ws)?;
    }
    rec.append(
        None,
        &SessionEnd {
            reason: end_reason.clone(),
            accepted: outcome.accepted,
            rejected: outcome.rejected,
            crashed: outcome.crashed,
            extra: end_extra,
        },
    )?;
    Ok(outcome)
}

/// The session to work on: the last one if it can be resumed, else a new one, its base commit
/// built (with the builds' `env`, stopped by Ctrl-C through `setup`) before its clock starts.
fn begin(
    ws: &Workspace,
    target: &TargetSpec,
    ledger: Ledger,
    opts: &Options,
    config: &ExecutorConfig,
    env: &[(String, String)],
    setup: &Stop,
) -> Result<(SessionState, bool)> {
    // A missing input is refused here, named, before anything is recorded.
    let inputs = crate::inputs::fingerprint_target(target)?;
    let all = ledger.events()?;
    if let Some(last) = sessions(&all).last() {
        let h = SessionState::load(&ledger, last)?;
        if h.resumable() {
            let recorded = h.start.extra.get("inputs").cloned().unwrap_or_default();
            crate::inputs::check_unchanged(last, &recorded, inputs.as_ref())?;
            let rec = Recorder::new(ledger, last);
            rec.append(
                None,
                &Budget {
                    spent_s: h.spent_s,
                    remaining_s: (h.start.budget_s - h.spent_s).max(0.0),
                    in_flight: h.in_flight_all().count() as u32,
                    resumed: true,
                    extra: json!({"workers": opts.workers, "sandbox": opts.sandbox})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                },
            )?;
            tracing::info!(
                "resuming session {last} ({:.0}s of budget spent)",
                h.spent_s
            );
            return Ok((SessionState::load(&rec.ledger, last)?, true));
        }
    }
    let suffix = &agentloop_ledger::new_change_id()[1..5];
    let session = format!("s{}-{suffix}", chrono::Utc::now().format("%Y%m%d-%H%M%S"));
    let base = ws.git.head_commit()?;
    // Set-up, like the user's first `cargo build`: the budget pays for experiments, and the
    // first build at the build worktree's path would leave every slot idle. Timed in the ledger.
    tracing::info!("building the base commit {base} before the budget starts");
    let base_build_s = super::build::prebuild(ws, target, env, setup, base)?;
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
                "inputs": inputs,
                // Pre-registered with the rule: `ledger verify` checks every accept tested them.
                "guards": target.guards,
                "base_build_s": base_build_s,
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
    Ok((rec.state()?, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::pause;
    use crate::orchestrator::scheduler::breaker_tripped;
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
            SessionState::load(&l, "s1").unwrap().resumable(),
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
        assert!(SessionState::load(&l, "s1").unwrap().resumable());
        let (_d, l) = ledger_with(&[start(), end("budget_spent")]);
        assert!(!SessionState::load(&l, "s1").unwrap().resumable());
        // Interrupted, resumed, then killed: still resumable.
        let resumed = (
            EventKind::Budget,
            None,
            json!({"spent_s": 1.0, "remaining_s": 599.0, "resumed": true}),
        );
        let (_d, l) = ledger_with(&[start(), end("interrupted"), resumed]);
        assert!(SessionState::load(&l, "s1").unwrap().resumable());
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
        let h = SessionState::load(&l, "s1").unwrap();
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

    #[test]
    fn breaker_counts_again_from_zero_after_a_pause_and_ends_at_the_last_trip() {
        let pause = |count: u32| {
            (
                EventKind::Error,
                None,
                json!({"stage": "breaker_pause", "message": "2 consecutive changes crashed",
                       "since": "2026-01-01T00:00:00Z", "wait_s": 1.0,
                       "until": "2026-01-01T00:00:01Z", "count": count}),
            )
        };
        let mut events = vec![start()];
        events.extend(decided("c000001", "crashed"));
        events.extend(decided("c000002", "crashed"));
        events.push(pause(1));
        events.extend(decided("c000003", "build_failed"));
        let (_d, l) = ledger_with(&events);
        let h = SessionState::load(&l, "s1").unwrap();
        assert_eq!(h.breaker_pauses.len(), 1);
        assert_eq!(
            breaker_tripped(&h, 2),
            None,
            "decisions before the pause no longer count"
        );
        events.extend(decided("c000004", "crashed"));
        let (_d, l) = ledger_with(&events);
        let h = SessionState::load(&l, "s1").unwrap();
        let why = breaker_tripped(&h, 2).expect("two bad decisions since the pause");
        let cfg = pause::LoopConfig {
            breaker_trips: 3,
            ..Default::default()
        };
        assert!(matches!(
            pause::on_trip(&h, &cfg, why.clone()),
            pause::Trip::Pause { trip: 2, .. }
        ));
        let cfg = pause::LoopConfig {
            breaker_trips: 2,
            ..Default::default()
        };
        match pause::on_trip(&h, &cfg, why) {
            pause::Trip::End(reason) => assert!(
                reason.starts_with("circuit_breaker: 2 consecutive")
                    && reason.contains("trip 2 of 2")
                    && reason.contains("agentloop ledger list --status crashed"),
                "{reason}"
            ),
            pause::Trip::Pause { .. } => panic!("the last trip ends the session"),
        }
    }
}
