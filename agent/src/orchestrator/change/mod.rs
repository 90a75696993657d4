//! One change from proposal to merge or discard, driven as a machine of four steps:
//! propose (ask the proposer, apply its text), check and build (policy, commit, build, smoke),
//! evaluate (screen and confirm) and settle (record the decision, merge or discard).
//! Every step first looks for its own event in the change's record and reuses it; only a step
//! not yet recorded is done (and then recorded). So the same code both runs a fresh change and
//! resumes one killed at any point.

mod check_build;
pub(crate) mod decision_record;
mod evaluate;
mod guard_pairs;
mod propose;
mod settle;

use std::fmt;
use std::path::PathBuf;

use agentloop_guardrails::target::TargetSpec;
use agentloop_ledger::payload::{Decision, Propose};
use agentloop_ledger::state::ChangeRecord;
use anyhow::Result;
use git2::Oid;

use super::proposals::{Ask, Edit, ProposalSource};
use super::record::Recorder;
use super::trunk::Ready;
use super::workspace::Workspace;
use crate::executor::budget::Stop;
use crate::executor::Executor;

pub enum ChangeEnd {
    Settled,
    /// The loop was stopped (budget or Ctrl-C) before the change was settled.
    Stopped,
    /// The proposer has nothing left to propose (before anything was recorded).
    Exhausted,
}

/// The stage a change is in, named in the budget event when the loop stops and in errors.
/// The names are recorded in the ledger: they must not change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeStage {
    Start,
    Trunk,
    Propose,
    Policy,
    Build,
    Smoke,
    Screen,
    Confirm,
    Decision,
    Settle,
}

impl ChangeStage {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeStage::Start => "start",
            ChangeStage::Trunk => "trunk",
            ChangeStage::Propose => "propose",
            ChangeStage::Policy => "policy",
            ChangeStage::Build => "build",
            ChangeStage::Smoke => "smoke",
            ChangeStage::Screen => "screen",
            ChangeStage::Confirm => "confirm",
            ChangeStage::Decision => "decision",
            ChangeStage::Settle => "settle",
        }
    }
}

impl fmt::Display for ChangeStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub struct ChangeRunner<'a> {
    pub ws: &'a Workspace,
    pub target: &'a TargetSpec,
    pub rec: &'a Recorder,
    pub session: &'a str,
    pub env: &'a [(String, String)],
    /// Where training runs execute.
    pub exec: &'a dyn Executor,
    pub stop: &'a Stop,
    /// Shared with the session's other workers; asked one at a time.
    pub proposals: &'a dyn ProposalSource,
    pub fix_attempts: u32,
    /// The stage in flight, for the budget event when the loop stops.
    pub stage: ChangeStage,
}

/// The next step of a change.
enum Step {
    /// Ask the proposer (or reuse its recorded reply) and apply the text to the trunk's files.
    Propose,
    /// Check the applied proposal against the policy, commit it, build it and smoke it.
    Build {
        proposal: Box<Propose>,
        edits: Vec<Edit>,
    },
    /// Screen and confirm the built candidate.
    Evaluate { commit: Oid, worktree: PathBuf },
    /// Record the decision (unless `recorded` already), then merge or discard.
    Settle {
        decision: Box<Decision>,
        recorded: bool,
    },
}

/// What a step came to: the step after it, or the end of this change's turn.
enum Next {
    Step(Step),
    End(ChangeEnd),
}

/// A decision made by a step before the statistics (policy, apply, build, smoke).
fn decided(decision: Decision) -> Next {
    Next::Step(Step::Settle {
        decision: Box::new(decision),
        recorded: false,
    })
}

/// Cursors into a change's recorded events: step `i` of a kind reuses event `i` of that kind.
#[derive(Default)]
struct Cursor {
    proposals: usize,
    policies: usize,
    builds: usize,
    errors: usize,
}

/// What the propose and build steps carry between tries (a retry, a fix attempt).
struct Walk {
    cur: Cursor,
    /// What the proposer is asked for next.
    ask: Ask,
    /// A re-test applies the accepted patch as it is: if it no longer applies, that is its
    /// result (the proposer is not asked to redo it).
    retried: bool,
    attempt: u32,
}

impl Walk {
    fn new(change: &ChangeRecord) -> Walk {
        Walk {
            cur: Cursor::default(),
            ask: Ask::New,
            retried: change.retest_of().is_some(),
            attempt: 0,
        }
    }
}

/// Where a change starts (or resumes): settling a recorded decision, else proposing.
fn first_step(change: &ChangeRecord) -> Step {
    match &change.decision {
        Some((_, d)) => Step::Settle {
            decision: Box::new(d.clone()),
            recorded: true,
        },
        None => Step::Propose,
    }
}

impl<'a> ChangeRunner<'a> {
    pub fn process(&mut self, ready: &Ready, change: &ChangeRecord) -> Result<ChangeEnd> {
        if change.superseded_by().is_some() {
            return Ok(ChangeEnd::Settled);
        }
        if let (None, Some(base)) = (&change.decision, change.base_commit()) {
            if base != ready.commit.to_string() {
                // Proposed on an older trunk (another change merged while it was in flight
                // and the loop was killed): its runs so far compare against the wrong trunk.
                let why = format!(
                    "the trunk moved from {} to {} before this change was decided",
                    &base[..base.len().min(10)],
                    crate::git::oid_short(ready.commit)
                );
                self.supersede(change, &why)?;
                return Ok(ChangeEnd::Settled);
            }
        }
        let mut walk = Walk::new(change);
        let mut step = first_step(change);
        loop {
            let next = match step {
                Step::Propose => self.propose(ready, change, &mut walk)?,
                Step::Build { proposal, edits } => {
                    self.check_build(ready, change, &mut walk, &proposal, &edits)?
                }
                Step::Evaluate { commit, worktree } => {
                    match self.decide(ready, change, commit, &worktree)? {
                        Some(d) => decided(d),
                        None => Next::End(ChangeEnd::Stopped),
                    }
                }
                Step::Settle { decision, recorded } => {
                    if !recorded {
                        self.record_decision(&change.id, &decision)?;
                    }
                    self.settle(ready, change, &decision)?;
                    Next::End(ChangeEnd::Settled)
                }
            };
            step = match next {
                Next::Step(s) => s,
                Next::End(end) => return Ok(end),
            };
        }
    }

    fn run_dir(&self, change: &str, label: &str) -> PathBuf {
        self.ws.state.join("runs").join(change).join(label)
    }
}

fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        "agentloop change".into()
    } else {
        line.chars().take(100).collect()
    }
}
