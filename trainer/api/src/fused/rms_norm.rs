//! RMSNorm without a learned scale, `y = x / sqrt(mean(x^2) + eps)` over the last
//! dimension, with its backward `dx = r g - r^3 x mean(g x)` (r recomputed from x, so
//! nothing but the input is kept for the backward pass).

use super::cpu::{self, with_float_type};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};

/// Fused RMSNorm over the last dimension of `x` (f32, bf16 or f16 on CPU; f32 or bf16 on CUDA).
pub fn rms_norm(x: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op1(RmsNorm { eps: eps as f32 })
}

struct RmsNorm {
    eps: f32,
}

struct RmsNormBackward {
    eps: f32,
}

fn forward_rows<T: WithDType>(x: &[T], cols: usize, eps: f32) -> Vec<T> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks_exact(cols) {
        let ss: f32 = row.iter().map(|v| (v.to_f64() as f32).powi(2)).sum();
        let r = 1.0 / (ss / cols as f32 + eps).sqrt();
        y.extend(
            row.iter()
                .map(|v| T::from_f64(f64::from(v.to_f64() as f32 * r))),
        );
    }
    y
}

fn backward_rows<T: WithDType>(x: &[T], g: &[T], cols: usize, eps: f32) -> Vec<T> {
    let mut dx = Vec::with_capacity(x.len());
    for (xr, gr) in x.chunks_exact(cols).zip(g.chunks_exact(cols)) {
        let (mut ss, mut gx) = (0f32, 0f32);
        for (xv, gv) in xr.iter().zip(gr) {
            let (xv, gv) = (xv.to_f64() as f32, gv.to_f64() as f32);
            ss += xv * xv;
            gx += gv * xv;
        }
        let r = 1.0 / (ss / cols as f32 + eps).sqrt();
        let c = r * r * r * gx / cols as f32;
        dx.extend(xr.iter().zip(gr).map(|(xv, gv)| {
            T::from_f64(f64::from(r * gv.to_f64() as f32 - c * xv.to_f64() as f32))
        }));
    }
    dx
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, cols) = cpu::rows_cols(l)?;
        let out = with_float_type!(self.name(), s.dtype(), |T| {
            let x = cpu::contiguous::<T>(s, l, "rms_norm input")?;
            Ok(T::to_cpu_storage_owned(forward_rows(x, cols, self.eps)))
        })?;
        Ok((out, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{self, with_cuda_type};
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;
        let (rows, cols) = cpu::rows_cols(l)?;
        let dev = s.device().clone();
        let func = dev.get_or_load_custom_func(
            &cuda::kernel_name("rms_norm_fwd", s.dtype()),
            cuda::MODULE,
            cuda::PTX,
        )?;
        let out = with_cuda_type!(self.name(), s.dtype(), |T| {
            let x = cuda::view::<T>(s, l, "rms_norm input")?;
            // SAFETY: the kernel writes every element.
            let mut y = unsafe { dev.alloc::<T>(rows * cols)? };
            let (n_rows, n_cols) = (rows as i32, cols as i32);
            let mut b = func.builder();
            b.arg(&x)
                .arg(&mut y)
                .arg(&n_rows)
                .arg(&n_cols)
                .arg(&self.eps);
            // SAFETY: argument types and order match the kernel's signature.
            unsafe { b.launch(cuda::warp_rows(rows)) }.w()?;
            Ok(candle_core::CudaStorage::wrap_cuda_slice(y, dev.clone()))
        })?;
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.to_dtype(x.dtype())?.contiguous()?;
        let dx = x
            .contiguous()?
            .apply_op2_no_bwd(&grad, &RmsNormBackward { eps: self.eps })?;
        Ok(Some(dx))
    }
}

impl CustomOp2 for RmsNormBackward {
    fn name(&self) -> &'static str {
        "fused-rms-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, cols) = cpu::rows_cols(l1)?;
        let out = with_float_type!(self.name(), s1.dtype(), |T| {
            let x = cpu::contiguous::<T>(s1, l1, "rms_norm input")?;
            let g = cpu::contiguous::<T>(s2, l2, "rms_norm gradient")?;
            Ok(T::to_cpu_storage_owned(backward_rows(x, g, cols, self.eps)))
        })?;
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{self, with_cuda_type};
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;
        let (rows, cols) = cpu::rows_cols(l1)?;
        let dev = s1.device().clone();
        let func = dev.get_or_load_custom_func(
            &cuda::kernel_name("rms_norm_bwd", s1.dtype()),
            cuda::MODULE,
            cuda::PTX,
        )?;
        let out = with_cuda_type!(self.name(), s1.dtype(), |T| {
            let x = cuda::view::<T>(s1, l1, "rms_norm input")?;
            let g = cuda::view::<T>(s2, l2, "rms_norm gradient")?;
            // SAFETY: the kernel writes every element.
            let mut dx = unsafe { dev.alloc::<T>(rows * cols)? };
            let (n_rows, n_cols) = (rows as i32, cols as i32);
            let mut b = func.builder();
            b.arg(&x)
                .arg(&g)
                .arg(&mut dx)
                .arg(&n_rows)
                .arg(&n_cols)
                .arg(&self.eps);
            // SAFETY: argument types and order match the kernel's signature.
            unsafe { b.launch(cuda::warp_rows(rows)) }.w()?;
            Ok(candle_core::CudaStorage::wrap_cuda_slice(dx, dev.clone()))
        })?;
        Ok((out, l1.shape().clone()))
    }
}
