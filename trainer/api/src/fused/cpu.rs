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

/// `e^x` in f32 without a libm call, so that loops over slices vectorize (libm's scalar
/// `expf`/`tanhf` were 40% of a fused CPU step). Cephes' range reduction and degree-6
/// polynomial: within 2 ulp of `f32::exp` on [-87, 88]; inputs are clamped there (so
/// `-inf` gives 1.6e-38 rather than 0), and NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Round-to-nearest of x / ln 2 by the 1.5 * 2^23 trick (no SSE4.1 `round` needed).
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 0.5)
        * r
        * r
        + r
        + 1.0;
    let k = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    f32::from_bits((k.wrapping_add(127) as u32) << 23) * p
}

/// `tanh(x)` from [`exp`]: `1 - 2 / (e^(2x) + 1)`, within 1e-7 absolute of `f32::tanh`.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_exp_and_tanh_match_libm() {
        let mut worst = (0f32, 0f32);
        for i in -87_000..88_000 {
            let x = i as f32 * 1e-3 + 1.3e-4;
            let (got, want) = (super::exp(x), x.exp());
            worst.0 = worst.0.max(((got - want) / want).abs());
            if x.abs() < 20.0 {
                worst.1 = worst.1.max((super::tanh(x) - x.tanh()).abs());
            }
        }
        assert!(worst.0 < 3e-7, "exp relative error {}", worst.0);
        assert!(worst.1 < 2e-7, "tanh absolute error {}", worst.1);
        assert!(super::exp(f32::NAN).is_nan() && super::tanh(f32::NAN).is_nan());
        assert!(super::exp(f32::NEG_INFINITY) < 1e-37);
        assert_eq!(super::tanh(50.0), 1.0);
        assert_eq!(super::tanh(-50.0), -1.0);
    }
}
