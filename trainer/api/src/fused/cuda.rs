//! Loading and launching the kernels of `kernels/fused.cu` (PTX built by build.rs).

use candle_core::cuda_backend::cudarc::driver::{CudaView, DeviceRepr, LaunchConfig};
use candle_core::cuda_backend::CudaDType;
use candle_core::{CudaStorage, DType, Layout, Result};

/// The kernels, loaded once per device with `get_or_load_custom_func(name, MODULE, PTX)`.
pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
pub const MODULE: &str = "agentloop_fused";

/// The name of the instance of kernel `base` for `dtype` (`rms_norm_fwd_bf16`).
pub fn kernel_name(base: &str, dtype: DType) -> String {
    let suffix = match dtype {
        DType::BF16 => "bf16",
        _ => "f32",
    };
    format!("{base}_{suffix}")
}

/// The contiguous elements of `storage` under `layout`; `what` names the operand in errors.
pub fn view<'a, T: CudaDType + DeviceRepr>(
    storage: &'a CudaStorage,
    layout: &Layout,
    what: &str,
) -> Result<CudaView<'a, T>> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what} must be contiguous")))?;
    Ok(storage.as_cuda_slice::<T>()?.slice(start..end))
}

/// Warp-per-row launch: 8 rows (warps) per block of 256 threads.
pub fn warp_rows(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(8) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Block-per-row launch: up to 256 threads, fewer for short rows.
pub fn block_rows(rows: usize, cols: usize) -> LaunchConfig {
    let threads = cols.div_ceil(32).clamp(1, 8) * 32;
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Grid-stride elementwise launch over `n` elements.
pub fn elementwise(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 65_535) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Calls `$body` with `T` bound to the element type of `$dtype` (f32 or bf16).
macro_rules! with_cuda_type {
    ($op:expr, $dtype:expr, |$t:ident| $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                type $t = f32;
                $body
            }
            candle_core::DType::BF16 => {
                type $t = half::bf16;
                $body
            }
            other => Err(candle_core::Error::Msg(format!(
                "{}: unsupported dtype {other:?} on CUDA (f32 or bf16)",
                $op
            ))),
        }
    };
}
pub(crate) use with_cuda_type;
