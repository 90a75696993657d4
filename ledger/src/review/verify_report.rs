//! `agentloop ledger verify`: the verification report, written for people.

use std::io::Write;

use crate::{Ledger, Result, VerifyOptions, VerifyReport};

/// `agentloop ledger verify`: writes the report; returns whether the ledger verified.
pub fn verify(ledger: &Ledger, options: &VerifyOptions<'_>, out: &mut dyn Write) -> Result<bool> {
    let report = ledger.verify_with(options)?;
    write_report(&report, options, out)?;
    Ok(report.ok)
}

/// Writes a verification report for people: counts, head, and every problem.
pub fn write_report(
    report: &VerifyReport,
    options: &VerifyOptions<'_>,
    out: &mut dyn Write,
) -> Result<()> {
    let head = report
        .head
        .as_ref()
        .map_or("empty".to_string(), |h| format!("{}:{}", h.seq, h.hash));
    writeln!(out, "events checked   {}", report.events_checked)?;
    writeln!(out, "chain head       {head}")?;
    if options.repo.is_some() {
        writeln!(out, "git trailers     {}", report.trailers_checked)?;
        writeln!(out, "head ref values  {}", report.ref_anchors_checked)?;
    }
    if options.recompute.is_some() {
        writeln!(out, "recomputed       {}", report.recomputed)?;
    }
    if report.ok {
        writeln!(out, "OK: the ledger verifies")?;
    } else {
        writeln!(
            out,
            "FAILED: {} problem(s){}",
            report.problems.len(),
            report
                .first_bad_seq
                .map_or(String::new(), |s| format!(", first bad seq {s}"))
        )?;
        for p in &report.problems {
            writeln!(out, "  {p}")?;
        }
    }
    Ok(())
}
