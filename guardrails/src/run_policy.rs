//! Run policy: every training or build process runs under a wall-clock timeout, a memory
//! ceiling and a divergence watch, and a circuit breaker pauses the loop after repeated failures.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// Limits for one process (and everything it spawns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunLimits {
    pub timeout: Duration,
    /// Ceiling on the summed resident memory of the process group; `None` = no ceiling.
    pub memory_limit: Option<u64>,
    /// Abort when a streamed `{"event":"step","loss":..}` is non-finite or exceeds this multiple
    /// of the first loss seen; `None` = only watch for non-finite losses.
    pub divergence_loss_ratio: Option<f64>,
    /// How often to poll memory and exit status.
    pub poll_interval: Duration,
}

impl RunLimits {
    pub fn new(timeout: Duration, memory_limit: Option<u64>) -> Self {
        RunLimits {
            timeout,
            memory_limit,
            divergence_loss_ratio: Some(10.0),
            poll_interval: Duration::from_millis(50),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Ok,
    Crashed,
    Diverged,
    TimedOut,
    OutOfMemory,
}

impl RunStatus {
    /// Maps the trainer's exit codes: 0 ok, 3 diverged, 4 timed out; anything else crashed
    /// (1 crashed, 2 bad input: both mean the candidate produced no result).
    pub fn from_exit_code(code: Option<i32>) -> RunStatus {
        match code {
            Some(0) => RunStatus::Ok,
            Some(3) => RunStatus::Diverged,
            Some(4) => RunStatus::TimedOut,
            _ => RunStatus::Crashed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    pub status: RunStatus,
    /// `None` when the process was killed by a signal.
    pub exit_code: Option<i32>,
    pub wall_s: f64,
    /// Highest summed RSS of the process group seen while polling.
    pub peak_rss_bytes: u64,
    /// Why the runner stopped the process, when it did.
    pub killed_because: Option<String>,
}

/// Runs `command` in its own process group with stdout and stderr appended to `log_path`,
/// killing the whole group on timeout, memory ceiling or divergence.
pub fn run_with_limits(
    mut command: Command,
    limits: &RunLimits,
    log_path: &Path,
) -> std::io::Result<RunOutcome> {
    let log = File::options().create(true).append(true).open(log_path)?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.try_clone()?)
        .process_group(0);
    let start = Instant::now();
    let mut child = command.spawn()?;
    let pgid = child.id() as i32;
    let diverged = Arc::new(AtomicBool::new(false));
    let stdout = child.stdout.take().expect("stdout is piped");
    let watcher = {
        let diverged = Arc::clone(&diverged);
        let ratio = limits.divergence_loss_ratio;
        std::thread::spawn(move || copy_and_watch(stdout, log, ratio, &diverged))
    };
    let mut peak_rss_bytes = 0u64;
    let mut killed: Option<(RunStatus, String)> = None;
    let exit = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let rss = group_rss_bytes(pgid);
        peak_rss_bytes = peak_rss_bytes.max(rss);
        if killed.is_none() {
            killed = if start.elapsed() > limits.timeout {
                Some((
                    RunStatus::TimedOut,
                    format!("wall-clock timeout of {:?} reached", limits.timeout),
                ))
            } else if limits.memory_limit.is_some_and(|limit| rss > limit) {
                Some((
                    RunStatus::OutOfMemory,
                    format!(
                        "resident memory {rss} bytes exceeds the ceiling of {} bytes",
                        limits.memory_limit.unwrap_or_default()
                    ),
                ))
            } else if diverged.load(Ordering::Relaxed) {
                Some((
                    RunStatus::Diverged,
                    "training loss became non-finite or blew up".to_string(),
                ))
            } else {
                None
            };
            if killed.is_some() {
                kill_group(pgid);
            }
        }
        std::thread::sleep(limits.poll_interval);
    };
    // Children left behind by a process that exited on its own must not outlive the run.
    kill_group(pgid);
    let _ = watcher.join();
    let exit_code = exit.code();
    let (status, killed_because) = match killed {
        Some((status, why)) => (status, Some(why)),
        None if diverged.load(Ordering::Relaxed) && exit_code != Some(0) => {
            (RunStatus::Diverged, None)
        }
        None => (RunStatus::from_exit_code(exit_code), None),
    };
    Ok(RunOutcome {
        status,
        exit_code,
        wall_s: start.elapsed().as_secs_f64(),
        peak_rss_bytes,
        killed_because,
    })
}

fn kill_group(pgid: i32) {
    // ESRCH (group already gone) is the normal case after a clean exit.
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

/// Copies the process's stdout to the log and flags divergence from its JSON step lines.
fn copy_and_watch(
    stdout: impl std::io::Read,
    mut log: File,
    ratio: Option<f64>,
    diverged: &AtomicBool,
) {
    let mut first_loss: Option<f64> = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(log, "{line}");
        let Some(loss) = step_loss(&line) else {
            continue;
        };
        let blew_up = match (loss, first_loss, ratio) {
            (l, _, _) if !l.is_finite() => true,
            (l, Some(first), Some(r)) => first > 0.0 && l > first * r,
            _ => false,
        };
        if blew_up {
            diverged.store(true, Ordering::Relaxed);
        }
        first_loss.get_or_insert(loss);
    }
}

/// The loss of a `{"event":"step","loss":..}` line; NaN when the loss is null, "NaN" or "inf".
fn step_loss(line: &str) -> Option<f64> {
    let value: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    if value.get("event")?.as_str()? != "step" {
        return None;
    }
    match value.get("loss")? {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => Some(s.parse::<f64>().unwrap_or(f64::NAN)),
        serde_json::Value::Null => Some(f64::NAN),
        _ => None,
    }
}

/// Sum of the resident set sizes of every process in group `pgid`, from /proc.
fn group_rss_bytes(pgid: i32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // Fields after the ")" that closes the command name: state ppid pgrp ...
            let rest = &stat[stat.rfind(')')? + 2..];
            let group: i32 = rest.split_whitespace().nth(2)?.parse().ok()?;
            if group != pgid {
                return None;
            }
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .sum()
}

/// What the loop reports to the breaker after each proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LoopOutcome {
    /// A decision was reached (accept or reject): the loop is healthy.
    Decided,
    /// The build, smoke or a training run crashed, diverged, timed out or ran out of memory.
    Crashed { detail: String },
    /// The patch policy refused the proposal.
    PolicyRejected { code: String },
}

/// Why the breaker tripped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trip {
    pub reason: String,
}

/// Pauses the loop after `k` consecutive crashes or policy rejections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CircuitBreaker {
    pub k: usize,
    /// The current run of consecutive failures, oldest first.
    pub streak: Vec<LoopOutcome>,
}

impl CircuitBreaker {
    pub fn new(k: usize) -> Self {
        CircuitBreaker {
            k: k.max(1),
            streak: Vec::new(),
        }
    }

    /// Records one outcome; returns a trip when the streak reaches `k` (the streak then resets,
    /// so a resumed loop gets `k` fresh attempts).
    pub fn record(&mut self, outcome: LoopOutcome) -> Option<Trip> {
        if outcome == LoopOutcome::Decided {
            self.streak.clear();
            return None;
        }
        self.streak.push(outcome);
        if self.streak.len() < self.k {
            return None;
        }
        let crashes = self
            .streak
            .iter()
            .filter(|o| matches!(o, LoopOutcome::Crashed { .. }))
            .count();
        let rejections = self.streak.len() - crashes;
        let last = match self.streak.last() {
            Some(LoopOutcome::Crashed { detail }) => format!("crash: {detail}"),
            Some(LoopOutcome::PolicyRejected { code }) => format!("policy rejection: {code}"),
            _ => String::new(),
        };
        let reason = format!(
            "paused after {} consecutive failures ({crashes} crashes, {rejections} policy rejections); last {last}",
            self.streak.len()
        );
        self.streak.clear();
        Some(Trip { reason })
    }
}
