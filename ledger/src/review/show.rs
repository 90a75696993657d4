//! `agentloop ledger show`: one change in full: its proposal, patch, per-seed runs and timeline.

use std::collections::BTreeMap;
use std::io::Write;

use super::decision::write_decisions;
use super::patch::render_patch;
use super::style::{fmt_opt, Style};
use super::timeline::summary;
use crate::payload::Propose;
use crate::{ChangeStatus, EventKind, Ledger, Result};

/// `agentloop ledger show <id>`: everything a reviewer needs about one change.
pub fn show(ledger: &Ledger, prefix: &str, style: Style, out: &mut dyn Write) -> Result<()> {
    let id = ledger.resolve_change(prefix)?;
    let events = ledger.events_for_change(&id)?;
    let change = ledger.change(&id)?;
    let status = change.as_ref().map_or(ChangeStatus::Proposed, |c| c.status);
    writeln!(
        out,
        "{} {}  [{}]",
        style.bold("change"),
        style.bold(&id),
        style.status(status).trim_end()
    )?;
    if let Some(c) = &change {
        writeln!(out, "session      {}", c.session)?;
        writeln!(
            out,
            "description  {}",
            c.description.as_deref().unwrap_or("-")
        )?;
        if let Some(parent) = &c.parent_commit {
            writeln!(out, "parent       {parent}")?;
        }
        if let Some(commit) = &c.commit {
            writeln!(out, "commit       {commit}")?;
        }
        if let Some(kept) = &c.kept_ref {
            writeln!(out, "kept at      {kept}")?;
        }
    }

    // The latest proposal is the one that was built and measured (earlier ones were fix attempts).
    let proposal = events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::Propose)
        .and_then(|e| e.payload_as::<Propose>().ok());
    if let Some(p) = &proposal {
        writeln!(
            out,
            "model        {}{}",
            p.model.as_deref().unwrap_or("-"),
            p.provider
                .as_deref()
                .map_or(String::new(), |pr| format!(" via {pr}"))
        )?;
        writeln!(
            out,
            "tokens       {} prompt + {} completion{}",
            p.prompt_tokens.map_or("-".into(), |t| t.to_string()),
            p.completion_tokens.map_or("-".into(), |t| t.to_string()),
            p.cost_usd.map_or(String::new(), |c| format!(" (${c:.4})"))
        )?;
        if let Some(h) = p
            .prompt_template_sha256
            .as_deref()
            .filter(|h| !h.is_empty())
        {
            writeln!(out, "prompt sha   {h}")?;
        }
        writeln!(out, "\n{}", style.bold("Rationale"))?;
        for line in p.rationale.lines() {
            writeln!(out, "  {line}")?;
        }
        writeln!(out, "\n{} ({})", style.bold("Patch"), p.patch_format)?;
        out.write_all(render_patch(&p.patch, &p.patch_format, style).as_bytes())?;
    }

    write_runs(ledger, &id, style, out)?;
    write_decisions(ledger, &id, style, out)?;

    writeln!(out, "\n{}", style.bold("Timeline"))?;
    for e in &events {
        writeln!(
            out,
            "  {:>6}  {}  {:<12} {}",
            e.seq,
            e.ts,
            e.kind.as_str(),
            summary(e)
        )?;
    }
    Ok(())
}

fn write_runs(ledger: &Ledger, id: &str, style: Style, out: &mut dyn Write) -> Result<()> {
    let runs = ledger.runs(Some(id))?;
    if runs.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\n{} ({})",
        style.bold("Runs per seed"),
        runs[0].metric
    )?;
    writeln!(
        out,
        "  {:<10} {:>20} {:>12} {:>12} {:>10}",
        "stage", "seed", "baseline", "candidate", "gain"
    )?;
    // Pair the arms on (stage, seed): that is how the test compares them. The gain is
    // baseline minus candidate, the sign the decision's mean_diff uses (positive = better).
    let mut order: Vec<(String, i64)> = Vec::new();
    let mut cells: BTreeMap<(String, i64), [Option<String>; 2]> = BTreeMap::new();
    let mut values: BTreeMap<(String, i64), [Option<f64>; 2]> = BTreeMap::new();
    for r in &runs {
        let key = (r.stage.clone(), r.seed);
        if !cells.contains_key(&key) {
            order.push(key.clone());
        }
        let arm = usize::from(r.arm == "candidate");
        let cell = if r.exit_status == "ok" {
            fmt_opt(r.metric_value, 5)
        } else {
            r.exit_status.clone()
        };
        cells.entry(key.clone()).or_default()[arm] = Some(cell);
        values.entry(key).or_default()[arm] = r.metric_value.filter(|_| r.exit_status == "ok");
    }
    for key in order {
        let c = &cells[&key];
        let v = values[&key];
        let gain = match (v[0], v[1]) {
            (Some(b), Some(c)) => format!("{:+.5}", b - c),
            _ => "-".to_string(),
        };
        writeln!(
            out,
            "  {:<10} {:>20} {:>12} {:>12} {:>10}",
            key.0,
            // Seeds are stored as the bit pattern of a u64.
            key.1 as u64,
            c[0].as_deref().unwrap_or("-"),
            c[1].as_deref().unwrap_or("-"),
            gain
        )?;
    }
    Ok(())
}
