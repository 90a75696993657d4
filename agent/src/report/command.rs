//! The `report` and `status` subcommands' logic, ready for the CLI to call: arguments in,
//! text out, exit code back.

use std::io::Write;
use std::path::{Path, PathBuf};

use agentloop_ledger::{Ledger, VerifyOptions};
use anyhow::{Context, Result};
use clap::Args;

use super::status::{self, Status};
use super::summary::{latest_session, SessionSummary, SummaryError};

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The target git repository (default: the repository containing the current directory).
    #[arg(long, value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// Directory for report.html, chart.png and chart.svg
    /// (default: `<repo>/.agentloop/reports/<session>`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The session to report on (default: the latest).
    #[arg(long)]
    pub session: Option<String>,
}

/// `agentloop report`: writes the report and prints where. Exit 0 even when `ledger verify`
/// failed: the report says so in red, and the user may need exactly that report.
pub fn run_report(
    args: &ReportArgs,
    repo_root: &Path,
    ledger_path: &Path,
    out: &mut dyn Write,
) -> Result<i32> {
    let ledger = open_existing(ledger_path)?;
    let session = match &args.session {
        Some(s) => s.clone(),
        None => latest_session(&ledger)?
            .context("the ledger has no session yet; run `agentloop start --budget 8h` first")?,
    };
    let dir = args.out.clone().unwrap_or_else(|| {
        ledger_path
            .parent()
            .unwrap_or(repo_root)
            .join("reports")
            .join(&session)
    });
    let verify = VerifyOptions {
        repo: Some(repo_root),
        recompute: None,
        check_views: true,
    };
    let files = super::generate(&ledger, Some(&session), &dir, &verify)
        .with_context(|| format!("writing the report of session {session}"))?;
    writeln!(out, "report: {}", files.html.display())?;
    writeln!(
        out,
        "charts: {} and {}",
        files.png.display(),
        files.svg.display()
    )?;
    if !files.verified {
        writeln!(
            out,
            "warning: `agentloop ledger verify` failed; the report lists the problems"
        )?;
    }
    Ok(0)
}

/// `agentloop status [--json]` for the latest session (or `session`).
pub fn run_status(
    ledger_path: &Path,
    session: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> Result<i32> {
    if !ledger_path.exists() {
        writeln!(
            out,
            "no session yet (no ledger at {}); run `agentloop start --budget 8h`",
            ledger_path.display()
        )?;
        return Ok(0);
    }
    let ledger = open_existing(ledger_path)?;
    let summary = match SessionSummary::load(&ledger, session) {
        Err(SummaryError::NoSession) => {
            writeln!(out, "no session yet in {}", ledger_path.display())?;
            return Ok(0);
        }
        other => other?,
    };
    let st = Status::of(&summary);
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&st)?)?;
    } else {
        write!(out, "{}", status::text(&st))?;
    }
    Ok(0)
}

/// Opening a path that does not exist would create an empty ledger; refuse instead.
fn open_existing(path: &Path) -> Result<Ledger> {
    anyhow::ensure!(
        path.exists(),
        "no ledger at {} (has `agentloop start` run in this repository?)",
        path.display()
    );
    Ledger::open(path).with_context(|| format!("opening the ledger {}", path.display()))
}
