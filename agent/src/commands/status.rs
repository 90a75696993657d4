//! `agentloop status [--json]`: where the current (or last) session stands, from the ledger.

use std::path::Path;

use agentloop_ledger::payload::DecisionOutcome;
use agentloop_ledger::Ledger;
use anyhow::Result;
use serde_json::{json, Value};

use crate::cli::StatusArgs;
use crate::orchestrator::history::{sessions, SessionHistory};
use crate::orchestrator::session::load;
use crate::orchestrator::workspace::Workspace;

pub fn run(repo: Option<&Path>, args: &StatusArgs) -> Result<i32> {
    let ws = Workspace::open(repo)?;
    let path = ws.ledger_path();
    if !path.exists() {
        println!(
            "no session yet in {} (run `agentloop start --budget 8h`)",
            ws.root.display()
        );
        return Ok(0);
    }
    let ledger = Ledger::open(&path)?;
    let all = ledger.events()?;
    let Some(session) = sessions(&all).last().cloned() else {
        println!("no session yet in {}", ws.root.display());
        return Ok(0);
    };
    let history = load(&ledger, &session)?;
    let report = summary(&history);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(0)
}

pub fn summary(h: &SessionHistory) -> Value {
    let state = if !h.ended {
        "running or killed"
    } else {
        h.ends.last().map(|e| e.reason.as_str()).unwrap_or("ended")
    };
    let best = h
        .calibrations
        .last()
        .and_then(|(_, c)| c.extra.get("noise"))
        .and_then(|n| n.get("baseline_mean"))
        .and_then(Value::as_f64);
    let current = h.in_flight().map(|c| {
        let stage = if c.decision.is_some() {
            "settle"
        } else if !c.runs.is_empty() {
            "runs"
        } else if !c.builds.is_empty() {
            "build"
        } else if !c.policies.is_empty() {
            "apply"
        } else {
            "propose"
        };
        json!({"change": c.id, "description": c.description(), "stage": stage})
    });
    // Where the wall clock went: training runs versus everything else the loop does.
    let training_s: f64 = h
        .session_runs
        .iter()
        .chain(h.changes.iter().flat_map(|c| c.runs.iter()))
        .filter_map(|r| r.wall_s)
        .sum();
    let build_s: f64 = h
        .changes
        .iter()
        .flat_map(|c| c.builds.iter())
        .filter_map(|b| b.duration_s)
        .sum();
    let overhead_share = (h.spent_s > 0.0).then(|| (1.0 - training_s / h.spent_s).max(0.0));
    let decisions_per_hour = (h.spent_s > 0.0).then(|| h.decided() as f64 * 3600.0 / h.spent_s);
    let overhead_s_per_decision =
        (h.decided() > 0).then(|| (h.spent_s - training_s).max(0.0) / h.decided() as f64);
    json!({
        "session": h.session,
        "training_s": training_s,
        "build_s": build_s,
        "overhead_share": overhead_share,
        "decisions_per_hour": decisions_per_hour,
        "overhead_s_per_decision": overhead_s_per_decision,
        "state": state,
        "trunk_branch": h.start.trunk_branch,
        "trunk_commit": h.trunk_commit,
        "budget_s": h.start.budget_s,
        "spent_s": h.spent_s,
        "left_s": (h.start.budget_s - h.spent_s).max(0.0),
        "changes": h.changes.len(),
        "accepted": h.count(DecisionOutcome::Accepted),
        "rejected": h.count(DecisionOutcome::Rejected),
        "crashed": h.count(DecisionOutcome::Crashed),
        "policy_rejected": h.count(DecisionOutcome::PolicyRejected),
        "build_failed": h.count(DecisionOutcome::BuildFailed),
        "rolled_back": h.changes.iter().filter(|c| c.rollback.is_some()).count(),
        "trunk_metric": best,
        "current": current,
    })
}

fn print_text(r: &Value) {
    let num = |k: &str| r[k].as_f64().unwrap_or(0.0);
    println!(
        "session   {} ({})",
        r["session"].as_str().unwrap_or("?"),
        r["state"].as_str().unwrap_or("?")
    );
    println!(
        "trunk     {} at {}",
        r["trunk_branch"].as_str().unwrap_or("?"),
        r["trunk_commit"].as_str().unwrap_or("?")
    );
    println!(
        "budget    {:.0}s used of {:.0}s ({:.0}s left)",
        num("spent_s"),
        num("budget_s"),
        num("left_s")
    );
    println!(
        "changes   {} proposed: {} accepted, {} rejected, {} crashed, {} policy-rejected, {} build-failed, {} rolled back",
        r["changes"], r["accepted"], r["rejected"], r["crashed"], r["policy_rejected"], r["build_failed"], r["rolled_back"]
    );
    if let (Some(o), Some(d)) = (
        r["overhead_share"].as_f64(),
        r["decisions_per_hour"].as_f64(),
    ) {
        println!(
            "time      {:.0}s training, {:.0}s building; loop overhead {:.1}% of wall time; {d:.1} decisions/hour",
            num("training_s"),
            num("build_s"),
            o * 100.0
        );
    }
    match r["trunk_metric"].as_f64() {
        Some(m) => println!("trunk     metric {m:.6} (calibrated mean)"),
        None => println!("trunk     not measured yet"),
    }
    if let Some(c) = r["current"].as_object() {
        println!(
            "current   {} ({}) at {}",
            c["change"].as_str().unwrap_or("?"),
            c["description"].as_str().unwrap_or(""),
            c["stage"].as_str().unwrap_or("?")
        );
    }
}
