//! The device-memory peak the run reports: the training step samples it where memory peaks,
//! the frozen runner reads it. Frozen.

use candle_core::Device;
use std::sync::atomic::{AtomicU64, Ordering};

/// Highest device memory in use seen by [`sample_device_memory`].
static DEVICE_PEAK: AtomicU64 = AtomicU64::new(0);

/// Records the memory in use on `device` now (CUDA: total minus free, for the whole GPU);
/// does nothing on CPU. Called after each forward pass and each step, where memory peaks.
pub fn sample_device_memory(device: &Device) {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = device {
        if let Ok((free, total)) = cuda.cuda_stream().context().mem_get_info() {
            DEVICE_PEAK.fetch_max(total.saturating_sub(free) as u64, Ordering::Relaxed);
        }
    }
    let _ = device;
}

/// The highest sampled device memory in bytes; 0 when nothing was sampled (CPU).
pub fn device_peak() -> u64 {
    DEVICE_PEAK.load(Ordering::Relaxed)
}
