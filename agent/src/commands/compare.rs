//! `agentloop compare A B`: a paired measurement of two commits on fresh seeds, recorded in
//! the ledger as a `compare` event (its own session label, so no session's state changes).

use std::path::Path;

use agentloop_guardrails::target::TargetSpec;
use agentloop_ledger::Ledger;
use anyhow::{bail, Context, Result};
use git2::Oid;
use serde_json::{json, Map, Value};

use crate::cli::CompareArgs;
use crate::executor::budget::Stop;
use crate::orchestrator::build::{BUILD_BRANCH, BUILD_WORKTREE};
use crate::orchestrator::compare::{self, stats, Compared, Ctx, Request};
use crate::orchestrator::record::Recorder;
use crate::orchestrator::workspace::Workspace;

pub fn run(repo: Option<&Path>, args: &CompareArgs) -> Result<i32> {
    if !["holdout", "val"].contains(&args.split.as_str()) {
        bail!("--split must be holdout or val, not {:?}", args.split);
    }
    let ws = Workspace::open(repo)?;
    let _lock = ws.lock()?;
    let target = TargetSpec::load(&ws.root).context("reading the target description")?;
    // Both revisions resolve before anything is built, run or recorded.
    let a = resolve(&ws, &args.a)?;
    let b = resolve(&ws, &args.b)?;
    let sandbox = crate::sandbox::set_up(&ws, &target, args.no_sandbox, None)?;
    let target_dir = super::start::shared_target_dir(&ws.root, args.target_dir.as_deref());
    let ledger = Ledger::open(ws.ledger_path())
        .with_context(|| format!("opening the ledger {}", ws.ledger_path().display()))?;
    let used = compare::used_seeds(&ledger.events()?, "");
    let suffix = &agentloop_ledger::new_change_id()[1..5];
    let session = format!(
        "compare-{}-{suffix}",
        chrono::Utc::now().format("%Y%m%d-%H%M%S")
    );
    let rec = Recorder::new(ledger, &session);
    let env = vec![(
        "CARGO_TARGET_DIR".to_string(),
        target_dir.to_string_lossy().into_owned(),
    )];
    let exec = crate::executor::for_target(&target)?;
    let stop = Stop::never();
    stop.on_signals();
    let mut extra = Map::new();
    extra.insert("sandbox".into(), sandbox);
    extra.insert("executor".into(), json!(exec.describe()));
    let req = Request {
        a_rev: args.a.clone(),
        b_rev: args.b.clone(),
        a,
        b,
        split: args.split.clone(),
        pairs: args.pairs,
        label: session.clone(),
        extra,
    };
    let ctx = Ctx {
        ws: &ws,
        target: &target,
        rec: &rec,
        env: &env,
        exec: exec.as_ref(),
        stop: &stop,
    };
    let started = std::time::Instant::now();
    let measured = compare::measure(&ctx, &req, &[], &used);
    // Nothing else runs here (the lock): the build worktree goes too, as after a rollback.
    let cleaned = compare::remove_worktrees(&ws).and_then(|()| {
        ws.git.remove_worktree(BUILD_WORKTREE)?;
        ws.git.delete_branch(BUILD_BRANCH)?;
        Ok(())
    });
    let Some(done) = measured? else {
        eprintln!("interrupted: the runs that finished are recorded, no comparison is");
        return Ok(agentloop_guardrails::exit_code::INTERRUPTED);
    };
    cleaned?;
    let wall_s = started.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&as_json(&done, &session, wall_s))?
        );
    } else {
        print!("{}", text(&done, wall_s));
    }
    Ok(agentloop_guardrails::exit_code::OK)
}

fn resolve(ws: &Workspace, rev: &str) -> Result<Oid> {
    let object = ws
        .git
        .repo()
        .revparse_single(rev)
        .map_err(|e| anyhow::anyhow!("unknown revision {rev:?}: {}", e.message()))?;
    let commit = object
        .peel_to_commit()
        .map_err(|e| anyhow::anyhow!("revision {rev:?} is not a commit: {}", e.message()))?;
    Ok(commit.id())
}

/// The machine-readable result (`--json`).
pub fn as_json(done: &Compared, session: &str, wall_s: f64) -> Value {
    let c = &done.event;
    let s = &done.stats;
    json!({
        "a": {"rev": c.a_rev, "commit": c.a_commit},
        "b": {"rev": c.b_rev, "commit": c.b_commit},
        "split": c.split,
        "metric": c.metric,
        "lower_is_better": true,
        "n": s.n,
        "mean_diff": s.mean_diff,
        "sd_diff": s.sd_diff,
        "ci_low": s.ci_low,
        "ci_high": s.ci_high,
        "p_value": s.p_value,
        "gain": -s.mean_diff,
        "gain_ci": [-s.ci_high, -s.ci_low],
        "verdict": stats::verdict(s),
        "pairs": c.pairs.iter().map(|p| json!({"seed": p.seed, "a": p.a, "b": p.b, "diff": p.b - p.a})).collect::<Vec<_>>(),
        "runs": 2 * c.pairs.len(),
        "wall_s": wall_s,
        "ledger_seq": done.seq,
        "session": session,
    })
}

fn text(done: &Compared, wall_s: f64) -> String {
    let c = &done.event;
    let s = &done.stats;
    let short = |x: &str| x.chars().take(10).collect::<String>();
    let mut out = format!(
        "compare A = {} ({}) vs B = {} ({}) on {}, {} fresh seeds; {} is minimized\n",
        c.a_rev,
        short(&c.a_commit),
        c.b_rev,
        short(&c.b_commit),
        c.split,
        s.n,
        c.metric
    );
    out += &format!(
        "{:>12}  {:>12}  {:>12}  {:>12}\n",
        "seed", "A", "B", "B - A"
    );
    for p in &c.pairs {
        out += &format!(
            "{:>12}  {:>12.6}  {:>12.6}  {:>+12.6}\n",
            p.seed,
            p.a,
            p.b,
            p.b - p.a
        );
    }
    out += &format!(
        "B - A: {:+.6} {}, 95% CI [{:+.6}, {:+.6}], p = {:.4} (paired t, one-sided: B better)\n",
        s.mean_diff, c.metric, s.ci_low, s.ci_high, s.p_value
    );
    out += &match stats::verdict(s) {
        "b_better" => format!("B is better: {}\n", c.gain_line()),
        "a_better" => format!("B is worse: {}\n", c.gain_line()),
        _ => format!(
            "no significant difference (the interval contains 0): {}\n",
            c.gain_line()
        ),
    };
    out += &format!(
        "recorded as ledger event {} ({} runs, {:.0}s)\n",
        done.seq,
        2 * c.pairs.len(),
        wall_s
    );
    out
}
