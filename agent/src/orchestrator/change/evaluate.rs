//! Step 3, evaluate: screen and confirm the built candidate against the trunk, driving the
//! decision engine with runs reused from the ledger when recorded.

use std::path::Path;

use agentloop_guardrails::process::{
    Arm as NeedArm, DecisionProcess, Observation, Request, RunValue, Verdict,
};
use agentloop_ledger::payload::{Arm, Decision, RunResult, Stage};
use agentloop_ledger::state::ChangeRecord;
use anyhow::Result;
use git2::Oid;

use super::decision_record::decision_payload;
use super::{ChangeRunner, ChangeStage};
use crate::orchestrator::runs::{self, recorded, value_of, RunSpec};
use crate::orchestrator::seeds::seed_for;
use crate::orchestrator::trunk::Ready;

/// How launching both runs of a pair at once went.
enum PairStart {
    Ran(Box<(RunResult, RunResult)>),
    Stopped,
    /// One of the two is recorded already; run the rest one after the other.
    NotTogether,
}

impl<'a> ChangeRunner<'a> {
    /// Screen and confirm, driving the decision engine's state machine with runs that are
    /// reused from the ledger when recorded. `None` when stopped.
    pub(super) fn decide(
        &mut self,
        ready: &Ready,
        change: &ChangeRecord,
        commit: Oid,
        worktree: &Path,
    ) -> Result<Option<Decision>> {
        let id = change.id.as_str();
        let rule = self.target.decision.clone();
        let process = if rule.uses_common_control() {
            // The trunk's cached runs as the ledger holds them now (this change's own trunk
            // fills left out, so a resume asks for exactly the runs it asked for before).
            let latest = self.rec.state()?;
            let common = crate::orchestrator::common_control::for_trunk(
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
                        self.stage = ChangeStage::Screen;
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
                        self.stage = ChangeStage::Screen;
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
                        self.stage = ChangeStage::Confirm;
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
        // A greedy rule runs no trunk run beside its one candidate run, so it has no pairs to
        // test a guard on: its decisions keep the popular loop's behaviour (no guards) and say so.
        if done.verdict == Verdict::Accept
            && !self.target.guards.is_empty()
            && done.rule.is_greedy()
        {
            decision.extra.insert(
                "guards_not_tested".into(),
                serde_json::json!("a greedy rule makes no side-by-side pairs to test guards on"),
            );
        } else if done.verdict == Verdict::Accept && !self.target.guards.is_empty() {
            // The guards are tested only where they can change the outcome.
            let latest = self.rec.state()?;
            let runs = latest.change(id).map(|c| c.runs.as_slice()).unwrap_or(&[]);
            let results = super::guard_pairs::guard_results(&self.target.guards, runs);
            super::decision_record::apply_guards(&mut decision, results)?;
        }
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
        worktree: &Path,
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
        worktree: &Path,
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
        worktree: &Path,
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
}

fn run_value(r: &RunResult) -> RunValue {
    match value_of(r) {
        Some(v) => RunValue::Ok(v),
        None => RunValue::Crashed,
    }
}
