//! The trunk side of a session: git refs reconciled with the ledger, the trunk's worktree and
//! build, and its calibration (the noise the decision rule measures changes against).

use std::path::{Path, PathBuf};

use agentloop_guardrails::decision::Calibration as NoiseCalibration;
use agentloop_guardrails::target::TargetSpec;
use agentloop_ledger::payload::{Arm, Calibration, RunResult, SeedReplays, SeedValue, Stage};
use anyhow::{bail, Context, Result};
use git2::Oid;
use serde_json::{json, Map, Value};

use super::artifacts::BuildCache;
use super::budget::Stop;
use super::history::SessionHistory;
use super::process::{self, Exit, Finished, Job};
use super::record::Recorder;
use super::runs::{self, value_of, RunSpec};
use super::seeds::seed_for;
use super::workspace::Workspace;
use crate::executor::Executor;
use crate::git::{change_branch, trunk_branch, REJECTED_PREFIX};

/// The worktree (and its branch) where every build runs.
pub const BUILD_WORKTREE: &str = "build";
pub const BUILD_BRANCH: &str = "agentloop/changes/_build";

/// Builds share one build worktree and one cargo target directory: one build at a time.
static BUILD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// Workers that find the trunk uncalibrated calibrate it once, not once each.
static CALIBRATION_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn hold(lock: &'static std::sync::Mutex<()>) -> std::sync::MutexGuard<'static, ()> {
    lock.lock().unwrap_or_else(|e| e.into_inner())
}

/// A trunk ready for a change: built, and calibrated.
pub struct Ready {
    pub commit: Oid,
    pub worktree: PathBuf,
    pub noise: NoiseCalibration,
}

pub struct Trunk<'a> {
    pub ws: &'a Workspace,
    pub target: &'a TargetSpec,
    pub rec: &'a Recorder,
    pub session: String,
    pub env: Vec<(String, String)>,
    /// Where training runs execute.
    pub exec: &'a dyn Executor,
    pub stop: Stop,
    pub cache: BuildCache,
    /// With several workers, each has its own trunk worktree, pinned to the trunk commit its
    /// change started from (the shared one would move under a running baseline at a merge).
    pub worker: Option<usize>,
}

impl<'a> Trunk<'a> {
    pub fn new(
        ws: &'a Workspace,
        target: &'a TargetSpec,
        rec: &'a Recorder,
        session: &str,
        env: Vec<(String, String)>,
        exec: &'a dyn Executor,
        stop: Stop,
    ) -> Trunk<'a> {
        Trunk {
            ws,
            target,
            rec,
            session: session.to_string(),
            env,
            exec,
            stop,
            cache: BuildCache::new(&ws.state),
            worker: None,
        }
    }

    /// The trunk as worker `i` of several sees it.
    pub fn for_worker(mut self, i: usize) -> Trunk<'a> {
        self.worker = Some(i);
        self
    }

    pub fn worktree_name(&self) -> String {
        match self.worker {
            None => format!("trunk-{}", self.session),
            Some(i) => format!("trunk-{}-w{i}", self.session),
        }
    }

    /// The branch the trunk worktree has checked out: the trunk itself, or a worker's pin.
    fn worktree_branch(&self) -> String {
        match self.worker {
            None => trunk_branch(&self.session),
            Some(i) => worker_branch(&self.session, i),
        }
    }

    /// Makes git agree with the ledger after a kill: the trunk ref where the last merge or
    /// rollback put it, discarded branches under `refs/agentloop/rejected/`, and no worktree
    /// left but the trunk's and the in-flight change's.
    pub fn reconcile(&self, history: &SessionHistory) -> Result<()> {
        let git = &self.ws.git;
        let stale = git.clear_stale_locks()?;
        if stale > 0 {
            tracing::info!("removed {stale} stale ref lock(s) left by a killed run");
        }
        let trunk = trunk_branch(&self.session);
        let want = Oid::from_str(&history.trunk_commit)
            .with_context(|| format!("ledger trunk commit {:?}", history.trunk_commit))?;
        if git.branch_tip(&trunk)? != Some(want) {
            tracing::info!("moving {trunk} to {want}, where the ledger says it is");
            git.set_branch(&trunk, want, "agentloop: reconcile with the ledger")?;
        }
        for c in &history.changes {
            if c.discard.is_some() {
                git.reject_branch(&change_branch(&self.session, &c.id))?;
            }
        }
        let in_flight: Vec<&str> = history.in_flight_all().map(|c| c.id.as_str()).collect();
        let trunk_trees = format!("trunk-{}", self.session);
        for name in git.loop_worktrees()? {
            let keep = name.starts_with(&trunk_trees)
                || name == BUILD_WORKTREE
                || in_flight.contains(&name.as_str());
            if !keep {
                tracing::info!("removing stray worktree {name}");
                git.remove_worktree(&name)?;
            }
        }
        Ok(())
    }

    /// Removes every worktree of the loop (at the end of a session).
    pub fn clean_all(&self) -> Result<()> {
        for name in self.ws.git.loop_worktrees()? {
            self.ws.git.remove_worktree(&name)?;
        }
        self.ws.git.delete_branch(BUILD_BRANCH)?;
        let pins = format!("refs/heads/{}*", change_branch(&self.session, "_trunk-w"));
        let names: Vec<String> = self
            .ws
            .git
            .repo()
            .references_glob(&pins)?
            .filter_map(|r| {
                r.ok()?
                    .name()
                    .map(|n| n.trim_start_matches("refs/heads/").to_string())
            })
            .collect();
        for name in names {
            self.ws.git.delete_branch(&name)?;
        }
        super::audit::remove_worktrees(self.ws)?;
        Ok(())
    }

    /// The trunk checked out, built and calibrated; `None` when the loop was stopped meanwhile.
    pub fn ready(&mut self, history: &SessionHistory) -> Result<Option<Ready>> {
        let commit = Oid::from_str(&history.trunk_commit)?;
        let worktree = self.checkout(commit)?;
        let tree = self.ws.git.tree_of(commit)?.to_string();
        match ensure_built(
            self.ws,
            self.target,
            &self.cache,
            &self.env,
            &self.stop,
            &worktree,
            &tree,
        )? {
            BuildState::Stopped => return Ok(None),
            BuildState::Failed(f) => bail!(
                "the trunk {commit} does not build (log {}):\n{}",
                f.log.display(),
                runs::tail_lines(&f.tail, 30)
            ),
            BuildState::Ready => {}
        }
        let noise = match self.current_calibration(history, commit)? {
            Some(n) => n,
            None => {
                let _calibrating = hold(&CALIBRATION_LOCK);
                // Another worker may have calibrated this trunk while this one waited.
                let latest = super::session::load(&self.rec.ledger, &self.session)?;
                match self.current_calibration(&latest, commit)? {
                    Some(n) => n,
                    None => match self.calibrate(&latest, commit, &worktree)? {
                        Some(n) => n,
                        None => return Ok(None),
                    },
                }
            }
        };
        Ok(Some(Ready {
            commit,
            worktree,
            noise,
        }))
    }

    fn checkout(&self, commit: Oid) -> Result<PathBuf> {
        let git = &self.ws.git;
        let name = self.worktree_name();
        let path = git.worktrees_dir().join(&name);
        let registered = git.repo().find_worktree(&name).is_ok();
        if self.worker.is_some() {
            git.set_branch(&self.worktree_branch(), commit, "agentloop: worker trunk")?;
        }
        if !registered || !path.join(".git").exists() {
            git.add_worktree(&name, &self.worktree_branch())?;
        }
        // The worktree's HEAD follows the trunk ref by itself (it is the branch), but its files
        // do not: bring them to the trunk commit every time (only changed files are written).
        git.refresh_worktree(&path)?;
        let _ = commit;
        Ok(path)
    }

    /// The last calibration still valid for `commit`: same trunk, or fewer merges since it
    /// than the rule's recalibration interval and no rollback in between.
    fn current_calibration(
        &self,
        history: &SessionHistory,
        commit: Oid,
    ) -> Result<Option<NoiseCalibration>> {
        let Some((seq, last)) = history.calibrations.last() else {
            return Ok(None);
        };
        let merges_since = history
            .changes
            .iter()
            .filter(|c| matches!(&c.merge, Some((s, _)) if s > seq))
            .count();
        let rolled_back_since = history
            .changes
            .iter()
            .any(|c| matches!(&c.rollback, Some((s, _)) if s > seq));
        let fresh = last.trunk_commit == commit.to_string()
            || (!rolled_back_since
                && merges_since < self.target.decision.recalibrate_every_merges.max(1));
        if !fresh {
            return Ok(None);
        }
        let noise: NoiseCalibration = serde_json::from_value(
            last.extra
                .get("noise")
                .cloned()
                .context("calibration event without the decision engine's calibration")?,
        )?;
        Ok(Some(noise))
    }

    fn calibrate(
        &self,
        history: &SessionHistory,
        commit: Oid,
        worktree: &Path,
    ) -> Result<Option<NoiseCalibration>> {
        match measure(
            self.ws,
            self.target,
            self.rec,
            &self.session,
            &self.env,
            self.exec,
            &self.stop,
            history,
            commit,
            worktree,
            Stage::Calibration,
        )? {
            Some(n) => Ok(Some(n)),
            None => Ok(None),
        }
    }
}

/// Measures the noise of `commit`: baseline seeds plus same-seed replays, each run recorded
/// (and reused on resume), then a calibration event. Also the re-measurement after a rollback.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    ws: &Workspace,
    target: &TargetSpec,
    rec: &Recorder,
    session: &str,
    env: &[(String, String)],
    exec: &dyn Executor,
    stop: &Stop,
    history: &SessionHistory,
    commit: Oid,
    worktree: &Path,
    stage: Stage,
) -> Result<Option<NoiseCalibration>> {
    let rule = &target.decision;
    let seeds = rule.min_baseline_seeds.max(2);
    let replays = rule.min_replays;
    let label = format!("calibration:{commit}");
    let plan: Vec<CalibrationRun> = (0..(seeds + replays))
        .map(|i| {
            let (index, role) = if i < seeds {
                (i, "baseline")
            } else {
                (i - seeds, "replay")
            };
            let out = ws.state.join("runs").join(session).join(format!(
                "{}-{}-{role}-{index}",
                stage_name(stage),
                &commit.to_string()[..10]
            ));
            CalibrationRun {
                seed: seed_for(session, None, &label, index as u32),
                role,
                out,
            }
        })
        .collect();
    let mut values: Vec<Option<f64>> = plan
        .iter()
        .map(|p| {
            history
                .session_runs
                .iter()
                .find(|r| {
                    r.commit == commit.to_string()
                        && r.seed == p.seed
                        && r.stage == stage
                        && r.extra.get("role").and_then(Value::as_str) == Some(p.role)
                        && value_of(r).is_some()
                })
                .and_then(value_of)
        })
        .collect();
    let missing: Vec<usize> = (0..plan.len()).filter(|&k| values[k].is_none()).collect();
    let run = |k: usize| -> Result<CalibrationTry> {
        let p = &plan[k];
        let spec = RunSpec {
            arm: Arm::Baseline,
            stage,
            commit: &commit.to_string(),
            seed: p.seed,
            split: "val",
            budget: &target.train.budget,
            worktree,
            out: p.out.clone(),
        };
        let Some(mut r) = runs::run(target, &spec, env, exec, stop)? else {
            return Ok(CalibrationTry::Stopped);
        };
        r.extra.insert("role".into(), Value::String(p.role.into()));
        Ok(CalibrationTry::Ran(Box::new(r)))
    };
    let failed_thrice = |k: usize, r: &RunResult| {
        anyhow::anyhow!(
            "the trunk's training run (seed {}) failed 3 times ({:?}); see {}",
            plan[k].seed,
            r.exit_status,
            plan[k].out.join("run.log").display()
        )
    };
    if exec.slots() > 1 && missing.len() > 1 {
        // Fanned out over the executor's slots; each run recorded here, as it finishes.
        let queue = std::sync::Mutex::new(missing.into_iter());
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<CalibrationTry>)>();
        let mut stopped = false;
        let mut failure: Option<anyhow::Error> = None;
        std::thread::scope(|scope| {
            for _ in 0..exec.slots() {
                let (tx, queue, run) = (tx.clone(), &queue, &run);
                scope.spawn(move || loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some(k) = next else { return };
                    for _ in 0..3 {
                        let tried = run(k);
                        let again =
                            matches!(&tried, Ok(CalibrationTry::Ran(r)) if value_of(r).is_none());
                        let _ = tx.send((k, tried));
                        if !again {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            let mut tries = vec![0u32; plan.len()];
            for (k, tried) in rx {
                match tried {
                    Err(e) => failure = failure.take().or(Some(e)),
                    Ok(CalibrationTry::Stopped) => stopped = true,
                    Ok(CalibrationTry::Ran(r)) => {
                        if let Err(e) = rec.append(None, r.as_ref()) {
                            failure = failure.take().or(Some(e));
                            stop.request("recording a calibration run failed");
                            continue;
                        }
                        tries[k] += 1;
                        values[k] = value_of(&r);
                        if values[k].is_none() && tries[k] >= 3 {
                            failure = failure.take().or(Some(failed_thrice(k, &r)));
                        }
                    }
                }
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        if stopped {
            return Ok(None);
        }
    } else {
        for k in missing {
            let mut tries = 0;
            loop {
                tries += 1;
                let r = match run(k)? {
                    CalibrationTry::Stopped => return Ok(None),
                    CalibrationTry::Ran(r) => *r,
                };
                rec.append(None, &r)?;
                if let Some(v) = value_of(&r) {
                    values[k] = Some(v);
                    break;
                }
                if tries >= 3 {
                    return Err(failed_thrice(k, &r));
                }
            }
        }
    }
    let mut baseline = Vec::new();
    let mut replay_values = Vec::new();
    for (p, v) in plan.iter().zip(&values) {
        let v = v.context("a calibration run has no value")?;
        if p.role == "baseline" {
            baseline.push((p.seed, v));
        } else {
            replay_values.push((p.seed, vec![v]));
        }
    }
    let noise = NoiseCalibration::from_runs_for(rule, &baseline, &replay_values)
        .map_err(|e| anyhow::anyhow!("calibrating the trunk {commit}: {e}"))?;
    let mut extra = Map::new();
    extra.insert("noise".into(), serde_json::to_value(&noise)?);
    extra.insert("stage".into(), json!(stage_name(stage)));
    rec.append(
        None,
        &Calibration {
            trunk_commit: commit.to_string(),
            baseline: baseline
                .iter()
                .map(|&(seed, value)| SeedValue { seed, value })
                .collect(),
            replays: replay_values
                .iter()
                .map(|(seed, values)| SeedReplays {
                    seed: *seed,
                    values: values.clone(),
                })
                .collect(),
            run_sd: noise.run_sd,
            paired_sd: Some(noise.paired_null_sd),
            nondeterminism_floor: Some(noise.nondeterminism_sd),
            min_effect: noise.min_effect(rule),
            extra,
        },
    )?;
    Ok(Some(noise))
}

/// One run of a calibration: which seed, which role, where its output goes.
struct CalibrationRun {
    seed: u64,
    role: &'static str,
    out: PathBuf,
}

enum CalibrationTry {
    Ran(Box<RunResult>),
    Stopped,
}

pub fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Calibration => "calibration",
        Stage::Smoke => "smoke",
        Stage::Screen => "screen",
        Stage::Confirm => "confirm",
        Stage::Audit => "audit",
        Stage::Remeasure => "remeasure",
    }
}

pub enum BuildState {
    Ready,
    Failed(Finished),
    Stopped,
}

/// The worktree's build outputs for `tree`, from the cache or by building (then cached).
pub fn ensure_built(
    ws: &Workspace,
    target: &TargetSpec,
    cache: &BuildCache,
    env: &[(String, String)],
    stop: &Stop,
    worktree: &Path,
    tree: &str,
) -> Result<BuildState> {
    let _one_build_at_a_time = hold(&BUILD_LOCK);
    if cache.restore(tree, worktree)? {
        return Ok(BuildState::Ready);
    }
    // Built in one fixed worktree, so the build tool sees the same paths every time and
    // recompiles only what changed (a config-only change rebuilds nothing).
    let commit = git2::Repository::open(worktree)?
        .head()?
        .peel_to_commit()?
        .id();
    let build_dir = build_worktree(ws, commit)?;
    let f = build(ws, target, env, stop, &build_dir, tree)?;
    match f.exit {
        Exit::Stopped => Ok(BuildState::Stopped),
        _ if f.succeeded() => {
            cache.store(tree, &build_dir)?;
            cache.restore(tree, worktree)?;
            Ok(BuildState::Ready)
        }
        _ => Ok(BuildState::Failed(f)),
    }
}

/// The worktree every build runs in, checked out at `commit`.
fn build_worktree(ws: &Workspace, commit: Oid) -> Result<PathBuf> {
    let git = &ws.git;
    git.set_branch(BUILD_BRANCH, commit, "agentloop: build")?;
    let path = git.worktrees_dir().join(BUILD_WORKTREE);
    if git.repo().find_worktree(BUILD_WORKTREE).is_ok() && path.join(".git").exists() {
        git.refresh_worktree(&path)?;
        Ok(path)
    } else {
        Ok(git.add_worktree(BUILD_WORKTREE, BUILD_BRANCH)?)
    }
}

/// Runs the target's build command in `worktree` (log under `.agentloop/logs/`).
pub fn build(
    ws: &Workspace,
    target: &TargetSpec,
    env: &[(String, String)],
    stop: &Stop,
    worktree: &Path,
    tree: &str,
) -> Result<Finished> {
    let target_dir = env
        .iter()
        .find(|(k, _)| k == "CARGO_TARGET_DIR")
        .map(|(_, v)| PathBuf::from(v))
        .context("internal: builds need CARGO_TARGET_DIR")?;
    let command = crate::sandbox::build_command(target, worktree, &target_dir)?;
    let job = Job {
        command: &command,
        cwd: worktree,
        env: env.to_vec(),
        timeout: target.build.timeout,
        memory_limit: None,
        divergence: None,
        log: ws.state.join("logs").join(format!("build-{tree}.log")),
    };
    let finished = process::run(&job, stop).context("starting the build command")?;
    crate::sandbox::redact_files(&[&finished.log]);
    Ok(finished)
}

/// The branch worker `i`'s trunk worktree follows (beside the change branches, like them).
pub fn worker_branch(session: &str, i: usize) -> String {
    change_branch(session, &format!("_trunk-w{i}"))
}

/// Keeps a run or change reference readable in logs.
pub fn kept_ref(session: &str, change: &str) -> String {
    format!("{REJECTED_PREFIX}{}", change_branch(session, change))
}

/// Recorded runs of one change matching a stage, arm and seed, in order.
pub fn recorded(
    runs: &[RunResult],
    stage: Stage,
    arm: Arm,
    seed: u64,
) -> impl Iterator<Item = &RunResult> {
    runs.iter()
        .filter(move |r| r.stage == stage && r.arm == arm && r.seed == seed)
}
