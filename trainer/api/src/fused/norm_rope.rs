//! Attention heads with QK-norm and rotary positions in one pass: `x` `(b, t, h * hd)` (a
//! projection's output) becomes `(b, h, t, hd)` where each head's vector is RMS-normalized
//! (no learned scale) and then rotated by RoPE, the two halves of the head forming the
//! pairs: `y1 = n1 cos - n2 sin`, `y2 = n1 sin + n2 cos`. It replaces the reshape, the
//! transposing copy, the norm and the seven ops of the composite rotation, and their
//! backward passes: `dn = R^T g` (the inverse rotation), then the norm's backward
//! `dx = r dn - r^3 x mean(dn x)`, written back in `x`'s layout.
//!
//! On CPU this is one custom op; on other devices it is the composite (head split, the
//! fused or composite RMSNorm, the rotation as candle ops), so it runs everywhere.

use super::cpu::{self, with_float_type};
use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType, D,
};

/// `(b, t, heads * hd)` -> `(b, heads, t, hd)`, each head RMS-normalized (`eps`) and rotated
/// by the tables `cos`, `sin` `(>= t, hd / 2)` (rows are positions).
pub fn norm_rope_heads(
    x: &Tensor,
    heads: usize,
    cos: &Tensor,
    sin: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    if heads == 0 || d % heads != 0 || (d / heads) % 2 != 0 {
        candle_core::bail!("norm_rope_heads: width {d} is not {heads} heads of an even size");
    }
    let (hd, half) = (d / heads, d / heads / 2);
    let (rows, cols) = cos.dims2()?;
    if sin.dims() != cos.dims() || rows < t || cols != half {
        candle_core::bail!(
            "norm_rope_heads: rotary tables {:?} / {:?} must be (>= {t}, {half})",
            cos.dims(),
            sin.dims()
        );
    }
    let cos = cos.narrow(0, 0, t)?.to_dtype(DType::F32)?;
    let sin = sin.narrow(0, 0, t)?.to_dtype(DType::F32)?;
    if !x.device().is_cpu() {
        return composite(x, b, t, heads, hd, &cos, &sin, eps);
    }
    x.contiguous()?.apply_op3(
        &cos.contiguous()?,
        &sin.contiguous()?,
        NormRopeHeads {
            heads,
            eps: eps as f32,
        },
    )
}

/// The same with candle ops (and the fused RMSNorm, which has a backward pass).
#[allow(clippy::too_many_arguments)]
fn composite(
    x: &Tensor,
    b: usize,
    t: usize,
    heads: usize,
    hd: usize,
    cos: &Tensor,
    sin: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let n = super::rms_norm(
        &x.reshape((b, t, heads, hd))?
            .transpose(1, 2)?
            .contiguous()?,
        eps,
    )?;
    let (cos, sin) = (cos.to_dtype(x.dtype())?, sin.to_dtype(x.dtype())?);
    let half = hd / 2;
    let n1 = n.narrow(D::Minus1, 0, half)?;
    let n2 = n.narrow(D::Minus1, half, half)?;
    let y1 = (n1.broadcast_mul(&cos)? - n2.broadcast_mul(&sin)?)?;
    let y2 = (n1.broadcast_mul(&sin)? + n2.broadcast_mul(&cos)?)?;
    Tensor::cat(&[y1, y2], D::Minus1)
}

struct NormRopeHeads {
    heads: usize,
    eps: f32,
}

struct NormRopeHeadsBackward {
    heads: usize,
    eps: f32,
    /// The forward's tables, `(t, hd / 2)` row-major.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// `1 / sqrt(mean(v^2) + eps)` of one head's vector, in f32.
fn inv_rms<T: WithDType>(v: &[T], eps: f32) -> f32 {
    let ss: f32 = v.iter().map(|a| (a.to_f64() as f32).powi(2)).sum();
    1.0 / (ss / v.len() as f32 + eps).sqrt()
}

/// Index of the first element of head `hi` at position `ti` of batch `bi`, in `x`'s
/// `(b, t, h * hd)` layout and in the output's `(b, h, t, hd)` layout.
fn offsets(bi: usize, ti: usize, hi: usize, t: usize, h: usize, hd: usize) -> (usize, usize) {
    (
        (bi * t + ti) * h * hd + hi * hd,
        ((bi * h + hi) * t + ti) * hd,
    )
}

fn forward<T: WithDType>(
    x: &[T],
    cos: &[f32],
    sin: &[f32],
    (b, t, h, hd): (usize, usize, usize, usize),
    eps: f32,
) -> Vec<T> {
    let half = hd / 2;
    let mut y = vec![T::zero(); x.len()];
    for bi in 0..b {
        for ti in 0..t {
            let (c, s) = (&cos[ti * half..][..half], &sin[ti * half..][..half]);
            for hi in 0..h {
                let (xo, yo) = offsets(bi, ti, hi, t, h, hd);
                let xv = &x[xo..xo + hd];
                let r = inv_rms(xv, eps);
                let (y1, y2) = y[yo..yo + hd].split_at_mut(half);
                for j in 0..half {
                    let n1 = xv[j].to_f64() as f32 * r;
                    let n2 = xv[j + half].to_f64() as f32 * r;
                    y1[j] = T::from_f64(f64::from(n1 * c[j] - n2 * s[j]));
                    y2[j] = T::from_f64(f64::from(n1 * s[j] + n2 * c[j]));
                }
            }
        }
    }
    y
}

fn backward<T: WithDType>(
    x: &[T],
    g: &[T],
    cos: &[f32],
    sin: &[f32],
    (b, t, h, hd): (usize, usize, usize, usize),
    eps: f32,
) -> Vec<T> {
    let half = hd / 2;
    let mut dx = vec![T::zero(); x.len()];
    let mut dn = vec![0f32; hd];
    for bi in 0..b {
        for ti in 0..t {
            let (c, s) = (&cos[ti * half..][..half], &sin[ti * half..][..half]);
            for hi in 0..h {
                let (xo, go) = offsets(bi, ti, hi, t, h, hd);
                let (xv, gv) = (&x[xo..xo + hd], &g[go..go + hd]);
                // The rotation is orthogonal: its backward is the inverse rotation.
                for j in 0..half {
                    let (g1, g2) = (gv[j].to_f64() as f32, gv[j + half].to_f64() as f32);
                    dn[j] = g1 * c[j] + g2 * s[j];
                    dn[j + half] = g2 * c[j] - g1 * s[j];
                }
                let r = inv_rms(xv, eps);
                let dot: f32 = xv.iter().zip(&dn).map(|(a, d)| a.to_f64() as f32 * d).sum();
                let k = r * r * r * dot / hd as f32;
                for ((out, a), d) in dx[xo..xo + hd].iter_mut().zip(xv).zip(&dn) {
                    *out = T::from_f64(f64::from(r * d - k * a.to_f64() as f32));
                }
            }
        }
    }
    dx
}

impl NormRopeHeads {
    /// `(b, t, h, hd)` of input layout `l`.
    fn dims(&self, l: &Layout) -> Result<(usize, usize, usize, usize)> {
        let (b, t, d) = l.shape().dims3()?;
        Ok((b, t, self.heads, d / self.heads))
    }
}

impl CustomOp3 for NormRopeHeads {
    fn name(&self) -> &'static str {
        "fused-norm-rope-heads"
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
        let dims = self.dims(l1)?;
        let cos = cpu::contiguous::<f32>(s2, l2, "norm_rope_heads cos")?;
        let sin = cpu::contiguous::<f32>(s3, l3, "norm_rope_heads sin")?;
        let out = with_float_type!(self.name(), s1.dtype(), |T| {
            let x = cpu::contiguous::<T>(s1, l1, "norm_rope_heads input")?;
            Ok(T::to_cpu_storage_owned(forward(
                x, cos, sin, dims, self.eps,
            )))
        })?;
        let (b, t, h, hd) = dims;
        Ok((out, Shape::from((b, h, t, hd))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.to_dtype(x.dtype())?.contiguous()?;
        let dx = x.contiguous()?.apply_op2_no_bwd(
            &grad,
            &NormRopeHeadsBackward {
                heads: self.heads,
                eps: self.eps,
                cos: cos.flatten_all()?.to_vec1()?,
                sin: sin.flatten_all()?.to_vec1()?,
            },
        )?;
        Ok((Some(dx), None, None))
    }
}

impl CustomOp2 for NormRopeHeadsBackward {
    fn name(&self) -> &'static str {
        "fused-norm-rope-heads-backward"
    }

    /// `s1` the input `x`, `s2` the output's gradient.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, t, d) = l1.shape().dims3()?;
        let (h, hd) = (self.heads, d / self.heads);
        let out = with_float_type!(self.name(), s1.dtype(), |T| {
            let x = cpu::contiguous::<T>(s1, l1, "norm_rope_heads input")?;
            let g = cpu::contiguous::<T>(s2, l2, "norm_rope_heads gradient")?;
            Ok(T::to_cpu_storage_owned(backward(
                x,
                g,
                &self.cos,
                &self.sin,
                (b, t, h, hd),
                self.eps,
            )))
        })?;
        Ok((out, l1.shape().clone()))
    }
}
