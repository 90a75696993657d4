//! One change from proposal to merge or discard. Every step first looks for its own event in
//! the change's record and reuses it; only a step not yet recorded is done (and then recorded).
//! So the same code both runs a fresh change and resumes one killed at any point.

use std::path::PathBuf;

use agentloop_guardrails::policy::{self, FileChange, ProposedChange};
use agentloop_guardrails::process::{
    Arm as NeedArm, DecidedAt, DecisionProcess, Observation, Request, RunValue, Verdict,
};
use agentloop_guardrails::target::TargetSpec;
use agentloop_ledger::payload::{
    Arm, Build, Decision, DecisionOutcome, Discard, ErrorEvent, Merge, Policy, PolicyOutcome,
    Propose, RunResult, Stage,
};
use anyhow::{Context as _, Result};
use git2::Oid;
use serde_json::{json, Map, Value};

use super::artifacts::BuildCache;
use super::build::{ensure_built, BuildState};
use super::pause::{self, LoopConfig};
use super::proposals::{Ask, Context, Edit, HistoryItem, ProposalSource, ProviderFailure, Reply};
use super::record::Recorder;
use super::runs::{self, recorded, value_of, RunSpec};
use super::seeds::seed_for;
use super::trunk::Ready;
use super::workspace::Workspace;
use crate::executor::budget::Stop;
use crate::executor::Executor;
use crate::git::{change_branch, kept_ref, trunk_branch, FileWrite};
use agentloop_ledger::state::{ChangeRecord, SessionState};

/// Merges are decided one at a time: "is the trunk still the one this change was tested on?"
/// and moving the trunk must not interleave with another worker's merge.
static MERGE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub enum ChangeEnd {
    Settled,
    /// The loop was stopped (budget or Ctrl-C) before the change was settled.
    Stopped,
    /// The proposer has nothing left to propose (before anything was recorded).
    Exhausted,
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
    pub stage: &'static str,
}

/// The outcome of the steps before the statistics.
enum Prepared {
    Candidate { commit: Oid, worktree: PathBuf },
    Decided(Box<Decision>),
    Stopped,
    Exhausted,
}

/// What asking the proposer came to.
enum Asked {
    /// A reply, or `None` when the proposer has nothing left.
    Answer(Option<Box<Reply>>),
    /// The loop was stopped while waiting for the provider.
    Stopped,
}

/// How launching both runs of a pair at once went.
enum PairStart {
    Ran(Box<(RunResult, RunResult)>),
    Stopped,
    /// One of the two is recorded already; run the rest one after the other.
    NotTogether,
}

/// Cursors into a change's recorded events: step `i` of a kind reuses event `i` of that kind.
#[derive(Default)]
struct Cursor {
    proposals: usize,
    policies: usize,
    builds: usize,
    errors: usize,
}

impl<'a> ChangeRunner<'a> {
    pub fn process(&mut self, ready: &Ready, change: &ChangeRecord) -> Result<ChangeEnd> {
        let id = change.id.as_str();
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
        let decision = match &change.decision {
            Some((_, d)) => d.clone(),
            None => {
                let prepared = self.prepare(ready, change)?;
                let decision = match prepared {
                    Prepared::Stopped => return Ok(ChangeEnd::Stopped),
                    Prepared::Exhausted => return Ok(ChangeEnd::Exhausted),
                    Prepared::Decided(d) => *d,
                    Prepared::Candidate { commit, worktree } => {
                        match self.decide(ready, change, commit, &worktree)? {
                            Some(d) => d,
                            None => return Ok(ChangeEnd::Stopped),
                        }
                    }
                };
                self.stage = "decision";
                // Checked right before deciding, so a decision is never made twice.
                let again = self.rec.state()?;
                if again.change(id).and_then(|c| c.decision.as_ref()).is_none() {
                    self.rec.append(Some(id), &decision)?;
                }
                decision
            }
        };
        self.settle(ready, change, &decision)?;
        Ok(ChangeEnd::Settled)
    }

    /// Propose, policy, apply, build (with fix attempts) and smoke.
    fn prepare(&mut self, ready: &Ready, change: &ChangeRecord) -> Result<Prepared> {
        let id = change.id.as_str();
        let git = &self.ws.git;
        let mut cur = Cursor::default();
        let mut ask = Ask::New;
        let base = ready.commit;
        // A re-test applies the accepted patch as it is: if it no longer applies, that is its
        // result (the proposer is not asked to redo it).
        let mut retried = change.retest_of().is_some();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            // 1. propose
            self.stage = "propose";
            let proposal = match change.proposals.get(cur.proposals) {
                Some(p) => p.clone(),
                None => {
                    if self.stop.is_stopped() {
                        return Ok(Prepared::Stopped);
                    }
                    let ctx = self.context(id, ready, base, ask.clone())?;
                    let Some(reply) = (match self.ask_until_answered(id, &ctx)? {
                        Asked::Answer(reply) => reply,
                        Asked::Stopped => return Ok(Prepared::Stopped),
                    }) else {
                        return Ok(Prepared::Exhausted);
                    };
                    let p = propose_payload(&reply, base, attempt, &ask);
                    self.rec.append(Some(id), &p)?;
                    p
                }
            };
            cur.proposals += 1;
            // 2. apply the text to the base commit's files (pure, so redone on resume)
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
            let edits = match applied {
                Ok(edits) => edits,
                Err(reason) => {
                    if change.errors.get(cur.errors).is_none() {
                        self.rec.append(
                            Some(id),
                            &ErrorEvent {
                                stage: "apply".into(),
                                message: reason.clone(),
                                extra: Map::new(),
                            },
                        )?;
                    }
                    cur.errors += 1;
                    if retried {
                        return Ok(Prepared::Decided(Box::new(simple_decision(
                            DecisionOutcome::PolicyRejected,
                            format!("unappliable_patch: {reason}"),
                            &self.target.decision.rule_version,
                        ))));
                    }
                    retried = true;
                    ask = Ask::Retry {
                        previous_reply: proposal.patch.clone(),
                        reason,
                    };
                    continue;
                }
            };
            // 3. policy
            self.stage = "policy";
            let verdict = match change.policies.get(cur.policies) {
                Some(p) => p.clone(),
                None => {
                    let p = self.check_policy(base, &edits)?;
                    self.rec.append(Some(id), &p)?;
                    p
                }
            };
            cur.policies += 1;
            if verdict.outcome == PolicyOutcome::Rejected {
                let code = verdict.code.clone().unwrap_or_default();
                let message = verdict.message.clone().unwrap_or_default();
                return Ok(Prepared::Decided(Box::new(simple_decision(
                    DecisionOutcome::PolicyRejected,
                    format!("{code}: {message}"),
                    &self.target.decision.rule_version,
                ))));
            }
            // 4. apply as a commit on the change branch, in its own worktree
            self.stage = "build";
            let branch = change_branch(self.session, id);
            let recorded_build = change.builds.get(cur.builds).cloned();
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
            // 5. build
            let tree = git.tree_of(commit)?.to_string();
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
                            &tree,
                        )? {
                            return Ok(Prepared::Stopped);
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
                        &tree,
                    )?;
                    let (ok, tail, log) = match state {
                        BuildState::Stopped => return Ok(Prepared::Stopped),
                        BuildState::Ready => (true, String::new(), None),
                        BuildState::Failed(f) => (false, f.tail.clone(), Some(f.log.clone())),
                    };
                    let b = Build {
                        commit: Some(commit.to_string()),
                        ok,
                        attempt: Some(attempt),
                        duration_s: Some(started.elapsed().as_secs_f64()),
                        log_tail: (!ok).then(|| runs::tail_lines(&tail, 40)),
                        log_sha256: log.as_deref().and_then(runs::file_sha256),
                        extra: Map::new(),
                    };
                    self.rec.append(Some(id), &b)?;
                    b
                }
            };
            cur.builds += 1;
            if !build.ok {
                let fixes_used = cur.builds as u32 - 1;
                if fixes_used >= self.fix_attempts {
                    return Ok(Prepared::Decided(Box::new(simple_decision(
                        DecisionOutcome::BuildFailed,
                        format!(
                            "build_failed: the patch does not compile after {} fix attempt(s)",
                            fixes_used
                        ),
                        &self.target.decision.rule_version,
                    ))));
                }
                // The fix replaces the failed patch and applies to the trunk's files again.
                ask = Ask::FixBuild {
                    previous_patch: proposal.patch.clone(),
                    compiler_errors: build.log_tail.clone().unwrap_or_default(),
                };
                continue;
            }
            // 6. smoke: a few steps; a crash or divergence ends the change here
            self.stage = "smoke";
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
                    let Some(r) = runs::run(self.target, &spec, self.env, self.exec, self.stop)?
                    else {
                        return Ok(Prepared::Stopped);
                    };
                    self.rec.append(Some(id), &r)?;
                    r
                }
            };
            if value_of(&smoke).is_none() {
                let status = serde_json::to_value(smoke.exit_status)?;
                return Ok(Prepared::Decided(Box::new(simple_decision(
                    DecisionOutcome::Crashed,
                    format!(
                        "smoke_{}: the smoke run ended {}",
                        status.as_str().unwrap_or("crashed"),
                        status.as_str().unwrap_or("crashed")
                    ),
                    &self.target.decision.rule_version,
                ))));
            }
            return Ok(Prepared::Candidate { commit, worktree });
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

    /// Screen and confirm, driving the decision engine's state machine with runs that are
    /// reused from the ledger when recorded. `None` when stopped.
    fn decide(
        &mut self,
        ready: &Ready,
        change: &ChangeRecord,
        commit: Oid,
        worktree: &std::path::Path,
    ) -> Result<Option<Decision>> {
        let id = change.id.as_str();
        let rule = self.target.decision.clone();
        let process = if rule.is_v3() {
            // The trunk's cached runs as the ledger holds them now (this change's own trunk
            // fills left out, so a resume asks for exactly the runs it asked for before).
            let latest = self.rec.state()?;
            let common = super::common_control::for_trunk(
                &latest,
                &ready.commit.to_string(),
                &ready.noise,
                Some(id),
            );
            DecisionProcess::with_common_control(rule, ready.noise.clone(), common)
        } else {
            DecisionProcess::new(rule, ready.noise.clone())
        };
        let mut process = process.map_err(|e| anyhow::anyhow!("decision rule: {e}"))?;
        let mut screens: u32 = 0;
        let mut pairs: u32 = 0;
        let done = loop {
            let (arm, count) = match process.next_request() {
                Request::Done(d) => break d.clone(),
                Request::NeedRuns { arm, count } => (arm, count),
            };
            for _ in 0..count {
                let observation = match arm {
                    NeedArm::Candidate => {
                        self.stage = "screen";
                        let seed = seed_for(self.session, Some(id), "screen", screens);
                        let label = format!("screen-candidate-{screens}");
                        screens += 1;
                        let Some(r) = self.run_once(
                            change,
                            Stage::Screen,
                            Arm::Candidate,
                            seed,
                            commit,
                            worktree,
                            &label,
                        )?
                        else {
                            return Ok(None);
                        };
                        Observation::Candidate(run_value(&r))
                    }
                    NeedArm::Common { seed, with_trunk } => {
                        // v3: the candidate on the trunk's common seed, and the trunk's own run
                        // on it when the ledger has none yet (side by side with two slots).
                        self.stage = "screen";
                        let index = screens;
                        screens += 1;
                        let (trunk, candidate) = if with_trunk {
                            match self.pair(
                                change,
                                Stage::Screen,
                                seed,
                                ready,
                                index,
                                commit,
                                worktree,
                            )? {
                                Some((b, c)) => (Some(run_value(&b)), c),
                                None => return Ok(None),
                            }
                        } else {
                            let Some(c) = self.run_once(
                                change,
                                Stage::Screen,
                                Arm::Candidate,
                                seed,
                                commit,
                                worktree,
                                &format!("screen-candidate-{index}"),
                            )?
                            else {
                                return Ok(None);
                            };
                            (None, c)
                        };
                        Observation::Common {
                            seed,
                            trunk,
                            candidate: run_value(&candidate),
                        }
                    }
                    NeedArm::Paired => {
                        self.stage = "confirm";
                        let seed = seed_for(self.session, Some(id), "confirm", pairs);
                        let index = pairs;
                        pairs += 1;
                        let Some((baseline, candidate)) = self.pair(
                            change,
                            Stage::Confirm,
                            seed,
                            ready,
                            index,
                            commit,
                            worktree,
                        )?
                        else {
                            return Ok(None);
                        };
                        Observation::Pair {
                            baseline: run_value(&baseline),
                            candidate: run_value(&candidate),
                        }
                    }
                };
                process
                    .add_result(observation)
                    .map_err(|e| anyhow::anyhow!("decision engine: {e}"))?;
                if matches!(process.next_request(), Request::Done(_)) {
                    break;
                }
            }
        };
        let mut decision = decision_payload(&done)?;
        if done.verdict == Verdict::Crash {
            // Say how the candidate failed (diverged, timed out, crashed), not only that it did.
            let latest = self.rec.state()?;
            let failed = latest.change(id).and_then(|c| {
                c.runs
                    .iter()
                    .rev()
                    .find(|r| r.arm == Arm::Candidate && value_of(r).is_none())
                    .cloned()
            });
            if let Some(r) = failed {
                let status = serde_json::to_value(r.exit_status)?;
                let status = status.as_str().unwrap_or("crashed");
                decision.reason = Some(format!("{status}: {}", done.reason));
            }
        }
        Ok(Some(decision))
    }

    /// A candidate run, reused when recorded.
    #[allow(clippy::too_many_arguments)]
    fn run_once(
        &mut self,
        change: &ChangeRecord,
        stage: Stage,
        arm: Arm,
        seed: u64,
        commit: Oid,
        worktree: &std::path::Path,
        label: &str,
    ) -> Result<Option<RunResult>> {
        if let Some(r) = recorded(&change.runs, stage, arm, seed).next() {
            return Ok(Some(r.clone()));
        }
        let spec = RunSpec {
            arm,
            stage,
            commit: &commit.to_string(),
            seed,
            split: "val",
            budget: &self.target.train.budget,
            worktree,
            out: self.run_dir(&change.id, label),
        };
        let Some(r) = runs::run(self.target, &spec, self.env, self.exec, self.stop)? else {
            return Ok(None);
        };
        self.rec.append(Some(&change.id), &r)?;
        Ok(Some(r))
    }

    /// The trunk's and the candidate's run on `seed` for `stage` (a confirmation pair, or a v3
    /// screening run that fills the trunk's missing run): side by side with two slots, else one
    /// after the other; each reused when recorded. The trunk's run is retried on a crash.
    /// `None` when stopped.
    #[allow(clippy::too_many_arguments)]
    fn pair(
        &mut self,
        change: &ChangeRecord,
        stage: Stage,
        seed: u64,
        ready: &Ready,
        index: u32,
        commit: Oid,
        worktree: &std::path::Path,
    ) -> Result<Option<(RunResult, RunResult)>> {
        let together = if self.exec.slots() > 1 {
            self.pair_together(change, stage, seed, ready, index, commit, worktree)?
        } else {
            PairStart::NotTogether
        };
        match together {
            PairStart::Stopped => Ok(None),
            PairStart::Ran(pair) => Ok(Some(*pair)),
            PairStart::NotTogether => {
                let Some(baseline) = self.baseline_run(change, stage, seed, ready, index, 0)?
                else {
                    return Ok(None);
                };
                let Some(candidate) = self.run_once(
                    change,
                    stage,
                    Arm::Candidate,
                    seed,
                    commit,
                    worktree,
                    &format!("{}-candidate-{index}", stage.as_str()),
                )?
                else {
                    return Ok(None);
                };
                Ok(Some((baseline, candidate)))
            }
        }
    }

    /// Both runs of a pair launched at once (two slots), so the pair sees the same conditions.
    /// Recorded baseline first, then candidate. `NotTogether` when one of them is recorded
    /// already (a resume): the rest then runs as with one slot.
    #[allow(clippy::too_many_arguments)]
    fn pair_together(
        &mut self,
        change: &ChangeRecord,
        stage: Stage,
        seed: u64,
        ready: &Ready,
        index: u32,
        commit: Oid,
        worktree: &std::path::Path,
    ) -> Result<PairStart> {
        let previous: Vec<&RunResult> =
            recorded(&change.runs, stage, Arm::Baseline, seed).collect();
        let baseline_done = previous.iter().any(|r| value_of(r).is_some());
        let candidate_done = recorded(&change.runs, stage, Arm::Candidate, seed)
            .next()
            .is_some();
        if baseline_done || candidate_done {
            return Ok(PairStart::NotTogether);
        }
        let tries = previous.len() + 1;
        let (trunk, candidate) = (ready.commit.to_string(), commit.to_string());
        let baseline_spec = RunSpec {
            arm: Arm::Baseline,
            stage,
            commit: &trunk,
            seed,
            split: "val",
            budget: &self.target.train.budget,
            worktree: &ready.worktree,
            out: self.run_dir(
                &change.id,
                &format!("{}-baseline-{index}-{tries}", stage.as_str()),
            ),
        };
        let candidate_spec = RunSpec {
            arm: Arm::Candidate,
            stage,
            commit: &candidate,
            seed,
            split: "val",
            budget: &self.target.train.budget,
            worktree,
            out: self.run_dir(&change.id, &format!("{}-candidate-{index}", stage.as_str())),
        };
        let (target, env, exec, stop) = (self.target, self.env, self.exec, self.stop);
        let (b, c) = std::thread::scope(|s| {
            let b = s.spawn(|| runs::run(target, &baseline_spec, env, exec, stop));
            let c = runs::run(target, &candidate_spec, env, exec, stop);
            let b = b
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the baseline run's thread panicked")));
            (b, c)
        });
        let (b, c) = (b?, c?);
        // What finished is recorded even when the other was stopped: it is a result.
        if let Some(b) = &b {
            self.rec.append(Some(&change.id), b)?;
        }
        if let Some(c) = &c {
            self.rec.append(Some(&change.id), c)?;
        }
        let (Some(b), Some(c)) = (b, c) else {
            return Ok(PairStart::Stopped);
        };
        if value_of(&b).is_some() {
            return Ok(PairStart::Ran(Box::new((b, c))));
        }
        // The trunk's run crashed: retried on the same seed, as with one slot.
        match self.baseline_run(change, stage, seed, ready, index, 1)? {
            Some(b) => Ok(PairStart::Ran(Box::new((b, c)))),
            None => Ok(PairStart::Stopped),
        }
    }

    /// The baseline of a pair: the trunk on the pair's seed. A crashed baseline says nothing
    /// about the candidate, so it is retried on the same seed (each try recorded).
    /// `failed_since`: failed tries recorded after `change` was read.
    #[allow(clippy::too_many_arguments)]
    fn baseline_run(
        &mut self,
        change: &ChangeRecord,
        stage: Stage,
        seed: u64,
        ready: &Ready,
        index: u32,
        failed_since: usize,
    ) -> Result<Option<RunResult>> {
        let previous: Vec<&RunResult> =
            recorded(&change.runs, stage, Arm::Baseline, seed).collect();
        if let Some(ok) = previous.iter().find(|r| value_of(r).is_some()) {
            return Ok(Some((*ok).clone()));
        }
        let mut tries = previous.len() + failed_since;
        if tries >= 3 {
            anyhow::bail!(
                "the trunk's run on seed {seed} failed {tries} times; see {}",
                self.run_dir(
                    &change.id,
                    &format!("{}-baseline-{index}-{tries}", stage.as_str())
                )
                .join("run.log")
                .display()
            );
        }
        loop {
            tries += 1;
            let spec = RunSpec {
                arm: Arm::Baseline,
                stage,
                commit: &ready.commit.to_string(),
                seed,
                split: "val",
                budget: &self.target.train.budget,
                worktree: &ready.worktree,
                out: self.run_dir(
                    &change.id,
                    &format!("{}-baseline-{index}-{tries}", stage.as_str()),
                ),
            };
            let Some(r) = runs::run(self.target, &spec, self.env, self.exec, self.stop)? else {
                return Ok(None);
            };
            self.rec.append(Some(&change.id), &r)?;
            if value_of(&r).is_some() {
                return Ok(Some(r));
            }
            if tries >= 3 {
                anyhow::bail!(
                    "the trunk's run on seed {seed} failed {tries} times ({:?}); see {}",
                    r.exit_status,
                    spec.out.join("run.log").display()
                );
            }
        }
    }

    /// Merge (accepted) or discard (anything else), each recorded before git is touched.
    fn settle(&mut self, ready: &Ready, change: &ChangeRecord, decision: &Decision) -> Result<()> {
        let id = change.id.as_str();
        let git = &self.ws.git;
        let branch = change_branch(self.session, id);
        self.stage = "settle";
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
    fn supersede(&mut self, change: &ChangeRecord, why: &str) -> Result<()> {
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

    fn run_dir(&self, change: &str, label: &str) -> PathBuf {
        self.ws.state.join("runs").join(change).join(label)
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
                    });
                }
                let d = c.counted_decision()?;
                Some(HistoryItem {
                    change_id: c.id.clone(),
                    description: c.description(),
                    outcome: d.outcome.as_str().to_string(),
                    effect: d.mean_diff,
                    ci_low: d.ci_low,
                    ci_high: d.ci_high,
                })
            })
            .collect();
        Ok(Context {
            editable_files,
            history: history_items,
            noise_floor: Some(ready.noise.run_sd),
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

fn run_value(r: &RunResult) -> RunValue {
    match value_of(r) {
        Some(v) => RunValue::Ok(v),
        None => RunValue::Crashed,
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

/// A decision made before any statistics (policy, build, smoke).
fn simple_decision(outcome: DecisionOutcome, reason: String, rule_version: &str) -> Decision {
    let stage = match outcome {
        DecisionOutcome::Crashed => Some(Stage::Smoke),
        _ => None,
    };
    Decision {
        outcome,
        stage,
        test: None,
        n: None,
        mean_baseline: None,
        mean_candidate: None,
        mean_diff: None,
        sd_diff: None,
        ci_low: None,
        ci_high: None,
        p_value: None,
        thresholds: Value::Null,
        min_effect: None,
        rule_version: rule_version.to_string(),
        reason: Some(reason),
        extra: Map::new(),
    }
}

/// The rule's thresholds as the decision event shows them. A v1 rule's shape is kept as it
/// was, so decisions recorded before the sequential screen verify unchanged.
fn thresholds(rule: &agentloop_guardrails::decision::DecisionRule) -> Value {
    if rule.is_v3() {
        return json!({
            "screen": rule.screen,
            "confirm": rule.confirm,
            "min_effect": rule.min_effect,
            "alpha": rule.false_accept_bound(),
        });
    }
    let mut t = json!({
        "stages": rule.stages,
        "screen_reject_below_sd": rule.screen_reject_below_sd,
        "min_effect_sd": rule.min_effect_sd,
    });
    if let agentloop_guardrails::decision::ScreenRule::Sequential { .. } = rule.screen {
        t["screen"] = json!(rule.screen);
    }
    t
}

/// The ledger's decision record: headline statistics plus the engine's full record (inputs,
/// rule, calibration), so `ledger verify` can recompute it.
pub(crate) fn decision_payload(d: &agentloop_guardrails::process::Decision) -> Result<Decision> {
    let outcome = match d.verdict {
        Verdict::Accept => DecisionOutcome::Accepted,
        Verdict::Reject => DecisionOutcome::Rejected,
        Verdict::Crash => DecisionOutcome::Crashed,
    };
    let stage = match d.decided_at {
        DecidedAt::Screen => Stage::Screen,
        DecidedAt::Stage(_) => Stage::Confirm,
    };
    let last = d.stages.last();
    let mut extra = Map::new();
    extra.insert("process".into(), serde_json::to_value(d)?);
    extra.insert("runs".into(), json!(d.runs));
    Ok(Decision {
        outcome,
        stage: Some(stage),
        test: last.map(|_| "paired_t_one_sided".to_string()).or_else(|| {
            d.screen.as_ref().map(|s| match (&s.sequential, &s.paired) {
                (_, Some(_)) => "screen_paired_sprt".to_string(),
                (Some(_), None) => "screen_sprt".to_string(),
                (None, None) => "screen_z".to_string(),
            })
        }),
        n: last
            .map(|s| s.pairs.len() as u32)
            .or(d.screen.as_ref().map(|s| match (&s.sequential, &s.paired) {
                (_, Some(p)) => p.pairs.len() as u32,
                (Some(seq), None) => seq.values.len() as u32,
                (None, None) => 1,
            })),
        mean_baseline: last
            .map(|s| s.mean_baseline)
            .or(d.screen.as_ref().map(|s| s.baseline_mean)),
        mean_candidate: last
            .map(|s| s.mean_candidate)
            .or(d.screen.as_ref().map(|s| s.candidate)),
        mean_diff: last
            .map(|s| s.test.mean)
            .or(d.screen.as_ref().map(|s| s.gain)),
        sd_diff: last.map(|s| s.test.sd).or(d
            .screen
            .as_ref()
            .and_then(|s| s.paired.as_ref())
            .map(|p| p.sd_used)),
        ci_low: last.map(|s| s.test.ci_low),
        ci_high: last.map(|s| s.test.ci_high),
        p_value: last.map(|s| s.test.p),
        thresholds: thresholds(&d.rule),
        min_effect: Some(d.calibration.min_effect(&d.rule)),
        rule_version: d.rule_version.clone(),
        reason: Some(d.reason.clone()),
        extra,
    })
}
