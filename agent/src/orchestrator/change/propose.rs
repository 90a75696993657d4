//! Step 1, propose: ask the proposer for a patch (or reuse its recorded reply) and apply the
//! text to the trunk's files. A patch that does not apply is asked for once more.

use agentloop_ledger::payload::{DecisionOutcome, ErrorEvent, Propose};
use agentloop_ledger::state::{ChangeRecord, SessionState};
use anyhow::Result;
use git2::Oid;
use serde_json::{json, Map, Value};

use super::decision_record::simple_decision;
use super::{decided, ChangeEnd, ChangeRunner, ChangeStage, Next, Step, Walk};
use crate::orchestrator::pause::{self, LoopConfig};
use crate::orchestrator::proposals::{Ask, Context, HistoryItem, ProviderFailure, Reply};
use crate::orchestrator::trunk::Ready;

/// What asking the proposer came to.
enum Asked {
    /// A reply, or `None` when the proposer has nothing left.
    Answer(Option<Box<Reply>>),
    /// The loop was stopped while waiting for the provider.
    Stopped,
}

impl<'a> ChangeRunner<'a> {
    /// Asks for (or reuses) the next proposal and applies it: `Build` with its edits, or
    /// `Propose` again with a retry request, or the decision that it cannot be applied.
    pub(super) fn propose(
        &mut self,
        ready: &Ready,
        change: &ChangeRecord,
        walk: &mut Walk,
    ) -> Result<Next> {
        let id = change.id.as_str();
        let git = &self.ws.git;
        let base = ready.commit;
        walk.attempt += 1;
        self.stage = ChangeStage::Propose;
        let proposal = match change.proposals.get(walk.cur.proposals) {
            Some(p) => p.clone(),
            None => {
                if self.stop.is_stopped() {
                    return Ok(Next::End(ChangeEnd::Stopped));
                }
                let ctx = self.context(id, ready, base, walk.ask.clone())?;
                let Some(reply) = (match self.ask_until_answered(id, &ctx)? {
                    Asked::Answer(reply) => reply,
                    Asked::Stopped => return Ok(Next::End(ChangeEnd::Stopped)),
                }) else {
                    return Ok(Next::End(ChangeEnd::Exhausted));
                };
                let p = propose_payload(&reply, base, walk.attempt, &walk.ask);
                self.rec.append(Some(id), &p)?;
                p
            }
        };
        walk.cur.proposals += 1;
        // Apply the text to the base commit's files (pure, so redone on resume).
        let malformed = proposal
            .extra
            .get("malformed")
            .and_then(Value::as_str)
            .map(str::to_string);
        let read = |path: &str| -> Option<String> {
            git.read_file(base, path)
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        let applied = match malformed {
            Some(reason) => Err(reason),
            None => self.proposals.apply(&proposal.patch, &read),
        };
        match applied {
            Ok(edits) => Ok(Next::Step(Step::Build {
                proposal: Box::new(proposal),
                edits,
            })),
            Err(reason) => {
                if change.errors.get(walk.cur.errors).is_none() {
                    self.rec.append(
                        Some(id),
                        &ErrorEvent {
                            stage: "apply".into(),
                            message: reason.clone(),
                            extra: Map::new(),
                        },
                    )?;
                }
                walk.cur.errors += 1;
                if walk.retried {
                    return Ok(decided(simple_decision(
                        DecisionOutcome::PolicyRejected,
                        format!("unappliable_patch: {reason}"),
                        &self.target.decision.rule_version,
                    )));
                }
                walk.retried = true;
                walk.ask = Ask::Retry {
                    previous_reply: proposal.patch.clone(),
                    reason,
                };
                Ok(Next::Step(Step::Propose))
            }
        }
    }

    /// Asks the proposer; while the provider fails transiently (down, rate-limiting, hanging,
    /// answering garbage), records a wait and asks again after it, for as long as the budget
    /// lasts. A fatal failure (auth, unknown model, an invalid request) is returned: its
    /// message names the setting to fix.
    fn ask_until_answered(&self, id: &str, ctx: &Context) -> Result<Asked> {
        let cfg = LoopConfig::from_target(self.target)?;
        loop {
            let err = match self.proposals.propose(ctx) {
                Ok(reply) => return Ok(Asked::Answer(reply.map(Box::new))),
                Err(e) => e,
            };
            let failure = match err.downcast_ref::<ProviderFailure>() {
                Some(f) if f.transient => f.clone(),
                _ => return Err(err.context("asking for a proposal")),
            };
            let history = self.rec.state()?;
            let streak = history.provider_streak.as_ref();
            if !pause::wait_for_provider(self.rec, self.stop, &cfg, id, streak, &failure)? {
                return Ok(Asked::Stopped);
            }
        }
    }

    fn context(&self, asking_for: &str, ready: &Ready, base: Oid, ask: Ask) -> Result<Context> {
        let git = &self.ws.git;
        let mut editable_files = Vec::new();
        for path in git.list_files(base)? {
            if self.target.is_editable(&path) && !self.target.is_frozen(&path) {
                if let Some(bytes) = git.read_file(base, &path)? {
                    editable_files.push((path, String::from_utf8_lossy(&bytes).into_owned()));
                }
            }
        }
        // Read now: other workers may have decided or proposed changes since this one began.
        let history = self.rec.state()?;
        let history_items = history
            .changes
            .iter()
            .filter_map(|c| {
                if c.id != asking_for && !c.is_settled() && c.decision.is_none() {
                    // Being evaluated by another worker: not to be proposed again.
                    let p = c.proposals.last()?;
                    return Some(HistoryItem {
                        change_id: c.id.clone(),
                        description: p.description.clone(),
                        outcome: "in_flight".into(),
                        effect: None,
                        ci_low: None,
                        ci_high: None,
                        on_current_trunk: true,
                    });
                }
                let d = c.counted_decision()?;
                // An accepted change the holdout audit took back is not a success to build on.
                let outcome = match c.rollback {
                    Some(_) => "rolled_back",
                    None => d.outcome.as_str(),
                };
                Some(HistoryItem {
                    change_id: c.id.clone(),
                    description: c.description(),
                    outcome: outcome.to_string(),
                    effect: d.mean_diff,
                    ci_low: d.ci_low,
                    ci_high: d.ci_high,
                    on_current_trunk: c.base_commit() == Some(base.to_string().as_str()),
                })
            })
            .collect();
        Ok(Context {
            editable_files,
            history: history_items,
            noise_floor: Some(ready.noise.run_sd),
            min_gain: Some(ready.noise.min_effect(&self.target.decision)),
            budget_left: self.stop.time_left().unwrap_or_default(),
            ask,
            notice: breaker_notice(&history),
        })
    }
}

/// After a circuit-breaker pause, until the next decision: what kept failing, for the agent.
fn breaker_notice(history: &SessionState) -> Option<String> {
    let (seq, pause) = history.breaker_pauses.last()?;
    let decided_since = history
        .changes
        .iter()
        .any(|c| matches!(&c.decision, Some((s, _)) if s > seq));
    (!decided_since).then(|| {
        format!(
            "The loop paused because the last changes all failed the same way: {}. \
             Propose something different: a smaller change, one that compiles and trains \
             stably, within the editable files and the rules above.",
            pause.message
        )
    })
}

fn propose_payload(reply: &Reply, parent: Oid, attempt: u32, ask: &Ask) -> Propose {
    let mut extra = Map::new();
    let kind = match ask {
        Ask::New => "new",
        Ask::FixBuild { .. } => "fix_build",
        Ask::Retry { .. } => "retry",
    };
    extra.insert("request".into(), json!(kind));
    if let Some(m) = &reply.malformed {
        extra.insert("malformed".into(), json!(m));
    }
    Propose {
        description: reply.description.clone(),
        rationale: reply.rationale.clone(),
        patch: reply.patch_text.clone(),
        patch_format: reply.patch_format.clone(),
        prompt_template_sha256: reply.prompt_template_sha256.clone(),
        model: reply.model.clone(),
        provider: reply.provider.clone(),
        prompt_tokens: reply.prompt_tokens,
        completion_tokens: reply.completion_tokens,
        cost_usd: reply.cost_usd,
        parent_commit: Some(parent.to_string()),
        attempt: Some(attempt),
        retest_of: None,
        extra,
    }
}
