//! AdamW on f32 master weights in two fused in-place kernels per tensor (moments, then
//! the parameter), instead of about a dozen candle ops that each allocate a new tensor.
//! The moments live in one `(2, ...)` f32 tensor per parameter: `m` then `v`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Result, Tensor};

/// The hyper-parameters of one AdamW update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// 1 for the first update (bias correction).
    pub step: u64,
    /// Multiplies the gradient first (global-norm clipping).
    pub grad_scale: f64,
}

/// Updates `moments` (f32, shape `(2, *param.shape)`) from `grad`, then `param` (f32), in place.
pub fn adamw_step(param: &Tensor, moments: &Tensor, grad: &Tensor, h: &AdamWStep) -> Result<()> {
    let mut expected = vec![2];
    expected.extend_from_slice(param.dims());
    if moments.dims() != expected.as_slice() || grad.dims() != param.dims() {
        candle_core::bail!(
            "adamw_step: param {:?}, moments {:?} (expected {expected:?}), grad {:?}",
            param.dims(),
            moments.dims(),
            grad.dims()
        );
    }
    for (what, t) in [("param", param), ("moments", moments), ("grad", grad)] {
        if t.dtype() != DType::F32 {
            candle_core::bail!("adamw_step: {what} must be f32, got {:?}", t.dtype());
        }
    }
    let grad = grad.contiguous()?;
    moments.inplace_op2(&grad, &Moments(*h))?;
    param.inplace_op2(moments, &Apply(*h))
}

struct Moments(AdamWStep);

struct Apply(AdamWStep);

impl Apply {
    /// `(weight decay factor, 1 - beta1^t, 1 - beta2^t)`.
    fn factors(&self) -> (f32, f32, f32) {
        let h = &self.0;
        (
            (1.0 - h.lr * h.weight_decay) as f32,
            (1.0 - h.beta1.powi(h.step as i32)) as f32,
            (1.0 - h.beta2.powi(h.step as i32)) as f32,
        )
    }
}

fn f32_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [f32]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("adamw_step: {what} must be contiguous")))?;
    match s {
        CpuStorage::F32(v) => Ok(&mut v[start..end]),
        other => candle_core::bail!("adamw_step: {what} must be f32, got {:?}", other.dtype()),
    }
}

impl InplaceOp2 for Moments {
    fn name(&self) -> &'static str {
        "fused-adamw-moments"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let h = &self.0;
        let (b1, b2, scale) = (h.beta1 as f32, h.beta2 as f32, h.grad_scale as f32);
        let grad = super::cpu::contiguous::<f32>(s2, l2, "adamw_step grad")?;
        let mv = f32_slice_mut(s1, l1, "moments")?;
        let (m, v) = mv.split_at_mut(grad.len());
        for ((m, v), g) in m.iter_mut().zip(v.iter_mut()).zip(grad) {
            let g = g * scale;
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<()> {
        use super::cuda;
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;
        let h = &self.0;
        let dev = s1.device().clone();
        let func = dev.get_or_load_custom_func("adamw_moments", cuda::MODULE, cuda::PTX)?;
        let grad = cuda::view::<f32>(s2, l2, "adamw_step grad")?;
        let n = grad.len();
        let (start, end) = l1.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg("adamw_step: moments must be contiguous".into())
        })?;
        let mut mv = s1.as_cuda_slice_mut::<f32>()?.slice_mut(start..end);
        let (scale, b1, b2) = (h.grad_scale as f32, h.beta1 as f32, h.beta2 as f32);
        let mut b = func.builder();
        b.arg(&mut mv)
            .arg(&grad)
            .arg(&n)
            .arg(&scale)
            .arg(&b1)
            .arg(&b2);
        // SAFETY: argument types and order match the kernel's signature.
        unsafe { b.launch(cuda::elementwise(n)) }.w()?;
        Ok(())
    }
}

impl InplaceOp2 for Apply {
    fn name(&self) -> &'static str {
        "fused-adamw-apply"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (decay, bc1, bc2) = self.factors();
        let (lr, eps) = (self.0.lr as f32, self.0.eps as f32);
        let mv = super::cpu::contiguous::<f32>(s2, l2, "adamw_step moments")?;
        let param = f32_slice_mut(s1, l1, "param")?;
        let (m, v) = mv.split_at(param.len());
        for ((p, m), v) in param.iter_mut().zip(m).zip(v) {
            let update = (m / bc1) / ((v / bc2).sqrt() + eps);
            *p = *p * decay - lr * update;
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<()> {
        use super::cuda;
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;
        let (decay, bc1, bc2) = self.factors();
        let (lr, eps) = (self.0.lr as f32, self.0.eps as f32);
        let dev = s1.device().clone();
        let func = dev.get_or_load_custom_func("adamw_apply", cuda::MODULE, cuda::PTX)?;
        let mv = cuda::view::<f32>(s2, l2, "adamw_step moments")?;
        let (start, end) = l1.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg("adamw_step: param must be contiguous".into())
        })?;
        let n = end - start;
        let mut param = s1.as_cuda_slice_mut::<f32>()?.slice_mut(start..end);
        let mut b = func.builder();
        b.arg(&mut param)
            .arg(&mv)
            .arg(&n)
            .arg(&lr)
            .arg(&decay)
            .arg(&bc1)
            .arg(&bc2)
            .arg(&eps);
        // SAFETY: argument types and order match the kernel's signature.
        unsafe { b.launch(cuda::elementwise(n)) }.w()?;
        Ok(())
    }
}
