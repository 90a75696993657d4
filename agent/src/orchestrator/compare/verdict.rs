//! The session's final verdict: at its end, the base commit against the final trunk on
//! holdout (`[loop] verdict_pairs` fresh-seed pairs; 0 turns it off), recorded as a
//! `compare` event with `final_verdict: true`. Its time is kept out of the proposing budget
//! (`reserve_s`), so a session still ends on time.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agentloop_ledger::payload::{Compare, ExitStatus, Stage};
use agentloop_ledger::state::SessionState;
use anyhow::Result;
use git2::Oid;
use serde_json::{json, Map};

use super::{measure, remove_worktrees, Ctx, Request};
use crate::executor::budget::Stop;
use crate::orchestrator::record::Recorder;

/// The verdict's seed label (the same on resume, so recorded runs are reused).
pub const LABEL: &str = "final-verdict";
/// What the session_end records and `status` shows when the trunk never moved.
pub const NO_MERGES: &str = "no merges: nothing to compare";

/// How the verdict ended.
pub enum Verdict {
    /// `verdict_pairs = 0`.
    Off,
    NoMerges,
    Recorded(Box<Compare>),
    /// The budget ran out or the user stopped it (its runs so far are recorded).
    Stopped,
    /// A build or run failed: named here, no comparison recorded.
    Failed(String),
}

impl Verdict {
    /// The line the end of session, `status` and the report show; `None` when off.
    pub fn line(&self) -> Option<String> {
        match self {
            Verdict::Off => None,
            Verdict::NoMerges => Some(NO_MERGES.into()),
            Verdict::Recorded(c) => Some(c.gain_line()),
            Verdict::Stopped => Some("not finished: stopped during the final comparison".into()),
            Verdict::Failed(why) => Some(format!("failed: {why}")),
        }
    }
}

/// Runs the verdict (or finds it recorded, after a resume). The worktrees go however it ends.
pub fn run(
    ctx: &Ctx,
    history: &SessionState,
    pairs: u32,
    events: &[agentloop_ledger::Event],
) -> Result<Verdict> {
    if pairs == 0 {
        return Ok(Verdict::Off);
    }
    let base = &history.start.base_commit;
    let trunk = &history.trunk_commit;
    if base == trunk {
        return Ok(Verdict::NoMerges);
    }
    if let Some(c) = history.final_verdict().filter(|c| &c.b_commit == trunk) {
        return Ok(Verdict::Recorded(Box::new(c.clone())));
    }
    let mut extra = Map::new();
    extra.insert("final_verdict".into(), json!(true));
    let req = Request {
        a_rev: format!("base {}", &base[..10.min(base.len())]),
        b_rev: history.start.trunk_branch.clone(),
        a: Oid::from_str(base)?,
        b: Oid::from_str(trunk)?,
        split: "holdout".into(),
        pairs: pairs.max(2),
        label: LABEL.into(),
        extra,
    };
    let used: BTreeSet<u64> = super::used_seeds(events, &history.session);
    let measured = measure(ctx, &req, &history.session_runs, &used);
    remove_worktrees(ctx.ws)?;
    Ok(match measured {
        Ok(Some(done)) => Verdict::Recorded(Box::new(done.event)),
        Ok(None) => Verdict::Stopped,
        Err(e) => {
            tracing::warn!("the final verdict failed: {e:#}");
            Verdict::Failed(format!("{e:#}").lines().next().unwrap_or("").to_string())
        }
    })
}

/// Seconds to keep for the verdict: its rounds of runs (two per pair, `slots` at a time) at
/// the median wall time of the session's full training runs so far, plus a quarter and 2 s
/// for restoring the builds. 0 before any run is recorded (the first runs are calibration).
pub fn reserve_s(pairs: u32, slots: usize, history: &SessionState) -> f64 {
    if pairs == 0 {
        return 0.0;
    }
    let mut walls: Vec<f64> = history
        .session_runs
        .iter()
        .chain(history.changes.iter().flat_map(|c| c.runs.iter()))
        .filter(|r| r.stage != Stage::Smoke && r.exit_status == ExitStatus::Ok)
        .filter_map(|r| r.wall_s)
        .collect();
    if walls.is_empty() {
        return 0.0;
    }
    walls.sort_by(f64::total_cmp);
    let median = walls[walls.len() / 2];
    let rounds = (2 * pairs.max(2) as usize).div_ceil(slots.max(1));
    rounds as f64 * median * 1.25 + 2.0
}

/// Keeps the verdict's time out of proposing: moves `proposing`'s deadline to `end` minus
/// [`reserve_s`] now, then again every second as runs are recorded, until `done`.
pub fn keep_time(
    ledger_path: &std::path::Path,
    session: &str,
    shared: crate::orchestrator::record::SharedProgress,
    (pairs, slots): (u32, usize),
    (proposing, end): (&Stop, Instant),
    done: &AtomicBool,
) {
    if pairs == 0 {
        return;
    }
    let Ok(ledger) = agentloop_ledger::Ledger::open(ledger_path) else {
        return;
    };
    let rec = Recorder::on_thread(ledger, session, shared);
    while !done.load(Ordering::SeqCst) {
        if let Ok(history) = rec.state() {
            reserve(proposing, end, pairs, slots, &history);
        }
        for _ in 0..10 {
            if done.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Sets `proposing`'s deadline to `end` minus the verdict's reserve for `history`.
pub fn reserve(proposing: &Stop, end: Instant, pairs: u32, slots: usize, history: &SessionState) {
    let keep = Duration::from_secs_f64(reserve_s(pairs, slots, history));
    proposing.set_deadline(end.checked_sub(keep).unwrap_or_else(Instant::now));
}
