//! Calibration: the noise of a trunk commit (baseline seeds plus same-seed replays), which
//! the decision rule measures changes against; also the re-measurement after a rollback.

use std::path::{Path, PathBuf};

use agentloop_guardrails::decision::Calibration as NoiseCalibration;
use agentloop_guardrails::decision::DecisionRule;
use agentloop_guardrails::target::TargetSpec;
use agentloop_ledger::payload::{Arm, Calibration, RunResult, SeedReplays, SeedValue, Stage};
use anyhow::{Context, Result};
use git2::Oid;
use serde_json::{json, Map, Value};

use super::build::hold;
use super::record::Recorder;
use super::runs::{self, value_of, RunSpec};
use super::seeds::seed_for;
use super::workspace::Workspace;
use crate::executor::budget::Stop;
use crate::executor::Executor;
use agentloop_ledger::state::SessionState;

/// Workers that find the trunk uncalibrated calibrate it once, not once each.
static CALIBRATION_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Held while a worker calibrates, so the others wait for its result.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    hold(&CALIBRATION_LOCK)
}

/// The last calibration still valid for `commit`: same trunk, or fewer merges since it
/// than the rule's recalibration interval and no rollback in between.
pub fn current(
    history: &SessionState,
    commit: Oid,
    rule: &DecisionRule,
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
        || (!rolled_back_since && merges_since < rule.recalibrate_every_merges.max(1));
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
    history: &SessionState,
    commit: Oid,
    worktree: &Path,
    stage: Stage,
) -> Result<Option<NoiseCalibration>> {
    let rule = &target.decision;
    let seeds = rule.min_baseline_seeds.max(rule.least_calibration_seeds());
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
                stage.as_str(),
                &commit.to_string()[..10]
            ));
            // The greedy rules measure the trunk once, on the seed every greedy run uses.
            let fixed = rule.fixed_seed.filter(|_| role == "baseline" && index == 0);
            CalibrationRun {
                seed: fixed.unwrap_or_else(|| seed_for(session, None, &label, index as u32)),
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
    extra.insert("stage".into(), json!(stage.as_str()));
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
