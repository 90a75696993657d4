//! The MLP's activation `relu(x)^2` in one pass, with its backward `dx = 2 relu(x) g` in one
//! pass (the composite is two ops forward and five backward, each a full-size buffer).
//! On CPU a custom op; elsewhere the composite candle ops.

use super::cpu::{self, with_float_type};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};

/// `relu(x)^2`, element-wise (f32, bf16 or f16 on CPU).
pub fn relu_sq(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return x.relu()?.sqr();
    }
    x.contiguous()?.apply_op1(ReluSq)
}

/// `max(v, 0)` that keeps NaN (a diverging run must still show NaN downstream).
#[inline(always)]
fn relu(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

struct ReluSq;

struct ReluSqBackward;

impl CustomOp1 for ReluSq {
    fn name(&self) -> &'static str {
        "fused-relu-sq"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = with_float_type!(self.name(), s.dtype(), |T| {
            let x = cpu::contiguous::<T>(s, l, "relu_sq input")?;
            let y: Vec<T> = x
                .iter()
                .map(|v| {
                    let r = relu(v.to_f64() as f32);
                    T::from_f64(f64::from(r * r))
                })
                .collect();
            Ok(T::to_cpu_storage_owned(y))
        })?;
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.to_dtype(x.dtype())?.contiguous()?;
        Ok(Some(
            x.contiguous()?.apply_op2_no_bwd(&grad, &ReluSqBackward)?,
        ))
    }
}

impl CustomOp2 for ReluSqBackward {
    fn name(&self) -> &'static str {
        "fused-relu-sq-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = with_float_type!(self.name(), s1.dtype(), |T| {
            let x = cpu::contiguous::<T>(s1, l1, "relu_sq input")?;
            let g = cpu::contiguous::<T>(s2, l2, "relu_sq gradient")?;
            let dx: Vec<T> = x
                .iter()
                .zip(g)
                .map(|(v, g)| {
                    let r = relu(v.to_f64() as f32);
                    T::from_f64(f64::from(2.0 * r * g.to_f64() as f32))
                })
                .collect();
            Ok(T::to_cpu_storage_owned(dx))
        })?;
        Ok((out, l1.shape().clone()))
    }
}
