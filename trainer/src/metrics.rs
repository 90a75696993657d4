//! The run's outputs: JSON-lines progress on stdout and `metrics.json`. Frozen: the loop reads
//! these, so their shape is part of the target contract (ARCHITECTURE.md §2).

use serde::Serialize;
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    let tmp = out.join("metrics.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(metrics)?)?;
    std::fs::rename(tmp, out.join("metrics.json"))
}
