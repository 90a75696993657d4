//! The sandboxed command lines of builds and runs, and how a run's eval step failure reads.

use std::path::Path;
use std::time::Duration;

use agentloop_guardrails::target::{shell_quote, TargetSpec};
use anyhow::{Context, Result};

use super::exec;
use super::policy::Policy;
use super::settings::{settings, Settings};
use super::step_policy::{policy_for, write_policy, Step};

/// Exit code of a run whose eval step failed (the reason is the log's last `agentloop:` line).
pub const EVAL_FAILED: i32 = 86;
/// Written to the log before `exit EVAL_FAILED`.
pub const EVAL_FAILED_PREFIX: &str = "agentloop: the eval step";

fn wrapped(s: &Settings, policy_file: &Path, timeout: Option<Duration>, command: &str) -> String {
    let mut w = format!(
        "{} sandbox-exec --policy {}",
        shell_quote(&s.exe.to_string_lossy()),
        shell_quote(&policy_file.to_string_lossy())
    );
    if let Some(t) = timeout {
        w.push_str(&format!(" --timeout {}", t.as_secs().max(1)));
    }
    w.push_str(&format!(" -- sh -c {}", shell_quote(command)));
    w
}

/// The build command, sandboxed.
pub fn build_command(target: &TargetSpec, worktree: &Path, target_dir: &Path) -> Result<String> {
    let s = settings()?;
    let mut policy = policy_for(
        target,
        Step::Build,
        worktree,
        target_dir,
        s.enforce,
        &s.never_env,
    );
    policy
        .read
        .extend(crate::inputs::prepare_worktree(target, worktree)?);
    let file = write_policy(&s.policy_dir, &policy)?;
    Ok(format!(
        "exec {}",
        wrapped(&s, &file, None, &target.build.command)
    ))
}

/// A training run's command (train, then eval when the target has one) and its time limit.
pub struct RunCommand {
    pub command: String,
    pub timeout: Duration,
}

/// The eval step's own output, in the run dir (where `metric_regex` looks when there is an
/// eval step: what training printed never counts). Also copied into the run's log.
pub const EVAL_OUTPUT: &str = "eval.out";

/// Time the eval step's sandbox and the shell between the steps get beyond both timeouts.
const STEP_SLACK: Duration = Duration::from_secs(30);

/// The sandboxed command of one run. `train` is the rendered train command.
pub fn run_command(
    target: &TargetSpec,
    worktree: &Path,
    out: &Path,
    train: &str,
    seed: u64,
    split: &str,
) -> Result<RunCommand> {
    let s = settings()?;
    let (train_policy, eval_policy) = run_policies(target, worktree, out, seed, split, &s)?;
    let train_file = write_policy(&s.policy_dir, &train_policy)?;
    let (Some(eval), Some(eval_policy)) = (&target.eval, eval_policy) else {
        return Ok(RunCommand {
            command: format!("exec {}", wrapped(&s, &train_file, None, train)),
            timeout: target.train.timeout,
        });
    };
    let eval_command = target
        .render_eval_command(seed, split, out)
        .context("internal: [eval] without a command")?;
    let eval_file = write_policy(&s.policy_dir, &eval_policy)?;
    let metrics = shell_quote(&out.join("metrics.json").to_string_lossy());
    let eval_out = shell_quote(&out.join(EVAL_OUTPUT).to_string_lossy());
    let train_limit = humantime::format_duration(target.train.timeout);
    let eval_limit = humantime::format_duration(eval.timeout);
    // The training step's metrics.json (if any) is removed: only the eval step's counts.
    let command = format!(
        "{train_step}\ncode=$?\n\
         if [ \"$code\" -eq {to} ]; then echo 'agentloop: the training step timed out after {train_limit}'; exit 4; fi\n\
         if [ \"$code\" -ne 0 ]; then exit \"$code\"; fi\n\
         rm -rf {metrics} {eval_out}\n\
         {eval_step} >{eval_out} 2>&1\n\
         code=$?\n\
         cat {eval_out}\n\
         if [ \"$code\" -eq 0 ]; then exit 0; fi\n\
         if [ \"$code\" -eq {to} ]; then echo '{prefix} timed out after {eval_limit}'; \
         else echo \"{prefix} failed (exit $code)\"; fi\n\
         exit {failed}\n",
        train_step = wrapped(&s, &train_file, Some(target.train.timeout), train),
        eval_step = wrapped(&s, &eval_file, Some(eval.timeout), &eval_command),
        to = exec::TIMED_OUT,
        prefix = EVAL_FAILED_PREFIX,
        failed = EVAL_FAILED,
    );
    Ok(RunCommand {
        command,
        timeout: target.train.timeout + eval.timeout + STEP_SLACK,
    })
}

/// The train step's policy and the eval step's (with `[eval]`), the inputs linked into the
/// worktree first.
pub(super) fn run_policies(
    target: &TargetSpec,
    worktree: &Path,
    out: &Path,
    seed: u64,
    split: &str,
    s: &Settings,
) -> Result<(Policy, Option<Policy>)> {
    // Inputs are read through their real paths (read-only); the eval_data ones among them are
    // hidden from training by the same `hide` globs as tracked evaluation files.
    let inputs = crate::inputs::prepare_worktree(target, worktree)?;
    let mut train = policy_for(target, Step::Train, worktree, out, s.enforce, &s.never_env);
    train.read.extend(inputs.iter().cloned());
    // Training before a separate eval step is not told the split (it could train differently
    // for the holdout confirmation).
    let train_split = target.eval.is_none().then_some(split);
    train.env.set.extend(target.run_env(seed, train_split));
    let eval = target.eval.as_ref().map(|_| {
        let mut eval = policy_for(target, Step::Eval, worktree, out, s.enforce, &s.never_env);
        eval.read.extend(inputs);
        eval.env.set.extend(target.run_env(seed, Some(split)));
        eval
    });
    Ok((train, eval))
}

/// Why a run failed in its eval step (`None`: it did not).
pub fn eval_failure(exit: &crate::executor::process::Exit, log_tail: &str) -> Option<String> {
    if *exit != crate::executor::process::Exit::Code(Some(EVAL_FAILED)) {
        return None;
    }
    Some(
        log_tail
            .lines()
            .rev()
            .find(|l| l.starts_with(EVAL_FAILED_PREFIX))
            .unwrap_or("agentloop: the eval step failed")
            .trim_start_matches("agentloop: ")
            .to_string(),
    )
}
