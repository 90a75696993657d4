//! Whole-state consistency checks after a session: ledger, git trunk, branches, worktrees and
//! the user's checkout must all agree.

use std::collections::BTreeMap;

use agentloop::report::SessionSummary;
use agentloop_ledger::payload::{Decision, DecisionOutcome, Merge};
use agentloop_ledger::state::SessionState;
use agentloop_ledger::{Event, EventKind};
use anyhow::{bail, ensure, Context, Result};

use crate::TargetRepo;

#[derive(Debug)]
pub struct Summary {
    pub session: String,
    /// Decisions that count (a change superseded by its re-test on a newer trunk is not here).
    pub decisions: BTreeMap<String, Decision>,
    /// Accepted change ids, in merge order.
    pub merged: Vec<String>,
    /// Changes accepted on a trunk that moved before they merged, and their re-tests.
    pub superseded: BTreeMap<String, String>,
}

/// Checks everything a resumed or finished session promises; returns what was decided.
pub fn consistent(repo: &TargetRepo, user_branch: &str) -> Result<Summary> {
    let ledger = repo.ledger()?;
    let report = ledger.verify()?;
    ensure!(report.ok, "ledger does not verify: {report:?}");
    let events = ledger.events()?;
    let sessions: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::SessionStart)
        .collect();
    ensure!(
        sessions.len() == 1,
        "expected one session, found {}",
        sessions.len()
    );
    let session = sessions[0].session.clone();
    let base = sessions[0].payload["base_commit"]
        .as_str()
        .context("base_commit")?
        .to_string();

    let mut decisions = BTreeMap::new();
    let mut settled: BTreeMap<String, usize> = BTreeMap::new();
    let mut merged = Vec::new();
    let mut superseded = BTreeMap::new();
    let mut trunk = base.clone();
    for e in &events {
        let change = e.change.clone().unwrap_or_default();
        match e.kind {
            EventKind::Decision => {
                let d: Decision = serde_json::from_value(e.payload.clone())?;
                if decisions.insert(change.clone(), d).is_some() {
                    bail!("change {change} was decided twice");
                }
            }
            EventKind::Merge => {
                let m: Merge = serde_json::from_value(e.payload.clone())?;
                *settled.entry(change.clone()).or_default() += 1;
                merged.push(change.clone());
                trunk = m.commit;
            }
            EventKind::Discard => {
                *settled.entry(change.clone()).or_default() += 1;
                if let Some(next) = e.payload["superseded_by"].as_str() {
                    superseded.insert(change.clone(), next.to_string());
                }
            }
            EventKind::Rollback => {
                trunk = e.payload["revert_commit"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            }
            _ => {}
        }
    }
    for (old, new) in &superseded {
        ensure!(
            events.iter().any(|e| e.kind == EventKind::Propose
                && e.change.as_deref() == Some(new.as_str())
                && e.payload["retest_of"].as_str() == Some(old.as_str())),
            "change {old} superseded by {new}, but {new} is no re-test of it"
        );
        ensure!(!merged.contains(old), "superseded change {old} was merged");
    }
    decisions.retain(|c, _| !superseded.contains_key(c));
    for (change, d) in &decisions {
        let n = settled.get(change).copied().unwrap_or(0);
        ensure!(
            n == 1,
            "change {change} ({:?}) was settled {n} times",
            d.outcome
        );
        let is_merged = merged.contains(change);
        ensure!(
            is_merged == (d.outcome == DecisionOutcome::Accepted),
            "change {change}: outcome {:?} but merged = {is_merged}",
            d.outcome
        );
    }
    three_readers_agree(&ledger, &session)?;
    // The trunk ref is where the ledger says, and holds exactly the accepted changes, in order.
    let tip = repo.git(&["rev-parse", &format!("refs/heads/agentloop/{session}")])?;
    ensure!(
        tip.trim() == trunk,
        "trunk ref {} but ledger says {trunk}",
        tip.trim()
    );
    let log = repo.git(&[
        "log",
        "--format=%H %(trailers:key=Change-Id,valueonly,separator=)",
        &format!("{base}..{trunk}"),
    ])?;
    let on_trunk: Vec<String> = log
        .lines()
        .rev()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    let rolled_back = events
        .iter()
        .filter(|e| e.kind == EventKind::Rollback)
        .count();
    if rolled_back == 0 {
        ensure!(
            on_trunk == merged,
            "trunk holds {on_trunk:?}, ledger merged {merged:?}"
        );
    }
    // No stray worktree, the user's checkout untouched.
    let worktrees = repo.git(&["worktree", "list", "--porcelain"])?;
    let count = worktrees
        .lines()
        .filter(|l| l.starts_with("worktree "))
        .count();
    ensure!(count == 1, "stray worktrees left:\n{worktrees}");
    let status = repo.git(&["status", "--porcelain"])?;
    ensure!(
        status.is_empty(),
        "the user's working tree changed:\n{status}"
    );
    let head = repo.git(&["symbolic-ref", "HEAD"])?;
    ensure!(
        head.trim() == format!("refs/heads/{user_branch}"),
        "HEAD moved to {head}"
    );
    Ok(Summary {
        session,
        decisions,
        merged,
        superseded,
    })
}

/// The three readers of the events agree on every change: the derived tables behind
/// `ledger list`, the fold the loop and `status` use, and the report's summary.
fn three_readers_agree(ledger: &agentloop_ledger::Ledger, session: &str) -> Result<()> {
    let fold = SessionState::load(ledger, session)?;
    let views: BTreeMap<String, String> = ledger
        .changes(None)?
        .into_iter()
        .filter(|c| c.session == session)
        .map(|c| (c.change_id, c.status.as_str().to_string()))
        .collect();
    let summary = SessionSummary::load(ledger, Some(session))?;
    let report: BTreeMap<String, String> = summary
        .changes
        .iter()
        // The report names an undecided change "in_flight"; the table and the fold "proposed".
        .map(|c| match c.state.as_str() {
            "in_flight" => (c.id.clone(), "proposed".to_string()),
            other => (c.id.clone(), other.to_string()),
        })
        .collect();
    let folded: BTreeMap<String, String> = fold
        .changes
        .iter()
        .map(|c| (c.id.clone(), c.status().as_str().to_string()))
        .collect();
    ensure!(
        views == folded && report == folded,
        "the readers disagree on the changes' status:\n ledger list: {views:?}\n fold:        {folded:?}\n report:      {report:?}"
    );
    Ok(())
}
