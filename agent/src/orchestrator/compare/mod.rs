//! A paired measurement of two commits (`agentloop compare`, and the session's final
//! verdict): both built through the loop's one build path, trained on the same fresh seeds
//! (the two runs of a seed side by side on the executor's slots), every run recorded as a
//! `run_result`, then one `compare` event with the per-seed values and their statistics.

pub mod stats;
pub mod verdict;

use std::collections::BTreeSet;
use std::path::PathBuf;

use agentloop_guardrails::target::TargetSpec;
use agentloop_ledger::payload::{Arm, Compare, ComparePair, RunResult, Stage};
use anyhow::{bail, Context, Result};
use git2::Oid;
use serde_json::{json, Map, Value};

use super::artifacts::BuildCache;
use super::build::{ensure_built, BuildState};
use super::record::Recorder;
use super::runs::{self, value_of, RunSpec};
use super::seeds::seed_for;
use super::workspace::Workspace;
use crate::executor::budget::Stop;
use crate::executor::Executor;

/// The two worktrees a comparison builds and runs in (removed when it ends).
pub const WORKTREES: [&str; 2] = ["compare-a", "compare-b"];

/// Where a comparison runs, and what it records into.
pub struct Ctx<'a> {
    pub ws: &'a Workspace,
    pub target: &'a TargetSpec,
    pub rec: &'a Recorder,
    pub env: &'a [(String, String)],
    pub exec: &'a dyn Executor,
    pub stop: &'a Stop,
}

/// What to compare.
pub struct Request {
    pub a_rev: String,
    pub b_rev: String,
    pub a: Oid,
    pub b: Oid,
    pub split: String,
    pub pairs: u32,
    /// Names the seeds (with the recorder's session): the same label asks for the same seeds,
    /// so a resumed verdict reuses its recorded runs.
    pub label: String,
    /// Added to the `compare` event as it is (e.g. `verdict: true`).
    pub extra: Map<String, Value>,
}

/// The recorded comparison and its ledger position.
pub struct Compared {
    pub event: Compare,
    pub seq: i64,
    pub stats: stats::Stats,
}

/// Builds both commits, runs the pairs, records the `compare` event. `None` when stopped
/// (the runs that finished are recorded; no `compare` event). `recorded`: runs of this
/// recorder's session already in the ledger (reused by label, side and seed); `used_seeds`:
/// seeds the session has trained on otherwise (calibration, common control, audits), skipped.
pub fn measure(
    ctx: &Ctx,
    req: &Request,
    recorded: &[RunResult],
    used_seeds: &BTreeSet<u64>,
) -> Result<Option<Compared>> {
    if req.pairs < 2 {
        bail!(
            "a comparison needs at least 2 pairs (--pairs), got {}",
            req.pairs
        );
    }
    let sides = [("a", &req.a_rev, req.a), ("b", &req.b_rev, req.b)];
    let mut worktrees = Vec::new();
    for ((side, rev, commit), name) in sides.iter().zip(WORKTREES) {
        match checkout(ctx, name, *commit)
            .with_context(|| format!("{} ({rev}, commit {commit})", side.to_uppercase()))?
        {
            Some(path) => worktrees.push(path),
            None => return Ok(None),
        }
    }
    let seeds = fresh_seeds(&ctx.rec.session, &req.label, req.pairs, used_seeds);
    let mut values = vec![[None::<f64>; 2]; seeds.len()];
    let mut jobs = Vec::new();
    for (i, &seed) in seeds.iter().enumerate() {
        for (s, (side, _, commit)) in sides.iter().enumerate() {
            let reused = recorded.iter().find(|r| {
                r.stage == Stage::Compare
                    && r.seed == seed
                    && r.commit == commit.to_string()
                    && r.split == req.split
                    && r.extra.get("compare").and_then(Value::as_str) == Some(&req.label)
                    && r.extra.get("side").and_then(Value::as_str) == Some(*side)
            });
            match reused.and_then(value_of) {
                Some(v) => values[i][s] = Some(v),
                None => jobs.push((i, s)),
            }
        }
    }
    // The runs' threads see only what a run needs (the git and ledger handles stay here).
    let (target, env, exec, stop) = (ctx.target, ctx.env, ctx.exec, ctx.stop);
    let runs_dir = ctx.ws.state.join("runs").join(&ctx.rec.session);
    let out_of = |side: &str, commit: &str, seed: u64| {
        runs_dir.join(format!("compare-{side}-{}-{seed}", &commit[..10]))
    };
    let run_one = |i: usize, s: usize| -> Result<Option<RunResult>> {
        let (side, _, commit) = sides[s];
        let commit = commit.to_string();
        let spec = RunSpec {
            arm: if s == 0 {
                Arm::Baseline
            } else {
                Arm::Candidate
            },
            stage: Stage::Compare,
            commit: &commit,
            seed: seeds[i],
            split: &req.split,
            budget: &target.train.budget,
            worktree: &worktrees[s],
            out: out_of(side, &commit, seeds[i]),
        };
        let Some(mut r) = runs::run(target, &spec, env, exec, stop)? else {
            return Ok(None);
        };
        r.extra.insert("compare".into(), json!(req.label));
        r.extra.insert("side".into(), json!(side));
        Ok(Some(r))
    };
    // Both runs of a seed are next to each other in the queue, so with two slots a pair runs
    // side by side; a failed run ends the queue (the runs in flight finish and are recorded).
    let queue = std::sync::Mutex::new(jobs.into_iter());
    let failed = std::sync::atomic::AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, usize, Result<Option<RunResult>>)>();
    let mut problem: Option<anyhow::Error> = None;
    let mut stopped = false;
    std::thread::scope(|scope| {
        for _ in 0..ctx.exec.slots().max(1) {
            let (tx, queue, run_one, failed) = (tx.clone(), &queue, &run_one, &failed);
            scope.spawn(move || loop {
                if failed.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                let Some((i, s)) = next else { return };
                let ran = run_one(i, s);
                let _ = tx.send((i, s, ran));
            });
        }
        drop(tx);
        for (i, s, ran) in rx {
            let r = match ran {
                Ok(Some(r)) => r,
                Ok(None) => {
                    stopped = true;
                    continue;
                }
                Err(e) => {
                    failed.store(true, std::sync::atomic::Ordering::SeqCst);
                    problem = problem.take().or(Some(e));
                    continue;
                }
            };
            // Recorded as it is, crashed or not: the ledger holds every run that happened.
            if let Err(e) = ctx.rec.append(None, &r) {
                failed.store(true, std::sync::atomic::Ordering::SeqCst);
                problem = problem.take().or(Some(e));
                continue;
            }
            match value_of(&r) {
                Some(v) => values[i][s] = Some(v),
                None => {
                    failed.store(true, std::sync::atomic::Ordering::SeqCst);
                    let (side, rev, commit) = sides[s];
                    let why = r
                        .extra
                        .get("reason")
                        .and_then(Value::as_str)
                        .map(|w| format!(": {w}"))
                        .unwrap_or_default();
                    let e = anyhow::anyhow!(
                        "the run of {} ({rev}, commit {}) on seed {} ended {:?}{why}; no comparison recorded. Log: {}\n{}",
                        side.to_uppercase(),
                        &commit.to_string()[..10],
                        r.seed,
                        r.exit_status,
                        out_of(side, &commit.to_string(), r.seed)
                            .join("run.log")
                            .display(),
                        r.extra.get("log_tail").and_then(Value::as_str).unwrap_or("")
                    );
                    problem = problem.take().or(Some(e));
                }
            }
        }
    });
    if let Some(e) = problem {
        return Err(e);
    }
    if stopped {
        return Ok(None);
    }
    let pairs: Vec<ComparePair> = seeds
        .iter()
        .zip(&values)
        .map(|(&seed, v)| {
            Ok(ComparePair {
                seed,
                a: v[0].context("internal: a run of A has no value")?,
                b: v[1].context("internal: a run of B has no value")?,
            })
        })
        .collect::<Result<_>>()?;
    let s = stats::of(&pairs).map_err(|e| anyhow::anyhow!("comparing: {e}"))?;
    let mut extra = req.extra.clone();
    extra.insert("label".into(), json!(req.label));
    extra.insert("verdict".into(), json!(stats::verdict(&s)));
    let event = Compare {
        a_rev: req.a_rev.clone(),
        b_rev: req.b_rev.clone(),
        a_commit: req.a.to_string(),
        b_commit: req.b.to_string(),
        split: req.split.clone(),
        metric: ctx.target.metric.clone(),
        pairs,
        n: s.n,
        mean_diff: s.mean_diff,
        sd_diff: s.sd_diff,
        ci_low: s.ci_low,
        ci_high: s.ci_high,
        p_value: s.p_value,
        extra,
    };
    let appended = ctx.rec.append(None, &event)?;
    Ok(Some(Compared {
        event,
        seq: appended.seq,
        stats: s,
    }))
}

/// `n` seeds named by (session, label, index), skipping any in `used` (never 0, as `seed_for`).
pub fn fresh_seeds(session: &str, label: &str, n: u32, used: &BTreeSet<u64>) -> Vec<u64> {
    let mut out = Vec::new();
    let mut index = 0u32;
    while out.len() < n as usize {
        let seed = seed_for(session, None, &format!("compare:{label}"), index);
        index += 1;
        if !used.contains(&seed) && !out.contains(&seed) {
            out.push(seed);
        }
    }
    out
}

/// `commit` checked out in the worktree `name` and built (from the build cache when it can);
/// `None` when stopped during the build.
fn checkout(ctx: &Ctx, name: &str, commit: Oid) -> Result<Option<PathBuf>> {
    let git = &ctx.ws.git;
    let branch = branch_of(name);
    git.set_branch(&branch, commit, "agentloop: compare")?;
    let path = git.worktrees_dir().join(name);
    if git.repo().find_worktree(name).is_ok() && path.join(".git").exists() {
        git.refresh_worktree(&path)?;
    } else {
        git.add_worktree(name, &branch)?;
    }
    let cache = BuildCache::new(&ctx.ws.state);
    match ensure_built(ctx.ws, ctx.target, &cache, ctx.env, ctx.stop, &path, commit)? {
        BuildState::Ready { .. } => Ok(Some(path)),
        BuildState::Stopped => Ok(None),
        BuildState::Failed(f) => bail!(
            "does not build (log {}):\n{}",
            f.log.display(),
            runs::tail_lines(&f.tail, 30)
        ),
    }
}

fn branch_of(worktree: &str) -> String {
    format!("agentloop/changes/_{worktree}")
}

/// The comparison's worktrees and branches go when it ends, however it ends.
pub fn remove_worktrees(ws: &Workspace) -> Result<()> {
    for name in WORKTREES {
        ws.git.remove_worktree(name)?;
        ws.git.delete_branch(&branch_of(name))?;
    }
    Ok(())
}

/// Seeds the ledger's runs have used, except this session's own comparison runs (which a
/// resumed verdict reuses): fresh seeds avoid them.
pub fn used_seeds(events: &[agentloop_ledger::Event], session: &str) -> BTreeSet<u64> {
    events
        .iter()
        .filter(|e| e.kind == agentloop_ledger::EventKind::RunResult)
        .filter_map(|e| {
            let r: RunResult = serde_json::from_value(e.payload.clone()).ok()?;
            let own = e.session == session && r.stage == Stage::Compare;
            (!own).then_some(r.seed)
        })
        .collect()
}
