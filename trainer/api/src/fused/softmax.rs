//! Causal softmax of scaled attention scores: `y = softmax(scale * s + mask)` over the last
//! dimension, where the mask hides keys after the query (row `i` of each `(t, t)` matrix
//! sees keys `0..=i`), with its backward `ds = scale * y * (g - sum(g * y))`. One op
//! instead of candle's scale, mask add, and five-op softmax, forward and backward.

use super::cpu::{self, with_float_type};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};

/// Fused causal softmax of `scores` `(..., t, t)` scaled by `scale`.
pub fn causal_softmax(scores: &Tensor, scale: f64) -> Result<Tensor> {
    let dims = scores.dims();
    let n = dims.len();
    if n < 2 || dims[n - 1] != dims[n - 2] {
        candle_core::bail!("causal_softmax needs square (..., t, t) scores, got {dims:?}");
    }
    scores.contiguous()?.apply_op1(CausalSoftmax {
        scale: scale as f32,
    })
}

struct CausalSoftmax {
    scale: f32,
}

struct CausalSoftmaxBackward {
    scale: f32,
}

fn forward_rows<T: WithDType>(s: &[T], cols: usize, scale: f32) -> Vec<T> {
    let mut y = vec![T::zero(); s.len()];
    let mut z = vec![0f32; cols];
    for (row, (sr, yr)) in s
        .chunks_exact(cols)
        .zip(y.chunks_exact_mut(cols))
        .enumerate()
    {
        let visible = row % cols + 1;
        let z = &mut z[..visible];
        for (z, v) in z.iter_mut().zip(sr) {
            *z = v.to_f64() as f32 * scale;
        }
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for z in z.iter_mut() {
            *z = cpu::exp(*z - max);
        }
        let inv = 1.0 / z.iter().sum::<f32>();
        for (y, z) in yr.iter_mut().zip(z.iter()) {
            *y = T::from_f64(f64::from(z * inv));
        }
    }
    y
}

fn backward_rows<T: WithDType>(y: &[T], g: &[T], cols: usize, scale: f32) -> Vec<T> {
    let mut ds = Vec::with_capacity(y.len());
    for (yr, gr) in y.chunks_exact(cols).zip(g.chunks_exact(cols)) {
        let dot: f32 = yr
            .iter()
            .zip(gr)
            .map(|(a, b)| a.to_f64() as f32 * b.to_f64() as f32)
            .sum();
        ds.extend(yr.iter().zip(gr).map(|(a, b)| {
            T::from_f64(f64::from(
                scale * a.to_f64() as f32 * (b.to_f64() as f32 - dot),
            ))
        }));
    }
    ds
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "fused-causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, cols) = cpu::rows_cols(l)?;
        let out = with_float_type!(self.name(), s.dtype(), |T| {
            let x = cpu::contiguous::<T>(s, l, "causal_softmax scores")?;
            Ok(T::to_cpu_storage_owned(forward_rows(x, cols, self.scale)))
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
            &cuda::kernel_name("causal_softmax_fwd", s.dtype()),
            cuda::MODULE,
            cuda::PTX,
        )?;
        let out = with_cuda_type!(self.name(), s.dtype(), |T| {
            let x = cuda::view::<T>(s, l, "causal_softmax scores")?;
            // SAFETY: the kernel writes every element.
            let mut y = unsafe { dev.alloc::<T>(rows * cols)? };
            let n_cols = cols as i32;
            let mut b = func.builder();
            b.arg(&x).arg(&mut y).arg(&n_cols).arg(&self.scale);
            // SAFETY: argument types and order match the kernel's signature.
            unsafe { b.launch(cuda::block_rows(rows, cols)) }.w()?;
            Ok(candle_core::CudaStorage::wrap_cuda_slice(y, dev.clone()))
        })?;
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _scores: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.to_dtype(y.dtype())?.contiguous()?;
        let ds = y
            .contiguous()?
            .apply_op2_no_bwd(&grad, &CausalSoftmaxBackward { scale: self.scale })?;
        Ok(Some(ds))
    }
}

impl CustomOp2 for CausalSoftmaxBackward {
    fn name(&self) -> &'static str {
        "fused-causal-softmax-backward"
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
            let y = cpu::contiguous::<T>(s1, l1, "causal_softmax output")?;
            let g = cpu::contiguous::<T>(s2, l2, "causal_softmax gradient")?;
            Ok(T::to_cpu_storage_owned(backward_rows(
                y, g, cols, self.scale,
            )))
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
            &cuda::kernel_name("causal_softmax_bwd", s1.dtype()),
            cuda::MODULE,
            cuda::PTX,
        )?;
        let out = with_cuda_type!(self.name(), s1.dtype(), |T| {
            let y = cuda::view::<T>(s1, l1, "causal_softmax output")?;
            let g = cuda::view::<T>(s2, l2, "causal_softmax gradient")?;
            // SAFETY: the kernel writes every element.
            let mut ds = unsafe { dev.alloc::<T>(rows * cols)? };
            let n_cols = cols as i32;
            let mut b = func.builder();
            b.arg(&y).arg(&g).arg(&mut ds).arg(&n_cols).arg(&self.scale);
            // SAFETY: argument types and order match the kernel's signature.
            unsafe { b.launch(cuda::block_rows(rows, cols)) }.w()?;
            Ok(candle_core::CudaStorage::wrap_cuda_slice(ds, dev.clone()))
        })?;
        Ok((out, l1.shape().clone()))
    }
}
