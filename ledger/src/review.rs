//! The review commands behind `agentloop ledger list|show|verify|export`, writing text to any
//! `Write` so the CLI stays a thin wrapper and tests can read the output.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::Value;
use similar::TextDiff;

use crate::payload::Propose;
use crate::{
    ChangeRow, ChangeStatus, Event, EventKind, Ledger, Result, VerifyOptions, VerifyReport,
};

pub use crate::export::{export, import, Format};

/// ANSI colours, used only when the output is a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }
    fn green(self, text: &str) -> String {
        self.paint("32", text)
    }
    fn red(self, text: &str) -> String {
        self.paint("31", text)
    }
    fn cyan(self, text: &str) -> String {
        self.paint("36", text)
    }
    fn yellow(self, text: &str) -> String {
        self.paint("33", text)
    }

    fn status(self, status: ChangeStatus) -> String {
        let label = format!("{:<15}", status.label());
        match status {
            ChangeStatus::Accepted => self.green(&label),
            ChangeStatus::Rejected | ChangeStatus::Proposed => label,
            ChangeStatus::RolledBack => self.yellow(&label),
            _ => self.red(&label),
        }
    }
}

fn fmt_opt(v: Option<f64>, places: usize) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.places$}"))
}

fn fmt_p(p: Option<f64>) -> String {
    p.map_or("-".to_string(), |p| format!("{p:.2e}"))
}

fn short(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

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

/// The `test` of a greedy rule's decision (agentloop's `decision_record`): no statistical test.
pub const KEEP_IF_LOWER: &str = "keep_if_lower";

fn write_decisions(ledger: &Ledger, id: &str, style: Style, out: &mut dyn Write) -> Result<()> {
    for d in ledger.decisions(id)? {
        writeln!(out, "\n{} (seq {})", style.bold("Decision"), d.seq)?;
        writeln!(
            out,
            "  test {} at stage {}, n = {}, rule {}",
            d.test.as_deref().unwrap_or("-"),
            d.stage.as_deref().unwrap_or("-"),
            d.n.map_or("-".into(), |n| n.to_string()),
            d.rule_version
        )?;
        if d.test.as_deref() == Some(KEEP_IF_LOWER) {
            // The greedy rules: one run against the trunk's value, nothing that bounds errors.
            writeln!(
                out,
                "  {}: kept if its one run is below the trunk's last recorded value",
                style.red("no statistical test")
            )?;
        }
        writeln!(
            out,
            "  mean baseline {}  candidate {}  gain {}  sd(gain) {}",
            fmt_opt(d.mean_baseline, 5),
            fmt_opt(d.mean_candidate, 5),
            fmt_opt(d.mean_diff, 5),
            fmt_opt(d.sd_diff, 5)
        )?;
        writeln!(
            out,
            "  CI [{}, {}]  p = {}  min effect {}  thresholds {}",
            fmt_opt(d.ci_low, 5),
            fmt_opt(d.ci_high, 5),
            fmt_p(d.p_value),
            fmt_opt(d.min_effect, 5),
            d.thresholds
        )?;
        let outcome = match d.outcome.as_str() {
            "accepted" => style.green(&d.outcome),
            "rejected" => d.outcome.clone(),
            _ => style.red(&d.outcome),
        };
        writeln!(
            out,
            "  outcome {outcome}{}",
            d.reason
                .as_deref()
                .map_or(String::new(), |r| format!(": {r}"))
        )?;
        if let Some(event) = ledger.event(d.seq)? {
            write_guards(&event.payload, style, out)?;
        }
    }
    Ok(())
}

/// The decision's guard results (`guards` of its payload), one line each.
fn write_guards(payload: &serde_json::Value, style: Style, out: &mut dyn Write) -> Result<()> {
    let Some(guards) = payload.get("guards").and_then(|g| g.as_array()) else {
        return Ok(());
    };
    for g in guards {
        let pass = g.get("pass").and_then(|p| p.as_bool()) == Some(true);
        let verdict = if pass {
            style.green("pass")
        } else {
            style.red("FAIL")
        };
        writeln!(
            out,
            "  guard {} {verdict}: {}",
            g.get("metric").and_then(|m| m.as_str()).unwrap_or("?"),
            g.get("reason").and_then(|m| m.as_str()).unwrap_or("")
        )?;
    }
    Ok(())
}

/// A one-line description of an event for timelines.
pub fn summary(e: &Event) -> String {
    let s = |key: &str| {
        e.payload
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let n = |key: &str| e.payload.get(key).map_or(String::new(), |v| v.to_string());
    let text = match e.kind {
        EventKind::Propose => format!("{} (attempt {})", s("description"), n("attempt")),
        EventKind::Policy => format!("{} {} {}", s("outcome"), s("code"), s("message")),
        EventKind::Build => format!("ok={} {}", n("ok"), short(&s("commit"), 10)),
        EventKind::RunResult => format!(
            "{} {} seed {} -> {} {}",
            s("arm"),
            s("stage"),
            n("seed"),
            s("exit_status"),
            e.payload
                .get("metrics")
                .and_then(|m| m.get(
                    e.payload
                        .get("metric")
                        .and_then(Value::as_str)
                        .unwrap_or("val_bpb")
                ))
                .map_or(String::new(), |v| v.to_string())
        ),
        EventKind::Decision => format!("{} p={} {}", s("outcome"), n("p_value"), s("reason")),
        EventKind::Merge => format!("{} into {}", short(&s("commit"), 10), s("trunk_branch")),
        EventKind::Discard => s("kept_ref"),
        EventKind::Rollback => format!(
            "reverted by {}: {}",
            short(&s("revert_commit"), 10),
            s("reason")
        ),
        EventKind::Error => format!("{}: {}", s("stage"), s("message")),
        EventKind::Compare => format!(
            "{} vs {} on {}: B-A {} [{}, {}] p={} ({} pairs)",
            s("a_rev"),
            s("b_rev"),
            s("split"),
            n("mean_diff"),
            n("ci_low"),
            n("ci_high"),
            n("p_value"),
            n("n")
        ),
        _ => String::new(),
    };
    short(text.trim(), 100).to_string()
}

/// The patch as a coloured unified diff. Unified diffs are coloured as they are;
/// search/replace blocks are turned into unified diffs with `similar`.
pub fn render_patch(patch: &str, patch_format: &str, style: Style) -> String {
    let looks_unified = patch_format.eq_ignore_ascii_case("unified")
        || patch.starts_with("--- ")
        || patch.starts_with("diff --git");
    let unified = if looks_unified {
        patch.to_string()
    } else {
        match search_replace_to_unified(patch) {
            Some(diff) => diff,
            None => patch.to_string(),
        }
    };
    let mut out = String::new();
    for line in unified.lines() {
        let painted = if line.starts_with("+++") || line.starts_with("---") {
            style.bold(line)
        } else if line.starts_with("@@") {
            style.cyan(line)
        } else if line.starts_with('+') {
            style.green(line)
        } else if line.starts_with('-') {
            style.red(line)
        } else {
            line.to_string()
        };
        out.push_str("  ");
        out.push_str(&painted);
        out.push('\n');
    }
    out
}

/// Converts aider-style blocks (`path`, `<<<<<<< SEARCH`, old, `=======`, new,
/// `>>>>>>> REPLACE`) into a unified diff; `None` if the text has no such block.
fn search_replace_to_unified(patch: &str) -> Option<String> {
    enum State {
        Outside,
        Search,
        Replace,
    }
    let mut state = State::Outside;
    let mut path = String::from("file");
    let mut last_plain = String::new();
    let (mut old, mut new) = (String::new(), String::new());
    let mut out = String::new();
    let mut blocks = 0;
    for line in patch.lines() {
        let marker = line.trim_end();
        match state {
            State::Outside if marker.starts_with("<<<<<<<") && marker.ends_with("SEARCH") => {
                if !last_plain.is_empty() {
                    path = last_plain.trim_matches('`').to_string();
                }
                old.clear();
                new.clear();
                state = State::Search;
            }
            State::Outside => {
                if !marker.trim().is_empty() && !marker.starts_with("```") {
                    last_plain = marker.trim().to_string();
                }
            }
            State::Search if marker == "=======" => state = State::Replace,
            State::Search => {
                old.push_str(line);
                old.push('\n');
            }
            State::Replace if marker.starts_with(">>>>>>>") && marker.ends_with("REPLACE") => {
                let diff = TextDiff::from_lines(&old, &new);
                out.push_str(
                    &diff
                        .unified_diff()
                        .context_radius(3)
                        .header(&format!("a/{path}"), &format!("b/{path}"))
                        .to_string(),
                );
                blocks += 1;
                state = State::Outside;
            }
            State::Replace => {
                new.push_str(line);
                new.push('\n');
            }
        }
    }
    (blocks > 0).then_some(out)
}

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
