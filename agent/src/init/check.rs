//! `agentloop init --check`: the contract tried end to end on the committed trunk, through the
//! loop's own build and run path, before a budget is spent. Every problem is reported with the
//! file or setting to fix.

use std::fmt::Write as _;
use std::path::Path;

use agentloop_guardrails::target::{TargetSpec, TARGET_FILE};
use agentloop_ledger::payload::{Arm, ExitStatus, RunResult, Stage};
use anyhow::{Context, Result};

use crate::executor::budget::Stop;
use crate::orchestrator::runs::{self, RunSpec};
use crate::orchestrator::workspace::Workspace;

const CHECK_WORKTREE: &str = "init-check";
const CHECK_BRANCH: &str = "agentloop/init-check";

/// What the check found: `problems` empty means a session can start.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per step that worked.
    pub passed: Vec<String>,
    /// What is missing or wrong, each naming what to fix.
    pub problems: Vec<String>,
    /// Worth knowing, not wrong (untracked files the runs will not see).
    pub notes: Vec<String>,
}

impl Report {
    pub fn text(&self) -> String {
        let mut t = String::new();
        for p in &self.passed {
            let _ = writeln!(t, "ok: {p}");
        }
        for n in &self.notes {
            let _ = writeln!(t, "note: {n}");
        }
        for p in &self.problems {
            let _ = writeln!(t, "PROBLEM: {p}");
        }
        t
    }
}

/// Runs the check on the repository `ws`. The caller installed the sandbox (`sandbox::set_up`)
/// and holds the workspace lock.
pub fn run(ws: &Workspace, target: &TargetSpec, target_dir: &Path) -> Result<Report> {
    let mut report = Report::default();
    match crate::inputs::fingerprint_target(target) {
        Ok(None) => {}
        Ok(Some(f)) => report.passed.push(format!(
            "inputs: {} file(s), {} bytes ([target] inputs {:?})",
            f.files, f.bytes, f.globs
        )),
        Err(e) => {
            report.problems.push(format!("{e:#}"));
            return Ok(report);
        }
    }
    uncommitted(ws, &mut report);
    let head = ws.git.head_commit()?;
    ws.git
        .set_branch(CHECK_BRANCH, head, "agentloop: init --check")?;
    let worktree = ws.git.add_worktree(CHECK_WORKTREE, CHECK_BRANCH)?;
    let result = steps(
        ws,
        target,
        target_dir,
        &worktree,
        &head.to_string(),
        &mut report,
    );
    let _ = ws.git.remove_worktree(CHECK_WORKTREE);
    let _ = ws.git.delete_branch(CHECK_BRANCH);
    result?;
    Ok(report)
}

fn steps(
    ws: &Workspace,
    target: &TargetSpec,
    target_dir: &Path,
    worktree: &Path,
    commit: &str,
    report: &mut Report,
) -> Result<()> {
    let env = vec![(
        "CARGO_TARGET_DIR".to_string(),
        target_dir.to_string_lossy().into_owned(),
    )];
    let stop = Stop::never();
    let built = crate::orchestrator::build::build(ws, target, &env, &stop, worktree, "init-check")?;
    if !built.succeeded() {
        report.problems.push(format!(
            "the build failed ([build] command in {TARGET_FILE}; log {}):\n{}",
            built.log.display(),
            indent(&runs::tail_lines(&built.tail, 15))
        ));
        return Ok(());
    }
    report
        .passed
        .push(format!("build ({:.1}s)", built.wall.as_secs_f64()));
    let exec = crate::executor::for_target(target)?;
    let out_root = ws.state.join("runs").join("init-check");
    let _ = std::fs::remove_dir_all(&out_root);
    let run = |name: &str, stage: Stage, seed: u64, budget: &str| -> Result<Option<RunResult>> {
        let out = out_root.join(name);
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let spec = RunSpec {
            arm: Arm::Baseline,
            stage,
            commit,
            seed,
            split: "val",
            budget,
            worktree,
            out,
        };
        runs::run(target, &spec, &env, exec.as_ref(), &stop)
    };
    let smoke_budget = target.train.smoke_budget.clone();
    let Some(smoke) = run("smoke", Stage::Smoke, 1, &smoke_budget)? else {
        return Ok(());
    };
    if !judge(target, "the smoke run", "smoke_budget", &smoke, report) {
        return Ok(());
    }
    let budget = target.train.budget.clone();
    let Some(first) = run("seed-1", Stage::Calibration, 1, &budget)? else {
        return Ok(());
    };
    if !judge(target, "a full run (seed 1)", "budget", &first, report) {
        return Ok(());
    }
    let Some(second) = run("seed-2", Stage::Calibration, 2, &budget)? else {
        return Ok(());
    };
    if !judge(target, "a full run (seed 2)", "budget", &second, report) {
        return Ok(());
    }
    let (a, b) = (
        first.metric_value().unwrap_or(f64::NAN),
        second.metric_value().unwrap_or(f64::NAN),
    );
    if a == b {
        report.problems.push(format!(
            "seed not honoured: seeds 1 and 2 gave the same {} = {a}. The loop pairs runs by seed \
             and needs run-to-run noise to judge a change: read the AGENTLOOP_SEED environment \
             variable in the trainer, or pass {{seed}} in [train] command of {TARGET_FILE}",
            target.metric
        ));
    } else {
        report.passed.push(format!(
            "seed honoured: seeds 1 and 2 gave {} = {a} and {b}",
            target.metric
        ));
    }
    Ok(())
}

/// Whether a run succeeded with a metric; else the problem, naming what to fix.
fn judge(
    target: &TargetSpec,
    what: &str,
    budget_key: &str,
    r: &RunResult,
    report: &mut Report,
) -> bool {
    let wall = r.wall_s.unwrap_or(0.0);
    if r.exit_status == ExitStatus::Ok {
        report.passed.push(format!(
            "{what}: {} = {} in {wall:.1}s ([train] {budget_key} = {:?})",
            target.metric,
            r.metric_value().unwrap_or(f64::NAN),
            r.budget.as_deref().unwrap_or("")
        ));
        return true;
    }
    let tail = r
        .extra
        .get("log_tail")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let reason = r.extra.get("reason").and_then(|v| v.as_str());
    let fix =
        if r.exit_code == Some(0) {
            match &target.train.metric_regex {
                Some(re) => format!(
                "it exited 0 but {}: fix [train] metric_regex ({re:?}) in {TARGET_FILE}, or make \
                 the {} print the metric",
                reason.unwrap_or("the metric was not found"),
                if target.eval.is_some() { "[eval] command" } else { "[train] command" }
            ),
                None => format!(
                "it exited 0 but its {{out}}/metrics.json has no number under \"{}\" ([target] \
                 metric in {TARGET_FILE}): write it there, or set [train] metric_regex to read \
                 it from the output",
                target.metric
            ),
            }
        } else {
            let step = match reason {
                Some(r) => r.to_string(),
                None => format!("it ended {:?} (exit {:?})", r.exit_status, r.exit_code),
            };
            format!(
                "{step}: see the output below; check [train] command{} in {TARGET_FILE}, and that \
             the data it reads exists (untracked data must be listed in [target] inputs)",
                if target.eval.is_some() {
                    " and [eval] command"
                } else {
                    ""
                }
            )
        };
    report
        .problems
        .push(format!("{what} failed: {fix}\n{}", indent(tail)));
    false
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Worktrees are checked out from the last commit: uncommitted tracked changes never reach
/// a run.
fn uncommitted(ws: &Workspace, report: &mut Report) {
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true).include_ignored(false);
    let Ok(statuses) = ws.git.repo().statuses(Some(&mut opts)) else {
        return;
    };
    // Changed tracked files would silently not be tried; untracked ones may be unrelated.
    let mut changed = Vec::new();
    let mut untracked = Vec::new();
    for s in statuses.iter() {
        let Some(path) = s.path().filter(|p| !p.starts_with(".agentloop")) else {
            continue;
        };
        if s.status().is_wt_new() {
            untracked.push(path.to_string());
        } else {
            changed.push(path.to_string());
        }
    }
    let first = |v: &[String]| v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if !changed.is_empty() {
        report.problems.push(format!(
            "not committed: {} (the loop checks out the last commit, so runs would not see \
             these changes): commit them (`git add` + `git commit`)",
            first(&changed)
        ));
    }
    if !untracked.is_empty() {
        report.notes.push(format!(
            "untracked, so not in any run: {} (commit what the build or runs need; list \
             untracked data in [target] inputs of {TARGET_FILE})",
            first(&untracked)
        ));
    }
}
