//! Runs one target command (`sh -c`) in its own process group, so that a timeout, the end of
//! the budget or Ctrl-C can kill it together with everything it started (cargo, rustc, the
//! trainer), and so that nothing of it outlives the loop. A training run is also under the
//! guardrails' divergence watch: its log is read as it grows, and a NaN or exploding loss
//! kills it at once instead of letting it burn its whole timeout.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentloop_guardrails::run_policy::{DivergenceRule, DivergenceWatch};

use super::budget::Stop;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Exited on its own with this code (`None`: killed by a signal it did not get from us).
    Code(Option<i32>),
    /// Killed by us after its own time limit.
    TimedOut,
    /// Killed by us because the loop is stopping (budget spent or Ctrl-C).
    Stopped,
    /// Killed by us because the process group's resident memory passed the ceiling.
    OutOfMemory,
    /// Killed by us because its streamed loss went NaN/inf or blew up (the reason says which).
    Diverged(String),
}

#[derive(Debug, Clone)]
pub struct Finished {
    pub exit: Exit,
    pub wall: Duration,
    /// The last few KiB of stdout and stderr (both go to `log`).
    pub tail: String,
    pub log: PathBuf,
}

impl Finished {
    pub fn succeeded(&self) -> bool {
        self.exit == Exit::Code(Some(0))
    }
}

pub struct Job<'a> {
    pub command: &'a str,
    pub cwd: &'a Path,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// Resident memory ceiling of the whole process group (`None`: no ceiling).
    pub memory_limit: Option<u64>,
    /// Watch the output's `{"event":"step","loss":..}` lines (`None`: not a training run).
    pub divergence: Option<DivergenceRule>,
    pub log: PathBuf,
}

const MEMORY_POLL: Duration = Duration::from_millis(200);
const TAIL_BYTES: u64 = 8 * 1024;
const POLL: Duration = Duration::from_millis(25);

/// Runs the job to completion, timeout, or stop. The child's output goes to the log file
/// (not to our terminal), so a crash report survives the loop being killed.
pub fn run(job: &Job<'_>, stop: &Stop) -> std::io::Result<Finished> {
    if let Some(parent) = job.log.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let log = std::fs::File::create(&job.log)?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(job.command)
        .current_dir(job.cwd)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    for (k, v) in &job.env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let pgid = child.id() as i32;
    let mut last_memory_check = Instant::now();
    let mut watch = job
        .divergence
        .map(|rule| (DivergenceWatch::new(rule), LogLines::default()));
    let exit = loop {
        if let Some(status) = child.try_wait()? {
            break Exit::Code(status.code());
        }
        let over_memory = match job.memory_limit {
            Some(limit) if last_memory_check.elapsed() >= MEMORY_POLL => {
                last_memory_check = Instant::now();
                group_rss_bytes(pgid) > limit
            }
            _ => false,
        };
        let diverged = match &mut watch {
            Some((watch, lines)) => lines
                .read_new(&job.log)
                .iter()
                .find_map(|l| watch.observe(l)),
            None => None,
        };
        let why = if stop.is_stopped() {
            Some(Exit::Stopped)
        } else if let Some(d) = diverged {
            Some(Exit::Diverged(d.to_string()))
        } else if started.elapsed() >= job.timeout {
            Some(Exit::TimedOut)
        } else if over_memory {
            Some(Exit::OutOfMemory)
        } else {
            None
        };
        if let Some(why) = why {
            kill_group(pgid);
            let _ = child.wait();
            break why;
        }
        std::thread::sleep(POLL);
    };
    // The shell may have exited while its children (e.g. a backgrounded trainer) live on.
    kill_group(pgid);
    // A run that failed right after its loss diverged (between two polls) diverged too.
    let exit = match (exit, &mut watch) {
        (Exit::Code(code), Some((watch, lines))) if code != Some(0) => lines
            .read_new(&job.log)
            .iter()
            .find_map(|l| watch.observe(l))
            .map_or(Exit::Code(code), |d| Exit::Diverged(d.to_string())),
        (exit, _) => exit,
    };
    Ok(Finished {
        exit,
        wall: started.elapsed(),
        tail: read_tail(&job.log, TAIL_BYTES),
        log: job.log.clone(),
    })
}

/// Follows a growing log file: each call yields the lines completed since the last one.
#[derive(Default)]
pub struct LogLines {
    offset: u64,
    partial: Vec<u8>,
}

impl LogLines {
    pub fn read_new(&mut self, path: &Path) -> Vec<String> {
        let mut fresh = Vec::new();
        if let Ok(mut f) = std::fs::File::open(path) {
            if f.seek(SeekFrom::Start(self.offset)).is_ok() {
                let _ = f.read_to_end(&mut fresh);
            }
        }
        self.offset += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        let complete = match self.partial.iter().rposition(|&b| b == b'\n') {
            Some(end) => self.partial.drain(..=end).collect::<Vec<u8>>(),
            None => Vec::new(),
        };
        String::from_utf8_lossy(&complete)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group we created; no memory is shared.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Resident memory of every process in group `pgid`, from /proc (0 where /proc is absent).
fn group_rss_bytes(pgid: i32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let page = 4096u64;
    let mut total = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state, ppid, pgrp, ...
        let after = stat.rsplit(')').next().unwrap_or("");
        let pgrp = after
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.parse::<i32>().ok());
        if pgrp != Some(pgid) {
            continue;
        }
        if let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) {
            let rss: u64 = statm
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            total += rss * page;
        }
    }
    total
}

pub fn read_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job<'a>(command: &'a str, dir: &'a Path, timeout_ms: u64) -> Job<'a> {
        Job {
            command,
            cwd: dir,
            env: vec![("GREETING".into(), "hi".into())],
            timeout: Duration::from_millis(timeout_ms),
            memory_limit: None,
            divergence: None,
            log: dir.join("logs/job.log"),
        }
    }

    #[test]
    fn exit_code_output_env_and_cwd_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("here"), "").unwrap();
        let f = run(
            &job(
                "ls; echo $GREETING; echo oops >&2; exit 3",
                dir.path(),
                5000,
            ),
            &Stop::never(),
        )
        .unwrap();
        assert_eq!(f.exit, Exit::Code(Some(3)));
        assert!(
            f.tail.contains("here") && f.tail.contains("hi") && f.tail.contains("oops"),
            "{}",
            f.tail
        );
        assert!(!f.succeeded());
    }

    #[test]
    fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let cmd = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let f = run(&job(&cmd, dir.path(), 300), &Stop::never()).unwrap();
        assert_eq!(f.exit, Exit::TimedOut);
        assert!(f.wall < Duration::from_secs(10));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed means gone or a zombie waiting for its new parent to reap it.
        let running = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    !s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(false)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while running() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!running(), "the backgrounded grandchild must be killed too");
    }

    #[test]
    fn memory_ceiling_kills_a_growing_process_group() {
        let dir = tempfile::tempdir().unwrap();
        // `tail` keeps the whole (newline-free) stream in memory: it grows until killed.
        let mut j = job(
            "head -c 2000000000 /dev/zero | tail -c 1000000000 > /dev/null",
            dir.path(),
            60_000,
        );
        j.memory_limit = Some(100 * 1024 * 1024);
        let f = run(&j, &Stop::never()).unwrap();
        assert_eq!(f.exit, Exit::OutOfMemory);
    }

    #[test]
    fn stop_flag_ends_a_running_command() {
        let dir = tempfile::tempdir().unwrap();
        let stop = Stop::new();
        let s2 = stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            s2.request("test");
        });
        let f = run(&job("sleep 30", dir.path(), 60_000), &stop).unwrap();
        t.join().unwrap();
        assert_eq!(f.exit, Exit::Stopped);
    }

    #[test]
    fn a_diverging_loss_kills_the_run_and_a_healthy_one_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let step = |loss: &str| format!("echo '{{\"event\":\"step\",\"step\":2,\"loss\":{loss}}}'");
        let watched = |command: &str| {
            let mut j = job(command, dir.path(), 60_000);
            j.divergence = Some(DivergenceRule::default());
            run(&j, &Stop::never()).unwrap()
        };
        // A NaN loss, then the run hangs: killed for diverging, long before its timeout.
        let f = watched(&format!("{}; {}; sleep 30", step("4.0"), step("null")));
        assert!(
            matches!(&f.exit, Exit::Diverged(why) if why.contains("non-finite at step 2")),
            "{:?}",
            f.exit
        );
        assert!(f.wall < Duration::from_secs(20));
        // A loss past 10x the first one.
        let f = watched(&format!("{}; {}; sleep 30", step("4.0"), step("400.0")));
        assert!(
            matches!(&f.exit, Exit::Diverged(why) if why.contains("blew up")),
            "{:?}",
            f.exit
        );
        // A decreasing loss, and a step line split across two writes, run to the end.
        let f = watched(&format!(
            "{}; printf '{{\"event\":\"step\",'; sleep 0.1; printf '\"loss\":3.0}}\\n'",
            step("4.0")
        ));
        assert_eq!(f.exit, Exit::Code(Some(0)), "{}", f.tail);
        // A run that fails at once after a NaN loss (before any poll) diverged too.
        let f = watched(&format!("{}; exit 1", step("null")));
        assert!(matches!(&f.exit, Exit::Diverged(_)), "{:?}", f.exit);
        // Unwatched jobs (builds) are not judged by what they print.
        let f = run(
            &job(&format!("{}; exit 0", step("null")), dir.path(), 60_000),
            &Stop::never(),
        )
        .unwrap();
        assert_eq!(f.exit, Exit::Code(Some(0)));
    }

    #[test]
    fn log_lines_are_yielded_once_and_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut lines = LogLines::default();
        assert!(lines.read_new(&path).is_empty(), "no file yet");
        std::fs::write(&path, "a\nb").unwrap();
        assert_eq!(lines.read_new(&path), ["a"]);
        std::fs::write(&path, "a\nbc\nd\n").unwrap();
        assert_eq!(lines.read_new(&path), ["bc", "d"]);
        assert!(lines.read_new(&path).is_empty());
    }
}
