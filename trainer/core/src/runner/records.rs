//! Writing a run's records (`metrics.json`, `train_metrics.json`) and their final event line.

use super::{DeviceKind, TRAIN_METRICS};
use crate::config::Split;
use crate::metrics::{self, Metrics, Status};
use serde_json::json;
use std::path::Path;

/// `split` of the records a run writes: the evaluated split, or `train` for a run that only
/// trains (its `metrics.json`, written only on failure, then says where it failed).
pub(super) fn split_name(split: Option<Split>) -> &'static str {
    split.map_or("train", Split::name)
}

/// A train-only run: `train_metrics.json` always (what `eval` merges), `metrics.json` too when
/// training failed, so that the failure is reported as with `--split`.
pub(super) fn finish_training(out: &Path, metrics: &Metrics) -> i32 {
    if let Err(e) = metrics::write_named(out, TRAIN_METRICS, metrics) {
        eprintln!(
            "error: cannot write {}: {e}",
            out.join(TRAIN_METRICS).display()
        );
        return Status::Crashed.exit_code();
    }
    if metrics.status != Status::Ok {
        return finish(out, metrics);
    }
    metrics::emit(&json!({
        "event": "trained",
        "status": metrics.status,
        "steps": metrics.steps,
        "tokens": metrics.tokens,
        "wall_s": metrics.wall_s,
    }));
    metrics.status.exit_code()
}

/// Model FLOPs utilization, reported on CUDA only (a CPU has no meaningful bf16 peak).
pub(super) fn mfu(
    device: DeviceKind,
    tokens_per_s: f64,
    flops_per_token: Option<f64>,
) -> Option<f64> {
    (device == DeviceKind::Cuda)
        .then(|| flops_per_token.map(|f| tokens_per_s * f / metrics::peak_flops()))
        .flatten()
}

pub(super) fn finish(out: &Path, metrics: &Metrics) -> i32 {
    if let Some(error) = &metrics.error {
        eprintln!("error: {error}");
    }
    if let Err(e) = metrics::write(out, metrics) {
        eprintln!(
            "error: cannot write {}: {e}",
            out.join("metrics.json").display()
        );
        return Status::Crashed.exit_code();
    }
    metrics::emit(&json!({
        "event": "done",
        "status": metrics.status,
        "val_bpb": metrics.val_bpb,
        "split": metrics.split,
        "steps": metrics.steps,
        "tokens": metrics.tokens,
        "wall_s": metrics.wall_s,
    }));
    metrics.status.exit_code()
}
