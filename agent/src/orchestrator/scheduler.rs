//! What decides which change runs next, and when the loop stops taking new ones: the worker
//! count, `--max-changes` and the circuit breaker.

use std::path::PathBuf;
use std::time::Duration;

use agentloop_ledger::payload::DecisionOutcome;
use serde_json::Value;

use crate::executor::ExecutorConfig;
use agentloop_ledger::state::SessionState;

#[derive(Debug, Clone)]
pub struct Options {
    pub budget: Duration,
    pub max_changes: Option<u32>,
    pub agent_kind: String,
    pub model: Option<String>,
    /// The one cargo target directory every build shares.
    pub target_dir: PathBuf,
    /// Fix attempts after a failed build (each one a new proposal, recorded).
    pub fix_attempts: u32,
    /// Consecutive crashes / policy rejections / build failures that pause the loop.
    pub breaker_k: u32,
    /// How live progress is shown (a bar on a terminal, plain lines otherwise).
    pub progress: crate::progress::Mode,
    /// `--workers N`: changes in flight at once (default: `[executor] slots`, or on a resume
    /// the number the session started with).
    pub workers: Option<usize>,
}

/// `--workers`, else what the session started with, else one per two `[executor] slots`.
pub(crate) fn workers_for(
    opts: &Options,
    history: &SessionState,
    config: &ExecutorConfig,
) -> usize {
    let recorded = history
        .start
        .extra
        .get("workers")
        .and_then(Value::as_u64)
        .map(|n| n as usize);
    opts.workers
        .or(recorded)
        .unwrap_or(config.default_workers())
        .max(1)
}

/// K consecutive crashed, policy-rejected or unbuildable changes pause the loop; the count
/// starts again after each pause (`pause.rs`).
pub(crate) fn breaker_tripped(history: &SessionState, k: u32) -> Option<String> {
    if k == 0 {
        return None;
    }
    let after = history.breaker_pauses.last().map_or(0, |(seq, _)| *seq);
    let bad: Vec<_> = history
        .changes
        .iter()
        .filter(|c| matches!(&c.decision, Some((seq, _)) if *seq > after))
        .filter_map(|c| c.counted_decision())
        .rev()
        .take(k as usize)
        .collect();
    if bad.len() < k as usize {
        return None;
    }
    let all_bad = bad.iter().all(|d| {
        matches!(
            d.outcome,
            DecisionOutcome::Crashed
                | DecisionOutcome::PolicyRejected
                | DecisionOutcome::BuildFailed
        )
    });
    all_bad.then(|| {
        let reasons: Vec<String> = bad
            .iter()
            .rev()
            .map(|d| {
                d.reason
                    .clone()
                    .unwrap_or_else(|| format!("{:?}", d.outcome))
            })
            .collect();
        format!(
            "{k} consecutive changes crashed or were refused: {}",
            reasons.join("; ")
        )
    })
}
