//! Shared pieces of the CPU implementations.

use candle_core::{CpuStorage, DType, Layout, Result, WithDType};

/// The contiguous elements of `storage` under `layout`; `what` names the operand in errors.
pub fn contiguous<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> Result<&'a [T]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what} must be contiguous")))?;
    Ok(&storage.as_slice::<T>()?[start..end])
}

/// `(rows, cols)` of a tensor viewed as rows of its last dimension.
pub fn rows_cols(layout: &Layout) -> Result<(usize, usize)> {
    let cols = *layout
        .dims()
        .last()
        .ok_or_else(|| candle_core::Error::Msg("a fused op needs at least one dimension".into()))?;
    let count = layout.shape().elem_count();
    Ok((count.checked_div(cols).unwrap_or(0), cols))
}

/// Fails with a message naming the op for dtypes the fused ops do not implement.
pub fn unsupported(op: &str, dtype: DType) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "{op}: unsupported dtype {dtype:?} (f32, bf16 or f16)"
    ))
}

/// Calls `$body` with `T` bound to the float type of `$dtype`.
macro_rules! with_float_type {
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
            candle_core::DType::F16 => {
                type $t = half::f16;
                $body
            }
            other => Err($crate::fused::cpu::unsupported($op, other)),
        }
    };
}
pub(crate) use with_float_type;
