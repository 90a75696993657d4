//! Command-line interface (clap). Parsing only: each command's logic lives in `commands/`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "agentloop",
    version,
    about = "An auditable optimization loop over LLM training code"
)]
pub struct Cli {
    /// The target git repository (default: the repository containing the current directory).
    /// Also accepted after `start`, `status`, `rollback` and `report`.
    #[arg(long, value_name = "PATH")]
    pub repo: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented agentloop.toml fitted to this repository; with --check, try it.
    Init(InitArgs),
    /// Start a session, or resume the one that was interrupted.
    Start(StartArgs),
    /// Show the current (or last) session: budget, counts, best trunk metric, what is running.
    Status(StatusArgs),
    /// Revert an accepted change on the trunk as a new commit and re-measure the trunk.
    Rollback(RollbackArgs),
    /// Review the ledger: list, show, verify, export.
    Ledger(crate::commands::ledger::LedgerArgs),
    /// Write an HTML report (with PNG and SVG charts) of the current (or last) session.
    Report(crate::report::command::ReportArgs),
    /// Measure two commits against each other: paired runs on fresh seeds, mean difference,
    /// 95% interval and p; recorded in the ledger.
    Compare(CompareArgs),
    /// Replay the decision rule on synthetic noise: false accepts, power, runs per decision.
    Simulate(SimulateArgs),
    /// Internal: run a command under a sandbox policy (how the loop starts every build and run).
    #[command(hide = true)]
    SandboxExec(SandboxExecArgs),
}

#[derive(Debug, Args)]
pub struct SandboxExecArgs {
    /// The policy file (JSON) written by the loop.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Kill the command after this many seconds (exit 124).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Decisions simulated per (noise, effect) cell.
    #[arg(long, default_value_t = 2000)]
    pub trials: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seed correlation: the share of a run's variance that both arms of a pair share
    /// (0.5, 0.9, 0.99; the default target measures 0.996).
    #[arg(long, default_value_t = 0.996)]
    pub rho: f64,
    /// Keep the trunk fixed (no merges during the simulated session).
    #[arg(long)]
    pub fixed_trunk: bool,
    /// Simulate whole sessions under a fixed run budget instead: greedy (fixed seed),
    /// greedy-fresh and the default rule on the same stream of proposals.
    #[arg(long)]
    pub session: bool,
    /// --session: sessions per rule.
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// --session: training runs per session (calibration included).
    #[arg(long, default_value_t = 500)]
    pub budget_runs: usize,
    /// --session: the proposals' true effects: issue, mostly-null, small-wins, heavy-tail.
    #[arg(long, default_value = "issue")]
    pub mix: String,
    /// --session: sd of a change's validation-set-specific effect (metric units).
    #[arg(long)]
    pub val_sd: Option<f64>,
    /// --session: mean sd of a change's per-seed effect (metric units; default 0.01, measured
    /// on the default target; 0 for the model without it).
    #[arg(long)]
    pub interaction_sd: Option<f64>,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The target git repository (default: the repository containing the current directory).
    #[arg(long, value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// Wall-clock budget for the whole session, e.g. `3m`, `8h`.
    #[arg(long, value_parser = parse_duration)]
    pub budget: Duration,
    /// Stop after this many decided changes.
    #[arg(long)]
    pub max_changes: Option<u32>,
    /// Proposer: `offline`, `openai` (any OpenAI-compatible server) or `anthropic`.
    #[arg(long)]
    pub agent: Option<String>,
    /// Model name passed to the provider.
    #[arg(long)]
    pub model: Option<String>,
    /// Base URL of the provider (e.g. a local vLLM or Ollama server).
    #[arg(long)]
    pub base_url: Option<String>,
    /// Changes evaluated at once, each run on its own executor slot (overrides `[executor]
    /// slots`; a resumed session keeps the number it started with unless given again).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
    /// Shared cargo target directory for every build (default: `<repo>/target`).
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
    /// Run builds and training without the OS sandbox (no Landlock, network allowed). Only the
    /// environment is still scrubbed. Recorded in the ledger and shown by `status`.
    #[arg(long)]
    pub no_sandbox: bool,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The target git repository (default: the repository containing the current directory).
    #[arg(long, value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// The reference commit (any revision: a branch, a tag, a hash, `HEAD~2`).
    pub a: String,
    /// The commit measured against A (the difference is B - A; the metric is minimized).
    pub b: String,
    /// The split both arms are evaluated on: `holdout` or `val`.
    #[arg(long, default_value = "holdout")]
    pub split: String,
    /// Seeds, each run on both commits.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(2..))]
    pub pairs: u32,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Shared cargo target directory for the builds (default: `<repo>/target`).
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
    /// Build and run without the OS sandbox (see `start --no-sandbox`).
    #[arg(long)]
    pub no_sandbox: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The target git repository (default: the repository containing the current directory).
    #[arg(long, value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// Check the existing agentloop.toml instead: inputs, build, a smoke run, two full runs
    /// (the metric and the seed), through the loop's own build and run path.
    #[arg(long)]
    pub check: bool,
    /// Shared build directory (CARGO_TARGET_DIR; default: as `start`).
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
    /// Check without the OS sandbox (see `start --no-sandbox`).
    #[arg(long)]
    pub no_sandbox: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The target git repository (default: the repository containing the current directory).
    #[arg(long, value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The target git repository (default: the repository containing the current directory).
    #[arg(long, value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// The change id (or a unique prefix) of an accepted change.
    pub change: String,
    /// Rebuild and re-measure without the OS sandbox (see `start --no-sandbox`).
    #[arg(long)]
    pub no_sandbox: bool,
}

impl Cli {
    /// `--repo` after the subcommand wins over `--repo` before it.
    pub fn repo(&self) -> Option<&std::path::Path> {
        let own = match &self.command {
            Command::Start(a) => a.repo.as_deref(),
            Command::Init(a) => a.repo.as_deref(),
            Command::Status(a) => a.repo.as_deref(),
            Command::Rollback(a) => a.repo.as_deref(),
            Command::Report(a) => a.repo.as_deref(),
            Command::Compare(a) => a.repo.as_deref(),
            Command::Ledger(_) | Command::Simulate(_) | Command::SandboxExec(_) => None,
        };
        own.or(self.repo.as_deref())
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 90s, 3m or 8h: {e}"))?;
    if d.is_zero() {
        return Err("the budget must be longer than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_parses_budget_and_options() {
        let cli = Cli::try_parse_from([
            "agentloop",
            "--repo",
            "/r",
            "start",
            "--budget",
            "3m",
            "--max-changes",
            "4",
            "--agent",
            "offline",
        ])
        .unwrap();
        assert_eq!(cli.repo, Some(PathBuf::from("/r")));
        match cli.command {
            Command::Start(a) => {
                assert_eq!(a.budget, Duration::from_secs(180));
                assert_eq!(a.max_changes, Some(4));
                assert_eq!(a.agent.as_deref(), Some("offline"));
                assert_eq!(a.workers, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn workers_must_be_a_positive_count() {
        let cli = Cli::try_parse_from(["agentloop", "start", "--budget", "1m", "--workers", "2"])
            .unwrap();
        assert!(matches!(
            cli.command,
            Command::Start(StartArgs {
                workers: Some(2),
                ..
            })
        ));
        let err = Cli::try_parse_from(["agentloop", "start", "--budget", "1m", "--workers", "0"])
            .unwrap_err();
        assert!(err.to_string().contains("--workers"), "{err}");
    }

    #[test]
    fn bad_budget_is_refused_with_the_value_named() {
        let err = Cli::try_parse_from(["agentloop", "start", "--budget", "soon"]).unwrap_err();
        assert!(err.to_string().contains("\"soon\""), "{err}");
        let err = Cli::try_parse_from(["agentloop", "start", "--budget", "0s"]).unwrap_err();
        assert!(err.to_string().contains("longer than zero"), "{err}");
    }

    #[test]
    fn repo_may_come_before_or_after_the_subcommand() {
        let cli = Cli::try_parse_from(["agentloop", "status", "--repo", "/a"]).unwrap();
        assert_eq!(cli.repo(), Some(std::path::Path::new("/a")));
        let cli = Cli::try_parse_from(["agentloop", "--repo", "/b", "status"]).unwrap();
        assert_eq!(cli.repo(), Some(std::path::Path::new("/b")));
        let cli = Cli::try_parse_from([
            "agentloop",
            "--repo",
            "/b",
            "ledger",
            "verify",
            "--repo",
            "/c",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Ledger(_)));
    }

    #[test]
    fn rollback_needs_a_change() {
        assert!(Cli::try_parse_from(["agentloop", "rollback"]).is_err());
        let cli = Cli::try_parse_from(["agentloop", "rollback", "c7f3"]).unwrap();
        assert!(
            matches!(cli.command, Command::Rollback(RollbackArgs { change, .. }) if change == "c7f3")
        );
    }
}
