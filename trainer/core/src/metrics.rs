//! The run's outputs: JSON-lines progress on stdout and `metrics.json`. Frozen: the loop reads
//! these, so their shape is part of the target contract (ARCHITECTURE.md §2).

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// Dense bf16 peak of an H100 SXM (TFLOP/s), the default denominator of `mfu`;
/// `AGENTLOOP_PEAK_TFLOPS` overrides it for other GPUs.
pub const DEFAULT_PEAK_TFLOPS: f64 = 989.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Crashed,
    Diverged,
    TimedOut,
}

impl Status {
    /// The process exit code for this status (2 is bad input or usage, which writes no metrics).
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Crashed => 1,
            Status::Diverged => 3,
            Status::TimedOut => 4,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// bits per byte on `split` (the key is `val_bpb` for both splits); null unless ok.
    pub val_bpb: Option<f64>,
    pub split: &'static str,
    pub train_loss: Option<f64>,
    pub tokens: u64,
    pub steps: u64,
    pub wall_s: f64,
    pub tokens_per_s: f64,
    pub peak_mem_bytes: u64,
    pub params: usize,
    pub seed: u64,
    pub status: Status,
    pub eval_tokens: usize,
    pub device: String,
    /// Training FLOPs per token of the built model (`crate::flops`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flops_per_token: Option<f64>,
    /// Training FLOPs spent: `tokens * flops_per_token` (what a `flops` budget charges).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flops: Option<f64>,
    /// Charged training FLOPs per second of training: `tokens_per_s * flops_per_token`. The
    /// loop's `flops_per_s` guard compares it with the trunk's: compute the formula does not
    /// see (a block applied twice with the same weights) shows up as a drop here, while a
    /// bigger model that pays for itself under a FLOPs budget does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flops_per_s: Option<f64>,
    /// Model FLOPs utilization on CUDA: tokens_per_s * flops_per_token / peak FLOP/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The peak FLOP/s that `mfu` divides by.
pub fn peak_flops() -> f64 {
    std::env::var("AGENTLOOP_PEAK_TFLOPS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
        .unwrap_or(DEFAULT_PEAK_TFLOPS)
        * 1e12
}

pub use agentloop_trainer_api::memory::sample_device_memory;

/// The peak memory to report: the sampled device peak on a GPU, else the process's VmHWM.
pub fn reported_peak_mem_bytes() -> u64 {
    match agentloop_trainer_api::memory::device_peak() {
        0 => peak_mem_bytes(),
        device => device,
    }
}

/// Peak resident memory of this process (VmHWM), 0 where the platform does not report it.
pub fn peak_mem_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// One JSON line on stdout, flushed at once so a reader sees progress live.
pub fn emit(event: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{event}");
    let _ = out.flush();
}

/// Writes `DIR/metrics.json` atomically (temp file + rename).
pub fn write(out: &Path, metrics: &Metrics) -> std::io::Result<()> {
    write_named(out, "metrics.json", metrics)
}

/// Writes `DIR/<name>` atomically (temp file + rename).
pub fn write_named(out: &Path, name: &str, metrics: &Metrics) -> std::io::Result<()> {
    let tmp = out.join(format!("{name}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(metrics)?)?;
    std::fs::rename(tmp, out.join(name))
}

/// The training side of a run, read back from `train_metrics.json` by `eval` (the fields of
/// [`Metrics`] that training decides).
#[derive(Debug, Clone, Deserialize)]
pub struct TrainRecord {
    pub train_loss: Option<f64>,
    pub tokens: u64,
    pub steps: u64,
    pub wall_s: f64,
    pub tokens_per_s: f64,
    pub peak_mem_bytes: u64,
    pub params: usize,
    pub seed: u64,
    pub status: Status,
    pub device: String,
    #[serde(default)]
    pub flops_per_token: Option<f64>,
    #[serde(default)]
    pub flops: Option<f64>,
    #[serde(default)]
    pub mfu: Option<f64>,
}
