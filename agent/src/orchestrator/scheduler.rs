//! The one scheduler: a pool of N >= 1 workers (N = 1 is the serial loop), each running the
//! per-change code (`ChangeRunner::process`) against the trunk as it is when the change starts.
//! Workers take work from one pool: first changes in flight that no worker holds (a resume, or
//! a re-test enqueued by a merge that found the trunk moved), then new proposals while the
//! budget, `--max-changes`, the proposer and the circuit breaker allow: all decided here, in
//! `next_change`. A holdout audit runs alone: when one is due no new change starts, the
//! changes in flight finish, the audit runs, and a new round of the pool begins.
//!
//! What is shared and how: the proposer is asked under a mutex (`SharedProposals`), builds
//! run one at a time (they share the build worktree), merges one at a time (`change/settle.rs`), and
//! training runs go to the executor, which runs at most `slots()` of them. Each worker has its
//! own ledger connection, git handle and (with several) trunk worktree; the session's state is
//! shared through the recorders, which fold each event as they append it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use agentloop_guardrails::target::TargetSpec;
use agentloop_ledger::payload::{DecisionOutcome, ErrorEvent};
use agentloop_ledger::state::{ChangeRecord, SessionState};
use agentloop_ledger::Ledger;
use anyhow::{Context as _, Result};
use serde_json::{Map, Value};

use super::audit::{self, AuditStep};
use super::change::{ChangeEnd, ChangeRunner, ChangeStage};
use super::pause;
use super::proposals::ProposalSource;
use super::record::{Recorder, SharedProgress};
use super::trunk::Trunk;
use super::workspace::Workspace;
use crate::executor::budget::Stop;
use crate::executor::{Executor, ExecutorConfig};

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

/// `--workers`, else what the session started with, else one per `[executor] slot`.
pub(crate) fn workers_for(
    opts: &Options,
    history: &SessionState,
    config: &ExecutorConfig,
) -> usize {
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

/// K consecutive crashed, policy-rejected or unbuildable changes pause the loop; the count
/// starts again after each pause (`pause.rs`).
pub(crate) fn breaker_tripped(history: &SessionState, k: u32) -> Option<String> {
    if k == 0 {
        return None;
    }
    let after = history.breaker_pauses.last().map_or(0, |(seq, _)| *seq);
    let bad: Vec<_> = history
        .changes
        .iter()
        .filter(|c| matches!(&c.decision, Some((seq, _)) if *seq > after))
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

/// How the session's loop ended: why, and the stage each change stopped in was in.
pub struct Ended {
    pub reason: String,
    pub stages: BTreeMap<String, &'static str>,
    /// The scheduler's own stage when it stopped (an audit, or between rounds).
    pub stage: &'static str,
}

/// Runs the session's changes until the budget, `--max-changes`, the proposer or the breaker
/// ends it; holdout audits run alone between rounds of the pool, on the session's `trunk`.
/// A failure is recorded (an `error` event naming its stage) and returned: the session stays
/// resumable, as after a kill.
pub fn run(shared: &Shared<'_>, trunk: &Trunk<'_>, workers: usize) -> Result<Ended> {
    let mut stage = "start";
    let mut stages = BTreeMap::new();
    match rounds(shared, trunk, workers, &mut stage, &mut stages) {
        Ok(reason) => Ok(Ended {
            reason,
            stages,
            stage,
        }),
        Err(e) => {
            let _ = trunk.rec.append(
                None,
                &ErrorEvent {
                    stage: stage.to_string(),
                    message: format!("{e:#}"),
                    extra: Map::new(),
                },
            );
            Err(e)
        }
    }
}

fn rounds(
    shared: &Shared<'_>,
    trunk: &Trunk<'_>,
    workers: usize,
    stage: &mut &'static str,
    stages: &mut BTreeMap<String, &'static str>,
) -> Result<String> {
    let mut ended: Option<String> = None;
    loop {
        let history = trunk.rec.state()?;
        if let Some(r) = shared.stop.reason() {
            return Ok(r.as_str().to_string());
        }
        *stage = "audit";
        match audit::run_if_due(trunk, &history)? {
            AuditStep::NotDue => {}
            AuditStep::Done | AuditStep::Stopped => continue,
        }
        if let Some(reason) = ended.take() {
            return Ok(reason);
        }
        // A breaker pause a kill interrupted is waited out before any change starts.
        if !pause::finish_breaker_pause(&history, shared.stop) {
            continue; // stopped; the top of the loop says why
        }
        let done = round(shared, workers).map_err(|(e, at)| {
            *stage = at;
            e
        })?;
        *stages = done.stopped_at;
        if let Some(reason) = done.end {
            // One more turn: an audit that came due with the last merges still runs.
            ended = Some(reason);
        }
    }
}

/// What a round of the pool ended with: why (`None`: an audit is due), and where changes stopped.
struct Round {
    end: Option<String>,
    stopped_at: BTreeMap<String, &'static str>,
}

/// A waiting worker looks at the stop signal this often (a stop does not notify).
const WAIT_POLL: Duration = Duration::from_millis(100);

/// What every worker of a session shares (all of it `Sync`).
pub struct Shared<'a> {
    /// The target repository's root (each worker opens its own handles on it).
    pub root: &'a Path,
    pub target: &'a TargetSpec,
    pub progress: SharedProgress,
    pub session: &'a str,
    pub env: &'a [(String, String)],
    pub exec: &'a dyn Executor,
    pub stop: &'a Stop,
    pub proposals: &'a dyn ProposalSource,
    pub opts: &'a Options,
}

/// The workers' common view: which changes are held, and why no new one may start.
#[derive(Default)]
struct Pool {
    /// Changes a worker is processing (a new one is held before its first event).
    held: BTreeSet<String>,
    exhausted: bool,
    /// A holdout audit is due: no new change starts until it has run.
    audit_due: bool,
    /// Why the session ends (breaker, max changes, proposer exhausted), once known.
    end: Option<String>,
    /// The circuit breaker ended the session: not even a change in flight is taken up again.
    breaker: bool,
    /// A worker is waiting out a circuit-breaker pause: no change starts meanwhile.
    pausing: bool,
    /// The first worker's failure, and the stage its change was in.
    failure: Option<(anyhow::Error, &'static str)>,
    /// The stage each change stopped in, for the budget event.
    stopped_at: BTreeMap<String, &'static str>,
}

struct Coordinator {
    pool: Mutex<Pool>,
    changed: Condvar,
}

impl Coordinator {
    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One round of the pool: `workers` threads take changes until none may start (the session
/// ends, or a holdout audit is due: `None`). `Err` is the first worker's failure and its stage.
fn round(shared: &Shared<'_>, workers: usize) -> Result<Round, (anyhow::Error, &'static str)> {
    let coord = Coordinator {
        pool: Mutex::new(Pool::default()),
        changed: Condvar::new(),
    };
    std::thread::scope(|scope| {
        for i in 0..workers {
            let coord = &coord;
            scope.spawn(move || {
                if let Err((e, stage)) = worker(shared, coord, i, workers) {
                    let mut pool = coord.lock();
                    if pool.failure.is_none() {
                        let e = if workers > 1 {
                            e.context(format!("worker {i}"))
                        } else {
                            e
                        };
                        pool.failure = Some((e, stage));
                    }
                    // One worker's failure ends the session: the others stop promptly.
                    shared.stop.request("a worker failed");
                    coord.changed.notify_all();
                }
            });
        }
    });
    let pool = coord.pool.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = pool.failure {
        return Err(e);
    }
    let end = match (shared.stop.reason(), pool.end) {
        (Some(r), _) => Some(r.as_str().to_string()),
        (None, Some(end)) => Some(end),
        (None, None) if pool.audit_due => None,
        (None, None) => Some("proposer_exhausted".into()),
    };
    Ok(Round {
        end,
        stopped_at: pool.stopped_at,
    })
}

fn worker(
    shared: &Shared<'_>,
    coord: &Coordinator,
    i: usize,
    workers: usize,
) -> Result<(), (anyhow::Error, &'static str)> {
    // git2 handles and SQLite connections are not shared between threads: each worker opens its own.
    let ws = Workspace::open(Some(shared.root)).map_err(|e| (e, "start"))?;
    let ledger = Ledger::open(ws.ledger_path())
        .with_context(|| format!("opening the ledger {}", ws.ledger_path().display()))
        .map_err(|e| (e, "start"))?;
    let rec = Recorder::on_thread(ledger, shared.session, shared.progress.clone());
    let trunk = Trunk::new(
        &ws,
        shared.target,
        &rec,
        shared.session,
        shared.env.to_vec(),
        shared.exec,
        shared.stop.clone(),
    );
    // One worker uses the trunk's own worktree; several pin one each.
    let mut trunk = if workers > 1 {
        trunk.for_worker(i)
    } else {
        trunk
    };
    let mut runner = ChangeRunner {
        ws: &ws,
        target: shared.target,
        rec: &rec,
        session: shared.session,
        env: shared.env,
        exec: shared.exec,
        stop: shared.stop,
        proposals: shared.proposals,
        fix_attempts: shared.opts.fix_attempts,
        stage: ChangeStage::Start,
    };
    while let Some(change) = next_change(shared, coord, &rec).map_err(|e| (e, "start"))? {
        runner.stage = ChangeStage::Trunk;
        let end = (|| -> Result<ChangeEnd> {
            let history = rec.state()?;
            Ok(match trunk.ready(&history)? {
                None => ChangeEnd::Stopped,
                Some(ready) => {
                    // Read again: the trunk may have been calibrated meanwhile.
                    let history = rec.state()?;
                    let record = history
                        .change(&change.id)
                        .cloned()
                        .unwrap_or(change.clone());
                    runner.process(&ready, &record).with_context(|| {
                        format!("change {} at stage {}", record.id, runner.stage)
                    })?
                }
            })
        })()
        .map_err(|e| (e, runner.stage.as_str()))?;
        let mut pool = coord.lock();
        pool.held.remove(&change.id);
        match end {
            ChangeEnd::Settled => {}
            ChangeEnd::Stopped => {
                pool.stopped_at
                    .insert(change.id.clone(), runner.stage.as_str());
            }
            ChangeEnd::Exhausted => pool.exhausted = true,
        }
        coord.changed.notify_all();
    }
    Ok(())
}

/// The next change for a worker: one in flight that nobody holds, else a new one if allowed;
/// waits while others work; `None` when there is nothing left for this worker.
fn next_change(
    shared: &Shared<'_>,
    coord: &Coordinator,
    rec: &Recorder,
) -> Result<Option<ChangeRecord>> {
    let loop_cfg = pause::LoopConfig::from_target(shared.target)?;
    let mut pool = coord.lock();
    loop {
        if pool.failure.is_some() || shared.stop.is_stopped() {
            return Ok(None);
        }
        let history = rec.state()?;
        // Tripped: no new change starts; once none is in flight, one worker pauses (the
        // others wait for it), then the count starts again. The last trip ends the session.
        let mut tripped = pool.pausing;
        if pool.end.is_none() && !pool.pausing {
            if let Some(why) = breaker_tripped(&history, shared.opts.breaker_k) {
                tripped = true;
                match pause::on_trip(&history, &loop_cfg, why) {
                    pause::Trip::End(reason) => {
                        tracing::warn!("{reason}");
                        pool.end = Some(reason);
                        pool.breaker = true;
                    }
                    pause::Trip::Pause { trip, why } if pool.held.is_empty() => {
                        pool.pausing = true;
                        drop(pool);
                        let paused = pause::breaker_pause(rec, shared.stop, &loop_cfg, trip, &why);
                        pool = coord.lock();
                        pool.pausing = false;
                        coord.changed.notify_all();
                        paused?;
                        continue;
                    }
                    pause::Trip::Pause { .. } => {}
                }
            }
        }
        if !pool.breaker {
            if let Some(c) = history.in_flight_all().find(|c| !pool.held.contains(&c.id)) {
                pool.held.insert(c.id.clone());
                return Ok(Some(c.clone()));
            }
        }
        let room = match shared.opts.max_changes {
            // Changes held will each be decided: start no more than the maximum needs.
            Some(max) => history.decided() + (pool.held.len() as u32) < max,
            None => true,
        };
        // Audits never run with a change in flight: a due one holds back new changes.
        pool.audit_due = !matches!(
            audit::pending(&history, &shared.target.decision.audit),
            audit::Pending::NotDue { .. }
        );
        if pool.end.is_none() && !pool.exhausted && room && !pool.audit_due && !tripped {
            let id = agentloop_ledger::new_change_id();
            pool.held.insert(id.clone());
            return Ok(Some(ChangeRecord {
                id,
                ..Default::default()
            }));
        }
        if pool.held.is_empty() && !tripped {
            if pool.audit_due && pool.end.is_none() {
                coord.changed.notify_all();
                return Ok(None);
            }
            if pool.end.is_none() {
                pool.end = Some(if pool.exhausted {
                    "proposer_exhausted".into()
                } else {
                    "max_changes".into()
                });
            }
            coord.changed.notify_all();
            return Ok(None);
        }
        pool = coord
            .changed
            .wait_timeout(pool, WAIT_POLL)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}
