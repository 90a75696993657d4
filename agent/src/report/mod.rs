//! Seeing the results: `agentloop status`, the live progress display and `agentloop report`,
//! all computed from the ledger alone.
//!
//! - [`summary`]: replays a session's events into a [`SessionSummary`] (the one computation).
//! - [`status`]: the compact view `status` prints, as text or JSON.
//! - [`chart`]: the metric-per-change chart as PNG and SVG (plotters, bundled font).
//! - [`html`]: the self-contained HTML report.

pub mod chart;
pub mod command;
pub mod html;
pub mod status;
pub mod summary;

use std::path::{Path, PathBuf};

use agentloop_ledger::{Ledger, LedgerError, VerifyOptions};

pub use status::Status;
pub use summary::{ChangeState, ChangeSummary, SessionSummary, SummaryError};

/// File names inside the report directory.
pub const HTML_FILE: &str = "report.html";
pub const PNG_FILE: &str = "chart.png";
pub const SVG_FILE: &str = "chart.svg";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Summary(#[from] SummaryError),
    #[error("verifying the ledger: {0}")]
    Verify(#[source] LedgerError),
    #[error(transparent)]
    Chart(#[from] chart::ChartError),
    #[error("writing the report to {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The files one report consists of.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    pub html: PathBuf,
    pub png: PathBuf,
    pub svg: PathBuf,
    /// Whether `ledger verify` passed (the report says so too).
    pub verified: bool,
}

/// Writes `report.html`, `chart.png` and `chart.svg` for `session` (default: the latest) into
/// `out_dir`, creating it. The ledger is verified with `verify` and the verdict shown.
pub fn generate(
    ledger: &Ledger,
    session: Option<&str>,
    out_dir: &Path,
    verify: &VerifyOptions<'_>,
) -> Result<ReportFiles, ReportError> {
    let summary = SessionSummary::load(ledger, session)?;
    let integrity = integrity(ledger, verify)?;
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Write { path, source }
    };
    std::fs::create_dir_all(out_dir).map_err(write_err(out_dir))?;
    let files = ReportFiles {
        html: out_dir.join(HTML_FILE),
        png: out_dir.join(PNG_FILE),
        svg: out_dir.join(SVG_FILE),
        verified: integrity.verified,
    };
    let svg = chart::render_svg(&summary)?;
    std::fs::write(&files.svg, &svg).map_err(write_err(&files.svg))?;
    chart::write_png(&summary, &files.png)?;
    let page = html::render(&summary, &svg, &integrity);
    std::fs::write(&files.html, page).map_err(write_err(&files.html))?;
    Ok(files)
}

fn integrity(ledger: &Ledger, options: &VerifyOptions<'_>) -> Result<html::Integrity, ReportError> {
    let report = ledger.verify_with(options).map_err(ReportError::Verify)?;
    let head = ledger.head().map_err(ReportError::Verify)?;
    Ok(html::Integrity {
        head_seq: head.as_ref().map(|h| h.seq),
        head_hash: head.map(|h| h.hash),
        verified: report.ok,
        events_checked: report.events_checked,
        problems: report.problems.iter().map(ToString::to_string).collect(),
    })
}
