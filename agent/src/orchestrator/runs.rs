//! One training run of the target: render the train command, run it under the run policy,
//! read `metrics.json`, and turn it all into a `run_result` payload.

use std::path::{Path, PathBuf};

use agentloop_guardrails::exit_code;
use agentloop_guardrails::target::TargetSpec;
use agentloop_ledger::payload::{Arm, ExitStatus, RunResult, Stage};
use anyhow::Result;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::executor::budget::Stop;
use crate::executor::process::Exit;
use crate::executor::{Executor, RunJob};

/// Where and how a run happens.
pub struct RunSpec<'a> {
    pub arm: Arm,
    pub stage: Stage,
    pub commit: &'a str,
    pub seed: u64,
    pub split: &'a str,
    pub budget: &'a str,
    /// The worktree whose build outputs the command uses.
    pub worktree: &'a Path,
    /// `.agentloop/runs/<change or session>/<run>/`: metrics.json and the log land here.
    pub out: PathBuf,
}

/// `None` when the loop was stopped mid-run: an interrupted run is not a result.
pub fn run(
    target: &TargetSpec,
    spec: &RunSpec<'_>,
    env: &[(String, String)],
    exec: &dyn Executor,
    stop: &Stop,
) -> Result<Option<RunResult>> {
    let train = target.render_train_command(spec.seed, spec.split, spec.budget, &spec.out);
    // Train (then eval, when the target has an [eval] step), each in its own OS sandbox.
    let sandboxed = crate::sandbox::run_command(
        target,
        spec.worktree,
        &spec.out,
        &train,
        spec.seed,
        spec.split,
    )?;
    let job = RunJob {
        command: sandboxed.command,
        cwd: spec.worktree.to_path_buf(),
        env: env.to_vec(),
        timeout: sandboxed.timeout,
        memory_limit: Some(target.train.memory_limit).filter(|&m| m > 0),
        out: spec.out.clone(),
        name: run_name(&spec.out),
        divergence: Some(target.train.divergence),
    };
    let finished = exec.run(&job, stop)?;
    let eval_out = spec.out.join(crate::sandbox::EVAL_OUTPUT);
    crate::sandbox::redact_files(&[&finished.log, &spec.out.join("metrics.json"), &eval_out]);
    let (exit_status, exit_code) = match finished.exit {
        Exit::Stopped => return Ok(None),
        Exit::TimedOut => (ExitStatus::TimedOut, None),
        Exit::OutOfMemory => (ExitStatus::Crashed, None),
        Exit::Diverged(_) => (ExitStatus::Diverged, None),
        Exit::Code(code) => (status_of_exit_code(code), code),
    };
    let mut metrics = read_metrics(&spec.out.join("metrics.json"));
    let mut metric_missing = None;
    if let Some(pattern) = &target.train.metric_regex {
        // The eval step's output when there is one (training's never counts), else the log.
        let (source, which) = match target.eval {
            Some(_) => (&eval_out, "the eval step's output"),
            None => (&finished.log, "the train command's output"),
        };
        let text = String::from_utf8_lossy(&std::fs::read(source).unwrap_or_default()).into_owned();
        let found = metric_from_output(pattern, &text);
        if !metrics.is_object() {
            metrics = Value::Object(Map::new());
        }
        let m = metrics.as_object_mut().expect("an object");
        match found {
            Some(v) => {
                m.insert(target.metric.clone(), serde_json::json!(v));
            }
            None => {
                m.remove(&target.metric);
                metric_missing = Some(format!(
                    "[train] metric_regex {pattern:?} matched no number in {which}"
                ));
            }
        }
        m.insert("metric_source".into(), Value::String("metric_regex".into()));
    }
    // A run that says it succeeded but wrote no usable metric did not succeed.
    let exit_status = match (
        exit_status,
        metrics.get(&target.metric).and_then(Value::as_f64),
    ) {
        (ExitStatus::Ok, Some(v)) if v.is_finite() => ExitStatus::Ok,
        (ExitStatus::Ok, _) => ExitStatus::Crashed,
        (other, _) => other,
    };
    let mut extra = Map::new();
    if finished.exit == Exit::OutOfMemory {
        extra.insert("out_of_memory".into(), Value::Bool(true));
        extra.insert(
            "memory_limit".into(),
            serde_json::json!(target.train.memory_limit),
        );
    }
    if let Exit::Diverged(why) = &finished.exit {
        // Killed by the loop's watch: the target may never have exited 3 by itself.
        extra.insert("killed_because".into(), Value::String(why.clone()));
    }
    if let Some(why) = crate::sandbox::eval_failure(&finished.exit, &finished.tail) {
        extra.insert("failed_step".into(), Value::String("eval".into()));
        extra.insert("reason".into(), Value::String(why));
    }
    if let (Some(why), true) = (&metric_missing, finished.exit == Exit::Code(Some(0))) {
        extra.insert("reason".into(), Value::String(why.clone()));
    }
    if exit_status != ExitStatus::Ok {
        extra.insert(
            "log_tail".into(),
            Value::String(tail_lines(&finished.tail, 20)),
        );
        // A full disk takes the run's own log with it: say so, or the crash has no reason.
        if let Some(why) = disk_full(&spec.out) {
            extra.insert("disk_full".into(), Value::String(why));
        }
    }
    Ok(Some(RunResult {
        arm: spec.arm,
        stage: spec.stage,
        commit: spec.commit.to_string(),
        seed: spec.seed,
        split: spec.split.to_string(),
        budget: Some(spec.budget.to_string()),
        metrics,
        metric: Some(target.metric.clone()),
        exit_status,
        exit_code,
        wall_s: Some(finished.wall.as_secs_f64()),
        log_sha256: file_sha256(&finished.log),
        worker: Some(finished.worker.clone()),
        extra,
    }))
}

/// Whether the run directory's filesystem has no room left (a 64 KiB probe write fails
/// with ENOSPC or EDQUOT); the message names the directory.
fn disk_full(dir: &Path) -> Option<String> {
    let probe = dir.join(".agentloop-space-probe");
    let written = std::fs::write(&probe, vec![0u8; 64 * 1024]);
    let _ = std::fs::remove_file(&probe);
    match written {
        Err(e) if matches!(e.raw_os_error(), Some(28) | Some(122)) => {
            Some(format!("no space left in {}: {e}", dir.display()))
        }
        _ => None,
    }
}

/// `<parent>-<run>` from `.agentloop/runs/<parent>/<run>/`: readable in `squeue` and logs.
fn run_name(out: &Path) -> String {
    let part = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    format!("{}-{}", part(out.parent()), part(Some(out)))
}

/// The trainer contract's exit codes (ARCHITECTURE.md §2): ok, diverged, timed out, else crashed.
pub fn status_of_exit_code(code: Option<i32>) -> ExitStatus {
    match code {
        Some(exit_code::OK) => ExitStatus::Ok,
        Some(exit_code::DIVERGED) => ExitStatus::Diverged,
        Some(exit_code::TIMED_OUT) => ExitStatus::TimedOut,
        _ => ExitStatus::Crashed,
    }
}

fn read_metrics(path: &Path) -> Value {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter(Value::is_object)
        .unwrap_or(Value::Null)
}

/// The first capture group of the last match of `pattern` in `text`, as a number.
pub fn metric_from_output(pattern: &str, text: &str) -> Option<f64> {
    let re = regex::Regex::new(pattern).ok()?;
    let last = re.captures_iter(text).last()?;
    let group = last.iter().skip(1).flatten().next()?;
    group.as_str().trim().parse::<f64>().ok()
}

pub fn file_sha256(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(hex::encode(Sha256::digest(&bytes)))
}

pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The metric value of a successful run.
pub fn value_of(run: &RunResult) -> Option<f64> {
    if run.exit_status == ExitStatus::Ok {
        run.metric_value()
    } else {
        None
    }
}

/// Recorded runs of one change matching a stage, arm and seed, in order.
pub fn recorded(
    runs: &[RunResult],
    stage: Stage,
    arm: Arm,
    seed: u64,
) -> impl Iterator<Item = &RunResult> {
    runs.iter()
        .filter(move |r| r.stage == stage && r.arm == arm && r.seed == seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_to_the_trainer_contract() {
        assert_eq!(status_of_exit_code(Some(0)), ExitStatus::Ok);
        assert_eq!(status_of_exit_code(Some(1)), ExitStatus::Crashed);
        assert_eq!(status_of_exit_code(Some(2)), ExitStatus::Crashed);
        assert_eq!(status_of_exit_code(Some(3)), ExitStatus::Diverged);
        assert_eq!(status_of_exit_code(Some(4)), ExitStatus::TimedOut);
        assert_eq!(status_of_exit_code(None), ExitStatus::Crashed);
    }

    #[test]
    fn metric_regex_takes_the_last_match_and_rejects_non_numbers() {
        let re = r"val_bpb:\s*([0-9.eE+-]+)";
        let out = "step 1 val_bpb: 3.5\nval_bpb: 2.25e0\ndone\n";
        assert_eq!(metric_from_output(re, out), Some(2.25));
        assert_eq!(metric_from_output(re, "val_bpb: nan\n"), None);
        assert_eq!(metric_from_output(re, "loss 1.0\n"), None);
        assert_eq!(metric_from_output(re, "val_bpb: 1.0.0\n"), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail_lines("a\nb\nc\nd", 2), "c\nd");
        assert_eq!(tail_lines("a", 5), "a");
    }
}
