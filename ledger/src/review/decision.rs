//! A change's decisions as `show` prints them: the test, its statistics, outcome and guards.

use std::io::Write;

use super::style::{fmt_opt, fmt_p, Style};
use crate::{Ledger, Result};

/// The `test` of a greedy rule's decision (agentloop's `decision_record`): no statistical test.
pub const KEEP_IF_LOWER: &str = "keep_if_lower";

pub(super) fn write_decisions(
    ledger: &Ledger,
    id: &str,
    style: Style,
    out: &mut dyn Write,
) -> Result<()> {
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
