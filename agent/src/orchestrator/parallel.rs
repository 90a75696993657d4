//! Several changes in flight at once: W worker threads, each running the per-change code
//! (`ChangeRunner::process`) against the trunk as it is when the change starts. Workers take
//! work from one pool: first changes in flight that no worker holds (a resume, or a re-test
//! enqueued by a merge that found the trunk moved), then new proposals while the budget,
//! `--max-changes`, the proposer and the circuit breaker allow.
//!
//! What is shared and how: the proposer is asked under a mutex (`SharedProposals`), builds
//! run one at a time (they share the build worktree), merges one at a time (`change.rs`), and
//! training runs go to the executor, which runs at most `slots()` of them. Each worker has its
//! own ledger connection, git handle and trunk worktree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use agentloop_guardrails::target::TargetSpec;
use agentloop_ledger::Ledger;
use anyhow::{Context as _, Result};

use super::change::{ChangeEnd, ChangeRunner};
use super::pause;
use super::proposals::ProposalSource;
use super::record::{Recorder, SharedProgress};
use super::scheduler::{breaker_tripped, Options};
use super::trunk::Trunk;
use super::workspace::Workspace;
use crate::executor::budget::Stop;
use crate::executor::Executor;
use agentloop_ledger::state::ChangeRecord;

/// A waiting worker looks at the stop signal this often (a stop does not notify).
const WAIT_POLL: Duration = Duration::from_millis(100);

/// The reason [`run`] returns when the workers stopped for a holdout audit that is due: the
/// session runs it alone, then calls [`run`] again.
pub const AUDIT_DUE: &str = "audit_due";

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
    /// A worker is waiting out a circuit-breaker pause: no change starts meanwhile.
    pausing: bool,
    /// Why the session ends (breaker, max changes, proposer exhausted), once known.
    end: Option<String>,
    failure: Option<anyhow::Error>,
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

/// Runs the session's changes on `workers` threads until they all stop. Returns the reason the
/// loop ended and the stage each stopped change was in; `Err` is the first worker's failure.
pub fn run(
    shared: &Shared<'_>,
    workers: usize,
) -> Result<(String, BTreeMap<String, &'static str>)> {
    let coord = Coordinator {
        pool: Mutex::new(Pool::default()),
        changed: Condvar::new(),
    };
    std::thread::scope(|scope| {
        for i in 0..workers {
            let coord = &coord;
            scope.spawn(move || {
                if let Err(e) = worker(shared, coord, i) {
                    let mut pool = coord.lock();
                    if pool.failure.is_none() {
                        pool.failure = Some(e.context(format!("worker {i}")));
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
    let reason = match (shared.stop.reason(), pool.end) {
        (Some(r), _) => r.as_str().to_string(),
        (None, Some(end)) => end,
        (None, None) if pool.audit_due => AUDIT_DUE.to_string(),
        (None, None) => "proposer_exhausted".into(),
    };
    Ok((reason, pool.stopped_at))
}

fn worker(shared: &Shared<'_>, coord: &Coordinator, i: usize) -> Result<()> {
    // git2 handles and SQLite connections are not shared between threads: each worker opens its own.
    let ws = Workspace::open(Some(shared.root))?;
    let ledger = Ledger::open(ws.ledger_path())
        .with_context(|| format!("opening the ledger {}", ws.ledger_path().display()))?;
    let rec = Recorder::on_thread(ledger, shared.session, shared.progress.clone());
    let mut trunk = Trunk::new(
        &ws,
        shared.target,
        &rec,
        shared.session,
        shared.env.to_vec(),
        shared.exec,
        shared.stop.clone(),
    )
    .for_worker(i);
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
        stage: "start",
    };
    while let Some(change) = next_change(shared, coord, &rec)? {
        runner.stage = "trunk";
        let history = rec.state()?;
        let end = match trunk.ready(&history)? {
            None => ChangeEnd::Stopped,
            Some(ready) => {
                // Read again: the trunk may have been calibrated meanwhile.
                let history = rec.state()?;
                let record = history
                    .change(&change.id)
                    .cloned()
                    .unwrap_or(change.clone());
                runner
                    .process(&ready, &record)
                    .with_context(|| format!("change {} at stage {}", record.id, runner.stage))?
            }
        };
        let mut pool = coord.lock();
        pool.held.remove(&change.id);
        match end {
            ChangeEnd::Settled => {}
            ChangeEnd::Stopped => {
                pool.stopped_at.insert(change.id.clone(), runner.stage);
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
        // others wait for it), then the count starts again.
        let mut tripped = pool.pausing;
        if pool.end.is_none() && !pool.pausing {
            if let Some(why) = breaker_tripped(&history, shared.opts.breaker_k) {
                tripped = true;
                match pause::on_trip(&history, &loop_cfg, why) {
                    pause::Trip::End(reason) => {
                        tracing::warn!("{reason}");
                        pool.end = Some(reason);
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
        let breaker = matches!(&pool.end, Some(e) if e.starts_with("circuit_breaker"));
        if !breaker {
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
            super::audit::pending(&history, &shared.target.decision.audit),
            super::audit::Pending::NotDue { .. }
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
