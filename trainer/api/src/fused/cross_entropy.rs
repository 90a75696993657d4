//! Soft-capped softmax cross-entropy over the vocabulary in one pass per row:
//! `z = cap * tanh(l / cap)` (no cap when `cap` is 0), `loss = logsumexp(z) - z[target]`,
//! and the backward `dl = g * (softmax(z) - onehot(target)) * (1 - (z / cap)^2)`. The
//! logits may be bf16; the log-sum-exp and the losses are f32. Neither the capped logits
//! nor the probabilities are ever stored.

use super::cpu::{self, with_float_type};
use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType,
};

/// Per-row losses (f32, shape `(n)`) of `logits` `(n, vocab)` against `targets` `(n)` u32,
/// after soft-capping the logits at `cap` (0 disables the cap).
pub fn softcapped_cross_entropy(logits: &Tensor, targets: &Tensor, cap: f64) -> Result<Tensor> {
    let (n, _) = logits.dims2()?;
    if targets.dims() != [n] || targets.dtype() != DType::U32 {
        candle_core::bail!(
            "softcapped_cross_entropy: targets must be ({n}) u32, got {:?} {:?}",
            targets.dims(),
            targets.dtype()
        );
    }
    logits
        .contiguous()?
        .apply_op2(&targets.contiguous()?, CrossEntropy { cap: cap as f32 })
}

struct CrossEntropy {
    cap: f32,
}

struct CrossEntropyBackward {
    cap: f32,
}

fn capped(l: f32, cap: f32) -> f32 {
    if cap > 0.0 {
        cap * cpu::tanh(l / cap)
    } else {
        l
    }
}

/// Fills `z` with the capped logits of `row` and `e` with `exp(z - max)`; returns the sum
/// of `e` (one tanh and one exp per logit, in loops that vectorize).
fn row_softmax<T: WithDType>(row: &[T], cap: f32, z: &mut [f32], e: &mut [f32]) -> f32 {
    for (z, l) in z.iter_mut().zip(row) {
        *z = capped(l.to_f64() as f32, cap);
    }
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for (e, z) in e.iter_mut().zip(z.iter()) {
        *e = cpu::exp(z - max);
    }
    e.iter().sum()
}

fn target_index(target: u32, vocab: usize) -> Result<usize> {
    let t = target as usize;
    if t >= vocab {
        candle_core::bail!("cross-entropy target {t} is outside the vocabulary of {vocab}");
    }
    Ok(t)
}

fn forward_rows<T: WithDType>(
    logits: &[T],
    targets: &[u32],
    cols: usize,
    cap: f32,
) -> Result<Vec<f32>> {
    let (mut z, mut e) = (vec![0f32; cols], vec![0f32; cols]);
    logits
        .chunks_exact(cols)
        .zip(targets)
        .map(|(row, &t)| {
            let t = target_index(t, cols)?;
            let sum = row_softmax(row, cap, &mut z, &mut e);
            let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            Ok(max + sum.ln() - z[t])
        })
        .collect()
}

fn backward_rows<T: WithDType>(
    logits: &[T],
    targets: &[u32],
    grad: &[f32],
    cols: usize,
    cap: f32,
) -> Result<Vec<T>> {
    let mut dl = Vec::with_capacity(logits.len());
    let (mut z, mut e) = (vec![0f32; cols], vec![0f32; cols]);
    for ((row, &t), &g) in logits.chunks_exact(cols).zip(targets).zip(grad) {
        let t = target_index(t, cols)?;
        let scale = g / row_softmax(row, cap, &mut z, &mut e);
        dl.extend(z.iter().zip(&e).enumerate().map(|(j, (&z, &e))| {
            let onehot = if j == t { g } else { 0.0 };
            let mut d = e * scale - onehot;
            if cap > 0.0 {
                d *= 1.0 - (z / cap) * (z / cap);
            }
            T::from_f64(f64::from(d))
        }));
    }
    Ok(dl)
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, cols) = cpu::rows_cols(l1)?;
        let targets = cpu::contiguous::<u32>(s2, l2, "cross-entropy targets")?;
        let losses = with_float_type!(self.name(), s1.dtype(), |T| {
            let logits = cpu::contiguous::<T>(s1, l1, "cross-entropy logits")?;
            forward_rows(logits, targets, cols, self.cap)
        })?;
        Ok((CpuStorage::F32(losses), Shape::from(rows)))
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
            &cuda::kernel_name("cross_entropy_fwd", s1.dtype()),
            cuda::MODULE,
            cuda::PTX,
        )?;
        let targets = cuda::view::<u32>(s2, l2, "cross-entropy targets")?;
        // SAFETY: the kernel writes every element (NaN for an out-of-vocabulary target).
        let mut losses = unsafe { dev.alloc::<f32>(rows)? };
        with_cuda_type!(self.name(), s1.dtype(), |T| {
            let logits = cuda::view::<T>(s1, l1, "cross-entropy logits")?;
            let n_cols = cols as i32;
            let mut b = func.builder();
            b.arg(&logits)
                .arg(&targets)
                .arg(&mut losses)
                .arg(&n_cols)
                .arg(&self.cap);
            // SAFETY: argument types and order match the kernel's signature.
            unsafe { b.launch(cuda::block_rows(rows, cols)) }.w()?;
            Ok(())
        })?;
        Ok((
            candle_core::CudaStorage::wrap_cuda_slice(losses, dev.clone()),
            Shape::from(rows),
        ))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _losses: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.to_dtype(DType::F32)?.contiguous()?;
        let dl = logits.contiguous()?.apply_op3_no_bwd(
            &targets.contiguous()?,
            &grad,
            &CrossEntropyBackward { cap: self.cap },
        )?;
        Ok((Some(dl), None))
    }
}

impl CustomOp3 for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "fused-cross-entropy-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, cols) = cpu::rows_cols(l1)?;
        let targets = cpu::contiguous::<u32>(s2, l2, "cross-entropy targets")?;
        let grad = cpu::contiguous::<f32>(s3, l3, "cross-entropy gradient")?;
        let out = with_float_type!(self.name(), s1.dtype(), |T| {
            let logits = cpu::contiguous::<T>(s1, l1, "cross-entropy logits")?;
            Ok(T::to_cpu_storage_owned(backward_rows(
                logits, targets, grad, cols, self.cap,
            )?))
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
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{self, with_cuda_type};
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;
        let (rows, cols) = cpu::rows_cols(l1)?;
        let dev = s1.device().clone();
        let func = dev.get_or_load_custom_func(
            &cuda::kernel_name("cross_entropy_bwd", s1.dtype()),
            cuda::MODULE,
            cuda::PTX,
        )?;
        let targets = cuda::view::<u32>(s2, l2, "cross-entropy targets")?;
        let grad = cuda::view::<f32>(s3, l3, "cross-entropy gradient")?;
        let out = with_cuda_type!(self.name(), s1.dtype(), |T| {
            let logits = cuda::view::<T>(s1, l1, "cross-entropy logits")?;
            // SAFETY: the kernel writes every element.
            let mut dl = unsafe { dev.alloc::<T>(rows * cols)? };
            let n_cols = cols as i32;
            let mut b = func.builder();
            b.arg(&logits)
                .arg(&targets)
                .arg(&grad)
                .arg(&mut dl)
                .arg(&n_cols)
                .arg(&self.cap);
            // SAFETY: argument types and order match the kernel's signature.
            unsafe { b.launch(cuda::block_rows(rows, cols)) }.w()?;
            Ok(candle_core::CudaStorage::wrap_cuda_slice(dl, dev.clone()))
        })?;
        Ok((out, l1.shape().clone()))
    }
}
