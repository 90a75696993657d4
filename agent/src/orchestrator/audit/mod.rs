//! Holdout audits, scheduled by the loop: every `[decision.audit] every_merges` merges, the
//! trunk is run against the last audited commit on the sealed holdout split with fresh paired
//! seeds. A cumulative gain that does not hold up is flagged and, by policy, bisected over the
//! merges since the reference (more holdout runs) and the first bad change is rolled back.
//!
//! Like every step of the loop, an audit first reads its own record: runs are reused by commit
//! and seed, bisection probes by index, and the main `audit` event marks the merges it covered,
//! so a resumed session neither repeats a recorded run nor audits the same merges twice.

mod run;
mod schedule;
#[cfg(test)]
mod tests;

use agentloop_ledger::payload::Audit;
use anyhow::Result;

use super::trunk::Trunk;
use agentloop_ledger::state::SessionState;
pub use run::remove_worktrees;
use run::{audit, resolve};
pub use schedule::pending;

pub const SPLIT: &str = "holdout";
/// Worktrees (and their branches `agentloop/changes/_<name>`) the audit runs in.
const REFERENCE_WORKTREE: &str = "audit-reference";
const AUDITED_WORKTREE: &str = "audit-trunk";

/// What `run_if_due` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditStep {
    NotDue,
    /// An audit (or its bisection and rollback) was recorded: reload the history.
    Done,
    /// The loop was stopped mid-audit; the recorded runs are reused on resume.
    Stopped,
}

/// A merge an audit covers: the change, its trunk commit and the gain its decision claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub change: String,
    pub commit: String,
    pub claimed_gain: f64,
}

/// What the ledger says is next for audits.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    /// Fewer merges than `every_merges` since the last audit (or audits are off).
    NotDue { merges: usize },
    /// Audit `number` is due: the trunk against `reference`, covering `merges`.
    Start {
        number: u64,
        reference: String,
        merges: Vec<Merged>,
    },
    /// Audit `number` was flagged and its bisection / rollback is not finished.
    Resolve {
        number: u64,
        audit_seq: i64,
        audit: Box<Audit>,
        merges: Vec<Merged>,
    },
}

/// Runs the audit that is due, or finishes a flagged one; called at the top of each
/// iteration of the session loop, before the trunk is made ready for the next change.
pub fn run_if_due(trunk: &Trunk, history: &SessionState) -> Result<AuditStep> {
    if history.in_flight().is_some() {
        // A change proposed against the current trunk finishes first.
        return Ok(AuditStep::NotDue);
    }
    let rule = &trunk.target.decision.audit;
    let step = match pending(history, rule) {
        Pending::NotDue { .. } => return Ok(AuditStep::NotDue),
        Pending::Start {
            number,
            reference,
            merges,
        } => audit(trunk, history, rule, number, &reference, &merges)?,
        Pending::Resolve {
            number,
            audit_seq,
            audit,
            merges,
        } => resolve(trunk, history, rule, number, audit_seq, &audit, &merges)?,
    };
    if step == AuditStep::Done {
        remove_worktrees(trunk.ws)?;
    }
    Ok(step)
}
