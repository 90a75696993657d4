//! The `--timeout` watchdog: what it snapshots of the run, and the `timed_out` record it writes.

use super::records::{finish, finish_training, split_name};
use super::RunArgs;
use crate::eval::EVAL_TOKENS;
use crate::metrics::{self, Metrics, Status};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the timeout watchdog needs to write a `timed_out` record.
#[derive(Clone)]
pub(super) struct Snapshot {
    pub(super) steps: u64,
    pub(super) tokens: u64,
    pub(super) train_loss: Option<f64>,
    pub(super) params: usize,
    pub(super) flops_per_token: Option<f64>,
    pub(super) finished: bool,
}

/// Writes a `timed_out` record and exits 4 when the run outlives `--timeout`, wherever it is
/// stuck (a step, the evaluation, a checkpoint).
pub(super) fn spawn_watchdog(
    args: &RunArgs,
    remaining: Duration,
    started: Instant,
    snapshot: Arc<Mutex<Snapshot>>,
) {
    let args = args.clone();
    std::thread::spawn(move || {
        std::thread::sleep(remaining);
        let snap = snapshot.lock().unwrap_or_else(|p| p.into_inner());
        if snap.finished {
            return;
        }
        let wall_s = started.elapsed().as_secs_f64();
        let metrics = Metrics {
            val_bpb: None,
            split: split_name(args.split),
            train_loss: snap.train_loss,
            tokens: snap.tokens,
            steps: snap.steps,
            wall_s,
            tokens_per_s: snap.tokens as f64 / wall_s.max(1e-9),
            peak_mem_bytes: metrics::reported_peak_mem_bytes(),
            params: snap.params,
            seed: args.seed,
            status: Status::TimedOut,
            eval_tokens: EVAL_TOKENS,
            device: format!("{:?}", args.device).to_lowercase(),
            flops_per_token: snap.flops_per_token,
            flops: snap.flops_per_token.map(|f| f * snap.tokens as f64),
            flops_per_s: None,
            mfu: None,
            error: Some(format!(
                "the run exceeded its timeout of {}",
                humantime::format_duration(args.timeout.unwrap_or_default())
            )),
        };
        let code = match args.split {
            Some(_) => finish(&args.out, &metrics),
            None => finish_training(&args.out, &metrics),
        };
        std::process::exit(code);
    });
}
