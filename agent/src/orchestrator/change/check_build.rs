//! Step 2, check and build: the applied proposal against the policy, then committed on the
//! change branch in its own worktree, built (a failed build asks the proposer for a fix) and
//! smoked (a few steps; a crash or divergence ends the change here).

use std::path::PathBuf;

use agentloop_guardrails::policy::{self, FileChange, ProposedChange};
use agentloop_ledger::payload::{
    Arm, Build, DecisionOutcome, Policy, PolicyOutcome, Propose, Stage,
};
use agentloop_ledger::state::ChangeRecord;
use anyhow::Result;
use git2::Oid;
use serde_json::Map;

use super::decision_record::simple_decision;
use super::{decided, one_line, ChangeEnd, ChangeRunner, ChangeStage, Next, Step, Walk};
use crate::git::{change_branch, FileWrite};
use crate::orchestrator::artifacts::BuildCache;
use crate::orchestrator::build::{ensure_built, BuildState};
use crate::orchestrator::proposals::{Ask, Edit};
use crate::orchestrator::runs::{self, recorded, value_of, RunSpec};
use crate::orchestrator::seeds::seed_for;
use crate::orchestrator::trunk::Ready;

impl<'a> ChangeRunner<'a> {
    /// Policy, commit, build and smoke: `Evaluate` the built candidate, or `Propose` a fix for
    /// a failed build, or the decision that ends the change (rejected, failed, crashed).
    pub(super) fn check_build(
        &mut self,
        ready: &Ready,
        change: &ChangeRecord,
        walk: &mut Walk,
        proposal: &Propose,
        edits: &[Edit],
    ) -> Result<Next> {
        let id = change.id.as_str();
        let git = &self.ws.git;
        let base = ready.commit;
        self.stage = ChangeStage::Policy;
        let verdict = match change.policies.get(walk.cur.policies) {
            Some(p) => p.clone(),
            None => {
                let p = self.check_policy(base, edits)?;
                self.rec.append(Some(id), &p)?;
                p
            }
        };
        walk.cur.policies += 1;
        if verdict.outcome == PolicyOutcome::Rejected {
            let code = verdict.code.clone().unwrap_or_default();
            let message = verdict.message.clone().unwrap_or_default();
            return Ok(decided(simple_decision(
                DecisionOutcome::PolicyRejected,
                format!("{code}: {message}"),
                &self.target.decision.rule_version,
            )));
        }
        // Apply as a commit on the change branch, in its own worktree
        self.stage = ChangeStage::Build;
        let branch = change_branch(self.session, id);
        let recorded_build = change.builds.get(walk.cur.builds).cloned();
        let commit = match recorded_build.as_ref().and_then(|b| b.commit.as_deref()) {
            Some(c) => Oid::from_str(c)?,
            None => {
                let writes: Vec<FileWrite> = edits
                    .iter()
                    .map(|e| FileWrite {
                        path: e.path.clone(),
                        contents: e.after.as_ref().map(|t| t.as_bytes().to_vec()),
                    })
                    .collect();
                let message = format!(
                    "{}\n\n{}\n\nChange-Id: {id}\n{}",
                    one_line(&proposal.description),
                    proposal.rationale.trim(),
                    self.rec.head_trailer()?
                );
                git.commit_on(base, &writes, &message)?
            }
        };
        git.set_branch(&branch, commit, "agentloop: apply change")?;
        let worktree = self.change_worktree(id, &branch, commit)?;
        // Build
        let cache = BuildCache::new(&self.ws.state);
        let build = match recorded_build {
            Some(b) => {
                if b.ok {
                    // Recorded as built; outputs may be gone with a cleaned worktree.
                    if let BuildState::Stopped = ensure_built(
                        self.ws,
                        self.target,
                        &cache,
                        self.env,
                        self.stop,
                        &worktree,
                        commit,
                    )? {
                        return Ok(Next::End(ChangeEnd::Stopped));
                    }
                }
                b
            }
            None => {
                let started = std::time::Instant::now();
                let state = ensure_built(
                    self.ws,
                    self.target,
                    &cache,
                    self.env,
                    self.stop,
                    &worktree,
                    commit,
                )?;
                let mut extra = Map::new();
                let (ok, tail, log) = match state {
                    BuildState::Stopped => return Ok(Next::End(ChangeEnd::Stopped)),
                    BuildState::Ready { cached } => {
                        // Nothing was compiled: the same build inputs were built before.
                        extra.insert("cached".into(), cached.into());
                        (true, String::new(), None)
                    }
                    BuildState::Failed(f) => (false, f.tail.clone(), Some(f.log.clone())),
                };
                let b = Build {
                    commit: Some(commit.to_string()),
                    ok,
                    attempt: Some(walk.attempt),
                    duration_s: Some(started.elapsed().as_secs_f64()),
                    log_tail: (!ok).then(|| runs::tail_lines(&tail, 40)),
                    log_sha256: log.as_deref().and_then(runs::file_sha256),
                    extra,
                };
                self.rec.append(Some(id), &b)?;
                b
            }
        };
        walk.cur.builds += 1;
        if !build.ok {
            let fixes_used = walk.cur.builds as u32 - 1;
            if fixes_used >= self.fix_attempts {
                return Ok(decided(simple_decision(
                    DecisionOutcome::BuildFailed,
                    format!(
                        "build_failed: the patch does not compile after {} fix attempt(s)",
                        fixes_used
                    ),
                    &self.target.decision.rule_version,
                )));
            }
            // The fix replaces the failed patch and applies to the trunk's files again.
            walk.ask = Ask::FixBuild {
                previous_patch: proposal.patch.clone(),
                compiler_errors: build.log_tail.clone().unwrap_or_default(),
            };
            return Ok(Next::Step(Step::Propose));
        }
        // Smoke: a few steps; a crash or divergence ends the change here
        self.stage = ChangeStage::Smoke;
        let seed = seed_for(self.session, Some(id), "smoke", 0);
        let smoke = match recorded(&change.runs, Stage::Smoke, Arm::Candidate, seed).next() {
            Some(r) => r.clone(),
            None => {
                let spec = RunSpec {
                    arm: Arm::Candidate,
                    stage: Stage::Smoke,
                    commit: &commit.to_string(),
                    seed,
                    split: "val",
                    budget: &self.target.train.smoke_budget,
                    worktree: &worktree,
                    out: self.run_dir(id, "smoke-candidate-0"),
                };
                let Some(r) = runs::run(self.target, &spec, self.env, self.exec, self.stop)? else {
                    return Ok(Next::End(ChangeEnd::Stopped));
                };
                self.rec.append(Some(id), &r)?;
                r
            }
        };
        if value_of(&smoke).is_none() {
            let status = serde_json::to_value(smoke.exit_status)?;
            return Ok(decided(simple_decision(
                DecisionOutcome::Crashed,
                format!(
                    "smoke_{}: the smoke run ended {}",
                    status.as_str().unwrap_or("crashed"),
                    status.as_str().unwrap_or("crashed")
                ),
                &self.target.decision.rule_version,
            )));
        }
        Ok(Next::Step(Step::Evaluate { commit, worktree }))
    }

    fn change_worktree(&self, id: &str, branch: &str, commit: Oid) -> Result<PathBuf> {
        let git = &self.ws.git;
        let path = git.worktrees_dir().join(id);
        let current = git2::Repository::open(&path).ok().and_then(|r| {
            r.head()
                .ok()
                .and_then(|h| h.peel_to_commit().ok())
                .map(|c| c.id())
        });
        if current.is_some() {
            // The branch ref moved (a fix attempt): bring the files along.
            git.refresh_worktree(&path)?;
            return Ok(path);
        }
        let _ = commit;
        Ok(git.add_worktree(id, branch)?)
    }

    fn check_policy(&self, base: Oid, edits: &[Edit]) -> Result<Policy> {
        let git = &self.ws.git;
        let mut files = Vec::new();
        for e in edits {
            files.push(FileChange {
                path: e.path.clone(),
                before: e.before.clone(),
                after: e.after.as_ref().map(|t| t.as_bytes().to_vec()),
                is_symlink: git.is_symlink(base, &e.path).unwrap_or(false),
            });
        }
        let change = ProposedChange { files };
        Ok(
            match policy::check(&change, self.target, &self.target.policy) {
                Ok(()) => Policy {
                    outcome: PolicyOutcome::Accepted,
                    code: None,
                    message: None,
                    extra: Map::new(),
                },
                Err(rejection) => Policy {
                    outcome: PolicyOutcome::Rejected,
                    code: Some(rejection.code.as_str().to_string()),
                    message: Some(rejection.message.clone()),
                    extra: Map::new(),
                },
            },
        )
    }
}
