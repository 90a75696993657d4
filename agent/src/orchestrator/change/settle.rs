//! Step 4, settle: record the decision, then merge (accepted) or discard (anything else), each
//! recorded before git is touched; and superseding a change whose trunk moved.

use agentloop_ledger::payload::{Decision, DecisionOutcome, Discard, Merge};
use agentloop_ledger::state::ChangeRecord;
use anyhow::{Context as _, Result};
use git2::Oid;
use serde_json::{json, Map};

use super::{one_line, ChangeRunner, ChangeStage};
use crate::git::{change_branch, kept_ref, trunk_branch};
use crate::orchestrator::trunk::Ready;

/// Merges are decided one at a time: "is the trunk still the one this change was tested on?"
/// and moving the trunk must not interleave with another worker's merge.
static MERGE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl<'a> ChangeRunner<'a> {
    /// Records a decision just made. Checked right before, so a decision is never made twice.
    pub(super) fn record_decision(&mut self, id: &str, decision: &Decision) -> Result<()> {
        self.stage = ChangeStage::Decision;
        let again = self.rec.state()?;
        if again.change(id).and_then(|c| c.decision.as_ref()).is_none() {
            self.rec.append(Some(id), decision)?;
        }
        Ok(())
    }

    /// Merge (accepted) or discard (anything else), each recorded before git is touched.
    pub(super) fn settle(
        &mut self,
        ready: &Ready,
        change: &ChangeRecord,
        decision: &Decision,
    ) -> Result<()> {
        let id = change.id.as_str();
        let git = &self.ws.git;
        let branch = change_branch(self.session, id);
        self.stage = ChangeStage::Settle;
        let _one_merge_at_a_time = MERGE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let latest = self.rec.state()?;
        let now = latest.change(id).cloned().unwrap_or_default();
        if now.superseded_by().is_some() {
            git.reject_branch(&branch)?;
            git.remove_worktree(id)?;
            return Ok(());
        }
        if decision.outcome == DecisionOutcome::Accepted {
            let trunk = trunk_branch(self.session);
            let merge_commit = match &now.merge {
                Some((_, m)) => Oid::from_str(&m.commit)?,
                None if latest.trunk_commit != ready.commit.to_string() => {
                    // Accepted against a trunk that has moved on: never merged blind.
                    let merged_meanwhile: Vec<&str> = latest
                        .changes
                        .iter()
                        .filter(
                            |c| matches!(&c.merge, Some((_, m)) if m.commit == latest.trunk_commit),
                        )
                        .map(|c| c.id.as_str())
                        .collect();
                    let why = format!(
                        "accepted against trunk {}, but the trunk moved to {} ({}) meanwhile; re-tested on the new trunk",
                        crate::git::oid_short(ready.commit),
                        &latest.trunk_commit[..10],
                        if merged_meanwhile.is_empty() {
                            "a rollback".to_string()
                        } else {
                            format!("change {} merged", merged_meanwhile.join(", "))
                        }
                    );
                    let new_trunk = Oid::from_str(&latest.trunk_commit)?;
                    self.record_supersede(&now, new_trunk, &why)?;
                    git.reject_branch(&branch)?;
                    git.remove_worktree(id)?;
                    return Ok(());
                }
                None => {
                    let candidate = git.branch_tip(&branch)?.with_context(|| {
                        format!("the accepted change's branch {branch} is gone")
                    })?;
                    let head = self.rec.head_trailer()?;
                    let message = format!(
                        "{}\n\n{}\n\nChange-Id: {id}\n{head}",
                        one_line(&now.description()),
                        decision.reason.clone().unwrap_or_default()
                    );
                    let m = git.commit_with_tree_of(ready.commit, candidate, &message)?;
                    self.rec.append(
                        Some(id),
                        &Merge {
                            commit: m.to_string(),
                            trunk_branch: trunk.clone(),
                            ledger_head: Some(
                                head.trim_start_matches("Ledger-Head:").trim().to_string(),
                            ),
                            extra: Map::new(),
                        },
                    )?;
                    m
                }
            };
            git.set_branch(&trunk, merge_commit, "agentloop: merge accepted change")?;
        } else {
            if now.discard.is_none() {
                let exists = git.branch_tip(&branch)?.is_some();
                self.rec.append(
                    Some(id),
                    &Discard {
                        kept_ref: exists.then(|| kept_ref(self.session, id)),
                        superseded_by: None,
                        extra: Map::new(),
                    },
                )?;
            }
            git.reject_branch(&branch)?;
        }
        git.remove_worktree(id)?;
        Ok(())
    }

    /// Discards the change in favour of a re-test on the trunk `ready` holds.
    pub(super) fn supersede(&mut self, change: &ChangeRecord, why: &str) -> Result<()> {
        let _one_merge_at_a_time = MERGE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let latest = self.rec.state()?;
        let now = latest.change(&change.id).cloned().unwrap_or_default();
        if now.superseded_by().is_none() {
            let trunk = Oid::from_str(&latest.trunk_commit)?;
            self.record_supersede(&now, trunk, why)?;
        }
        let git = &self.ws.git;
        git.reject_branch(&change_branch(self.session, &change.id))?;
        git.remove_worktree(&change.id)?;
        Ok(())
    }

    /// One batch: the change's `discard` (naming its successor) and the successor's `propose`
    /// (the same patch, on `trunk`), so a kill leaves both or neither.
    fn record_supersede(&self, change: &ChangeRecord, trunk: Oid, why: &str) -> Result<()> {
        let id = change.id.as_str();
        let proposal = change
            .proposals
            .last()
            .with_context(|| format!("change {id} has no proposal to re-test"))?;
        let successor = self.rec.ledger.allocate_change_id()?;
        let mut retest = proposal.clone();
        retest.parent_commit = Some(trunk.to_string());
        retest.attempt = Some(1);
        // The reply was paid for once, by the original change.
        retest.prompt_tokens = None;
        retest.completion_tokens = None;
        retest.cost_usd = None;
        retest.extra.insert("request".into(), json!("retest"));
        retest.retest_of = Some(id.to_string());
        let exists = self
            .ws
            .git
            .branch_tip(&change_branch(self.session, id))?
            .is_some();
        let mut extra = Map::new();
        extra.insert("reason".into(), json!(why));
        let discard = Discard {
            kept_ref: exists.then(|| kept_ref(self.session, id)),
            superseded_by: Some(successor.clone()),
            extra,
        };
        self.rec.append_batch(vec![
            self.rec.event(Some(id), &discard)?,
            self.rec.event(Some(&successor), &retest)?,
        ])?;
        tracing::info!("change {id} superseded by its re-test {successor}: {why}");
        Ok(())
    }
}
