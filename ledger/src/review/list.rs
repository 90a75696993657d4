//! `agentloop ledger list`: the table of changes, one line each (or their JSON).

use std::io::Write;

use super::style::{fmt_opt, fmt_p, short, Style};
use crate::{ChangeRow, ChangeStatus, Ledger, Result};

/// `agentloop ledger list`: one line per change (or a JSON array with `json`).
pub fn list(
    ledger: &Ledger,
    status: Option<ChangeStatus>,
    json: bool,
    style: Style,
    out: &mut dyn Write,
) -> Result<()> {
    let changes = ledger.changes(status)?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &changes)?;
        writeln!(out)?;
        return Ok(());
    }
    if changes.is_empty() {
        writeln!(
            out,
            "no changes recorded{}",
            status.map_or(String::new(), |s| format!(" with status {s}"))
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "{}",
        style.bold(&format!(
            "{:<9} {:<15} {:>10} {:>10} {:>9} {:>3} {:<8} {}",
            "CHANGE", "STATUS", "METRIC", "GAIN", "P", "N", "COMMIT", "DESCRIPTION"
        ))
    )?;
    for c in &changes {
        writeln!(out, "{}", list_line(c, style))?;
    }
    Ok(())
}

fn list_line(c: &ChangeRow, style: Style) -> String {
    format!(
        "{:<9} {} {:>10} {:>10} {:>9} {:>3} {:<8} {}",
        c.change_id,
        style.status(c.status),
        fmt_opt(c.mean_candidate, 5),
        c.mean_diff.map_or("-".to_string(), |d| format!("{d:+.5}")),
        fmt_p(c.p_value),
        c.n.map_or("-".to_string(), |n| n.to_string()),
        c.commit.as_deref().map_or("-", |s| short(s, 7)),
        short(
            c.description
                .as_deref()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or(""),
            60
        ),
    )
}
