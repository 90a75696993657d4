//! Runs each training run as a Slurm batch job: the run's directory gets `job.sh` (the
//! command, wrapped to record its exit code) and `slurm-job.json` (the job id, written before
//! any wait), the job is submitted with `sbatch`, watched with `squeue` until it leaves the
//! queue, and its end read from `sacct` / `scontrol` / the `exit_code` file. Slurm does the
//! scheduling; this side only submits, watches, cancels and collects.
//!
//! The run directory must be on a filesystem the compute nodes share with the loop (the
//! job writes `run.log`, `metrics.json` and `exit_code` there).

mod cli;
mod poller;
mod record;
mod script;
mod slots;
mod state;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use cli::Queue;
pub use cli::SlurmError;
use poller::QueuePoller;
use record::{Attach, JobRecord, LostJob, Phase};
use slots::Slots;
use state::Verdict;

use super::budget::Stop;
use super::{Executor, Ran, RunJob};
use crate::executor::config::SlurmConfig;
use agentloop_guardrails::run_policy::DivergenceWatch;

use super::process::{read_tail, Exit, LogLines};

/// Submissions of one run after the cluster lost its job (preempted, node failure).
const MAX_RETRIES: usize = 2;
/// squeue is asked every POLL_FIRST at first, then less and less often (up to POLL_MAX) once
/// a job has been watched for BACKOFF_AFTER: short runs end promptly, long ones cost little.
const POLL_FIRST: Duration = Duration::from_millis(500);
const POLL_MAX: Duration = Duration::from_secs(5);
const BACKOFF_AFTER: Duration = Duration::from_secs(30);
/// How long a cancelled job may take to leave the queue before we stop waiting for it.
const CANCEL_WAIT: Duration = Duration::from_secs(30);
/// squeue failures in a row (a controller restarting) before the loop gives up with an error.
const QUEUE_ERRORS_TOLERATED: u32 = 20;
/// A finished job's `exit_code` may reach this machine a little late on a network filesystem.
const EXIT_FILE_WAIT: Duration = Duration::from_secs(3);
const TAIL_BYTES: u64 = 8 * 1024;

pub struct SlurmExecutor {
    config: SlurmConfig,
    slots: Slots,
    slot_count: usize,
    poller: QueuePoller,
    /// Our own timeout is the train timeout plus this, counted from when the job runs: the
    /// cluster's `--time` normally ends it first.
    grace: Duration,
}

/// How watching a job ended.
enum Watched {
    /// It left the queue; squeue's last word on its state, if it had one.
    Left(Option<String>),
    /// We cancelled it, for this reason (`Stopped`, `TimedOut` or `Diverged`).
    Cancelled(Exit),
}

impl SlurmExecutor {
    /// Fails when `sbatch` cannot be run: a setup problem to fix before any run.
    pub fn new(config: SlurmConfig, slots: usize) -> Result<SlurmExecutor, SlurmError> {
        cli::check_available()?;
        Ok(SlurmExecutor {
            config,
            slots: Slots::new(slots),
            slot_count: slots.max(1),
            poller: QueuePoller::default(),
            grace: Duration::from_secs(30),
        })
    }

    /// The extra time a running job gets past the train timeout before we cancel it.
    pub fn with_timeout_grace(mut self, grace: Duration) -> SlurmExecutor {
        self.grace = grace;
        self
    }

    /// Clears the run directory, writes `job.sh`, submits it and records the job id.
    fn submit_fresh(&self, job: &RunJob, script: &str, sha: &str) -> Result<JobRecord> {
        // A loop killed between sbatch and writing the record left a job nobody watches.
        let name = script::job_name(job);
        for orphan in cli::jobs_named(&name).unwrap_or_default() {
            tracing::info!("cancelling slurm job {orphan} ({name}): submitted by a loop that died before recording it");
            let _ = cli::cancel(&orphan);
        }
        if job.out.exists() {
            std::fs::remove_dir_all(&job.out)
                .with_context(|| format!("clearing {}", job.out.display()))?;
        }
        std::fs::create_dir_all(&job.out)
            .with_context(|| format!("creating {}", job.out.display()))?;
        let path = script::script_path(&job.out);
        std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
        let id = cli::submit(&script::sbatch_args(job, &self.config))?;
        tracing::debug!("{} submitted as slurm job {id}", job.name);
        let rec = JobRecord::new(id, sha.to_string());
        rec.save(&job.out)?;
        Ok(rec)
    }

    /// Submits the run again after its job was lost, keeping the lost one in the record.
    fn resubmit(&self, job: &RunJob, rec: &mut JobRecord, lost_state: &str) -> Result<()> {
        for stale in [script::EXIT_CODE, "metrics.json"] {
            let _ = std::fs::remove_file(job.out.join(stale));
        }
        let lost = rec.job_id.clone();
        let id = cli::submit(&script::sbatch_args(job, &self.config))?;
        note_in_log(
            job,
            &format!(
                "agentloop: slurm job {lost} ended {lost_state}; resubmitted as job {id} (retry {} of {MAX_RETRIES})",
                rec.retries.len() + 1
            ),
        );
        rec.retries.push(LostJob {
            job_id: lost,
            state: lost_state.to_string(),
            ended_at: record::now(),
        });
        rec.job_id = id;
        rec.submitted_at = record::now();
        rec.save(&job.out)
    }

    /// Waits until the job leaves the queue, or cancels it when the loop stops or the run
    /// overstays its timeout. `running_since` is set when the job is first seen running.
    fn watch(
        &self,
        job: &RunJob,
        rec: &mut JobRecord,
        stop: &Stop,
        running_since: &mut Option<Instant>,
    ) -> Result<Watched> {
        let begun = Instant::now();
        let mut interval = POLL_FIRST;
        let mut errors = 0;
        // The job's output lands in the run dir (a shared filesystem): the same NaN / blow-up
        // watch as a local run reads it as it grows.
        let mut divergence = job
            .divergence
            .map(|rule| (DivergenceWatch::new(rule), LogLines::default()));
        loop {
            if stop.is_stopped() {
                self.cancel(job, rec)?;
                return Ok(Watched::Cancelled(Exit::Stopped));
            }
            if let Some((watch, lines)) = &mut divergence {
                let diverged = lines
                    .read_new(&job.log())
                    .iter()
                    .find_map(|l| watch.observe(l));
                if let Some(d) = diverged {
                    self.cancel(job, rec)?;
                    return Ok(Watched::Cancelled(Exit::Diverged(d.to_string())));
                }
            }
            if running_since.is_some_and(|t| t.elapsed() > job.timeout + self.grace) {
                self.cancel(job, rec)?;
                return Ok(Watched::Cancelled(Exit::TimedOut));
            }
            match self.poller.state(&rec.job_id) {
                Ok(Queue::Active(state)) => {
                    errors = 0;
                    if state == "RUNNING" && running_since.is_none() {
                        *running_since = Some(Instant::now());
                    }
                }
                Ok(Queue::Left(state)) => return Ok(Watched::Left(state)),
                Err(e @ SlurmError::Missing { .. }) => return Err(e.into()),
                Err(e) => {
                    errors += 1;
                    if errors > QUEUE_ERRORS_TOLERATED {
                        return Err(anyhow::Error::new(e)
                            .context(format!("watching slurm job {}", rec.job_id)));
                    }
                    tracing::warn!("watching slurm job {}: {e}", rec.job_id);
                }
            }
            sleep_unless_stopped(interval, stop);
            if begun.elapsed() > BACKOFF_AFTER {
                interval = (interval * 3 / 2).min(POLL_MAX);
            }
        }
    }

    /// Marks the job cancelled (so a resumed loop does not pick it up as a result), cancels
    /// it, and waits a while for it to leave the queue.
    fn cancel(&self, job: &RunJob, rec: &mut JobRecord) -> Result<()> {
        rec.phase = Phase::Cancelled;
        rec.save(&job.out)?;
        if let Err(e) = cli::cancel(&rec.job_id) {
            tracing::warn!("{e}");
        }
        let deadline = Instant::now() + CANCEL_WAIT;
        while Instant::now() < deadline {
            match self.poller.state(&rec.job_id) {
                Ok(Queue::Left(_)) => return Ok(()),
                Ok(Queue::Active(_)) | Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        tracing::warn!(
            "slurm job {} is still in the queue {}s after scancel",
            rec.job_id,
            CANCEL_WAIT.as_secs()
        );
        Ok(())
    }
}

impl Executor for SlurmExecutor {
    fn slots(&self) -> usize {
        self.slot_count
    }

    fn describe(&self) -> String {
        let partition = match &self.config.partition {
            Some(p) => format!(", partition {p}"),
            None => String::new(),
        };
        format!("slurm, {} job(s) at once{partition}", self.slot_count)
    }

    fn run(&self, job: &RunJob, stop: &Stop) -> Result<Ran> {
        let called = Instant::now();
        let Some(_slot) = self.slots.acquire(stop) else {
            return Ok(finish(job, Exit::Stopped, called.elapsed(), "none", None));
        };
        let script = script::job_script(job);
        let sha = script::sha256_hex(&script);
        let loaded = JobRecord::load(&job.out);
        let (mut rec, mut reattached) = match record::decide(loaded.as_ref(), &sha) {
            Attach::Reattach(id) => {
                tracing::info!("{}: re-attaching to slurm job {id}", job.name);
                (loaded.expect("decide re-attaches only to a record"), true)
            }
            Attach::Submit => (self.submit_fresh(job, &script, &sha)?, false),
        };
        let mut running_since = None;
        loop {
            let queue_state = match self.watch(job, &mut rec, stop, &mut running_since)? {
                Watched::Cancelled(exit) => {
                    let wall = running_since.unwrap_or(called).elapsed();
                    let reason = match &exit {
                        Exit::TimedOut => Some(format!(
                            "agentloop: slurm job {} cancelled: still running {}s after the train timeout",
                            rec.job_id,
                            self.grace.as_secs()
                        )),
                        Exit::Diverged(why) => Some(format!(
                            "agentloop: slurm job {} cancelled: the run diverged ({why})",
                            rec.job_id
                        )),
                        _ => None,
                    };
                    return Ok(finish(job, exit, wall, &rec.job_id, reason));
                }
                Watched::Left(state) => state,
            };
            let wall = running_since.unwrap_or(called).elapsed();
            let slurm = cli::final_state(&rec.job_id);
            let state = queue_state.or_else(|| slurm.as_ref().map(|f| f.state.clone()));
            let command_exit = read_exit_code(&job.out, state.as_deref());
            let Some(state) = state.or_else(|| command_exit.map(|_| "COMPLETED".to_string()))
            else {
                if reattached {
                    // The job we were re-attaching to is unknown to the cluster now and left
                    // nothing behind: run it again.
                    tracing::info!(
                        "{}: slurm job {} cannot be found; submitting the run again",
                        job.name,
                        rec.job_id
                    );
                    rec = self.submit_fresh(job, &script, &sha)?;
                    reattached = false;
                    running_since = None;
                    continue;
                }
                let reason = format!(
                    "agentloop: slurm job {} left the queue without a final state (not in sacct or scontrol) and wrote no exit code",
                    rec.job_id
                );
                return self.collected(job, &mut rec, Exit::Code(None), wall, Some(reason));
            };
            let slurm_exit = slurm.as_ref().and_then(|f| f.exit_code);
            match state::verdict(&state, command_exit, slurm_exit) {
                Verdict::Done(exit) => {
                    let reason = (exit != Exit::Code(Some(0))).then(|| {
                        let code = command_exit
                            .or(slurm_exit)
                            .map_or("none".to_string(), |c| c.to_string());
                        format!(
                            "agentloop: slurm job {} ended {state} (exit code {code})",
                            rec.job_id
                        )
                    });
                    return self.collected(job, &mut rec, exit, wall, reason);
                }
                Verdict::Resubmit if rec.retries.len() < MAX_RETRIES => {
                    self.resubmit(job, &mut rec, &state)?;
                    reattached = false;
                    running_since = None;
                }
                Verdict::Resubmit => {
                    let reason = format!(
                        "agentloop: slurm job {} ended {state}; the run was lost {} times, recorded as crashed",
                        rec.job_id,
                        MAX_RETRIES + 1
                    );
                    return self.collected(job, &mut rec, Exit::Code(None), wall, Some(reason));
                }
            }
        }
    }
}

impl SlurmExecutor {
    /// The result is handed to the loop: mark it taken first, so a resumed loop that runs
    /// the same run again (a retry) submits a new job instead of re-reading this one.
    fn collected(
        &self,
        job: &RunJob,
        rec: &mut JobRecord,
        exit: Exit,
        wall: Duration,
        reason: Option<String>,
    ) -> Result<Ran> {
        rec.phase = Phase::Collected;
        rec.save(&job.out)?;
        Ok(finish(job, exit, wall, &rec.job_id, reason))
    }
}

/// The `Ran` of a job: the log's tail, with the reason for a non-ok end appended (to the log
/// too, so whoever reads `run.log` sees it).
fn finish(job: &RunJob, exit: Exit, wall: Duration, job_id: &str, reason: Option<String>) -> Ran {
    if let Some(reason) = &reason {
        note_in_log(job, reason);
    }
    Ran {
        exit,
        wall,
        tail: read_tail(&job.log(), TAIL_BYTES),
        log: job.log(),
        worker: format!("slurm:{job_id}"),
    }
}

fn note_in_log(job: &RunJob, line: &str) {
    use std::io::Write;
    tracing::info!("{}: {line}", job.name);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(job.log())
    {
        let _ = writeln!(f, "{line}");
    }
}

/// The command's exit code from `out/exit_code`. For a job that ran to its end (COMPLETED or
/// FAILED) the file is given a moment to appear, as a network filesystem may show it late.
fn read_exit_code(out: &Path, state: Option<&str>) -> Option<i32> {
    let path = out.join(script::EXIT_CODE);
    let read = || {
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    };
    let ran_to_end = matches!(
        state.map(state::normalize).as_deref(),
        Some("COMPLETED" | "FAILED")
    );
    let deadline = Instant::now()
        + if ran_to_end {
            EXIT_FILE_WAIT
        } else {
            Duration::ZERO
        };
    loop {
        if let Some(code) = read() {
            return Some(code);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sleep_unless_stopped(d: Duration, stop: &Stop) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.is_stopped() {
        std::thread::sleep(
            Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
        );
    }
}
