//! The GPT (EDITABLE by the agent), in the spirit of nanochat: token embedding, rotary
//! positions, pre-norm RMSNorm without weights, QK-norm, causal self-attention, ReLU^2 MLP,
//! untied output head, logit soft-capping.
//!
//! Every op here must have a backward pass: candle's fused `rms_norm`, `layer_norm`,
//! `softmax_last_dim` and `rope` have none, so gradients would silently stop at them. The
//! composite forms below are differentiable; `crate::fused` (the frozen api) has kernels with backward passes
//! for the norm, QK-norm with RoPE, the causal softmax, ReLU^2 and the loss, used when
//! `Compute::fused` is on (the default on CPU and CUDA; the evaluation never uses them).
//!
//! Mixed precision: parameters are f32 and cast to the compute dtype where they are used,
//! so gradients flow back to them in f32; norm and softmax statistics and the loss are f32.

use crate::compute::Compute;
use crate::config::ModelConfig;
use crate::contract::LanguageModel;
use crate::fused;
use crate::params::ParamStore;
use candle_core::{DType, Device, Result, Tensor, D};

const NORM_EPS: f64 = 1e-6;
const ROPE_BASE: f64 = 10_000.0;

/// x / sqrt(mean(x^2) + eps) over the last dimension, without a learned scale.
fn rms_norm(x: &Tensor, compute: Compute) -> Result<Tensor> {
    if compute.fused {
        return fused::rms_norm(x, NORM_EPS);
    }
    let x32 = x.to_dtype(DType::F32)?;
    let mean_sq = x32.sqr()?.mean_keepdim(D::Minus1)?;
    x32.broadcast_div(&(mean_sq + NORM_EPS)?.sqrt()?)?
        .to_dtype(x.dtype())
}

/// Softmax over keys of `scores / sqrt(head_dim)` with keys after the query masked out.
fn causal_softmax(scores: &Tensor, head_dim: usize, compute: Compute) -> Result<Tensor> {
    let sqrt_hd = (head_dim as f64).sqrt();
    if compute.fused {
        return fused::causal_softmax(scores, 1.0 / sqrt_hd);
    }
    let t = scores.dim(D::Minus1)?;
    let scores = (scores.to_dtype(DType::F32)? / sqrt_hd)?
        .broadcast_add(&causal_mask(t, scores.device())?)?;
    candle_nn::ops::softmax(&scores, D::Minus1)?.to_dtype(compute.dtype)
}

/// `cap * tanh(logits / cap)`, or the logits unchanged when `cap` is 0.
fn softcap(logits: &Tensor, cap: f64) -> Result<Tensor> {
    if cap > 0.0 {
        (logits / cap)?.tanh()? * cap
    } else {
        Ok(logits.clone())
    }
}

/// Rotary embedding on `(batch, heads, len, head_dim)`, rotating the two halves of each head.
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let y1 = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
    let y2 = (x1.broadcast_mul(sin)? + x2.broadcast_mul(cos)?)?;
    Tensor::cat(&[y1, y2], D::Minus1)
}

/// `x (n, in) @ w (in, out)` for `x` of any leading shape.
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let inner = dims.pop().expect("linear input has a last dimension");
    let out = x.reshape(((), inner))?.matmul(w)?;
    dims.push(w.dim(1)?);
    out.reshape(dims)
}

struct Block {
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    w_fc: Tensor,
    w_proj: Tensor,
}

pub struct Gpt {
    wte: Tensor,
    blocks: Vec<Block>,
    lm_head: Tensor,
    /// `(seq_len, head_dim / 2)` rotary tables.
    cos: Tensor,
    sin: Tensor,
    cfg: ModelConfig,
    /// Training's dtype and kernels (parameters stay f32).
    compute: Compute,
}

/// The evaluation's arithmetic: f32 composite ops on every device.
const EVAL_COMPUTE: Compute = Compute {
    dtype: DType::F32,
    fused: false,
};

impl Gpt {
    /// The model with the default computation for the parameters' device.
    pub fn new(cfg: &ModelConfig, params: &mut ParamStore) -> Result<Self> {
        let compute = Compute::for_device(params.device());
        Self::with_compute(cfg, params, compute)
    }

    pub fn with_compute(
        cfg: &ModelConfig,
        params: &mut ParamStore,
        compute: Compute,
    ) -> Result<Self> {
        let (d, v) = (cfg.width, cfg.vocab_size);
        let std_in = 1.0 / (d as f64).sqrt();
        // Residual projections start small so each block begins close to the identity.
        let std_out = std_in / (2.0 * cfg.depth as f64).sqrt();
        let wte = params.normal("wte", &[v, d], 1.0)?;
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            blocks.push(Block {
                wq: params.normal(&format!("h{i}.attn.wq"), &[d, d], std_in)?,
                wk: params.normal(&format!("h{i}.attn.wk"), &[d, d], std_in)?,
                wv: params.normal(&format!("h{i}.attn.wv"), &[d, d], std_in)?,
                wo: params.normal(&format!("h{i}.attn.wo"), &[d, d], std_out)?,
                w_fc: params.normal(&format!("h{i}.mlp.fc"), &[d, 4 * d], std_in)?,
                w_proj: params.normal(&format!("h{i}.mlp.proj"), &[4 * d, d], std_out / 2.0)?,
            });
        }
        let lm_head = params.normal("lm_head", &[d, v], 0.5 * std_in)?;
        let device = params.device().clone();
        let (cos, sin) = rope_tables(cfg.seq_len, d / cfg.heads, &device)?;
        Ok(Self {
            wte,
            blocks,
            lm_head,
            cos,
            sin,
            cfg: cfg.clone(),
            compute,
        })
    }

    fn attention(&self, block: &Block, x: &Tensor, c: Compute) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let (h, hd) = (self.cfg.heads, d / self.cfg.heads);
        let heads = |w: &Tensor| -> Result<Tensor> {
            linear(x, &w.to_dtype(c.dtype)?)?
                .reshape((b, t, h, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k) = if c.fused {
            // Head split, QK-norm and rotation in one op (and one backward).
            let qk = |w: &Tensor| -> Result<Tensor> {
                let x = linear(x, &w.to_dtype(c.dtype)?)?;
                fused::norm_rope_heads(&x, h, &self.cos, &self.sin, NORM_EPS)
            };
            (qk(&block.wq)?, qk(&block.wk)?)
        } else {
            let cos = self.cos.narrow(0, 0, t)?.to_dtype(c.dtype)?;
            let sin = self.sin.narrow(0, 0, t)?.to_dtype(c.dtype)?;
            (
                apply_rope(&rms_norm(&heads(&block.wq)?, c)?, &cos, &sin)?,
                apply_rope(&rms_norm(&heads(&block.wk)?, c)?, &cos, &sin)?,
            )
        };
        let v = heads(&block.wv)?;
        // Training on CPU reads the transposed keys in place (no copy); the evaluation keeps
        // its contiguous copy so that its arithmetic never changes (and CUDA as it was).
        let kt = if c.fused && k.device().is_cpu() {
            k.t()?
        } else {
            k.t()?.contiguous()?
        };
        let scores = q.matmul(&kt)?;
        let weights = causal_softmax(&scores, hd, c)?;
        let y = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        linear(&y, &block.wo.to_dtype(c.dtype)?)
    }

    fn mlp(&self, block: &Block, x: &Tensor, c: Compute) -> Result<Tensor> {
        let hidden = linear(x, &block.w_fc.to_dtype(c.dtype)?)?;
        let hidden = if c.fused {
            fused::relu_sq(&hidden)?
        } else {
            hidden.relu()?.sqr()?
        };
        linear(&hidden, &block.w_proj.to_dtype(c.dtype)?)
    }

    /// `(batch, len)` token ids -> `(batch, len, vocab)` logits before the soft-cap, in
    /// `c.dtype`.
    fn uncapped_logits(&self, tokens: &Tensor, c: Compute) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        if t > self.cfg.seq_len {
            candle_core::bail!(
                "sequence of {t} tokens exceeds seq_len {}",
                self.cfg.seq_len
            );
        }
        // Gathered in f32, then cast: the embedding's gradient accumulates in f32.
        let emb = self
            .wte
            .embedding(&tokens.flatten_all()?)?
            .to_dtype(c.dtype)?;
        let mut x = rms_norm(&emb.reshape((b, t, self.cfg.width))?, c)?;
        for block in &self.blocks {
            x = (&x + self.attention(block, &rms_norm(&x, c)?, c)?)?;
            x = (&x + self.mlp(block, &rms_norm(&x, c)?, c)?)?;
        }
        linear(&rms_norm(&x, c)?, &self.lm_head.to_dtype(c.dtype)?)
    }

    /// `(batch, len)` token ids -> `(batch, len, vocab)` f32 logits, computed in f32 with the
    /// composite ops whatever the training computation (the evaluation's numerics).
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        softcap(
            &self.uncapped_logits(tokens, EVAL_COMPUTE)?,
            self.cfg.softcap,
        )
    }

    /// Mean training cross-entropy (nats per token, f32 scalar) of `targets` `(batch, len)`
    /// after `tokens`, in the training computation.
    pub fn loss(&self, tokens: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let c = self.compute;
        let logits = self.uncapped_logits(tokens, c)?;
        let vocab = logits.dim(D::Minus1)?;
        let logits = logits.reshape(((), vocab))?;
        let targets = targets.flatten_all()?;
        if c.fused {
            return fused::softcapped_cross_entropy(&logits, &targets, self.cfg.softcap)?
                .mean_all();
        }
        let logits = softcap(&logits.to_dtype(DType::F32)?, self.cfg.softcap)?;
        candle_nn::loss::cross_entropy(&logits, &targets)
    }
}

impl LanguageModel for Gpt {
    fn logits(&self, tokens: &Tensor) -> Result<Tensor> {
        self.forward(tokens)
    }

    fn max_seq_len(&self) -> usize {
        self.cfg.seq_len
    }
}

fn rope_tables(seq_len: usize, head_dim: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(seq_len * half);
    let mut sin = Vec::with_capacity(seq_len * half);
    for pos in 0..seq_len {
        for i in 0..half {
            let freq = ROPE_BASE.powf(-(i as f64) / half as f64);
            let angle = pos as f64 * freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    Ok((
        Tensor::from_vec(cos, (seq_len, half), device)?,
        Tensor::from_vec(sin, (seq_len, half), device)?,
    ))
}

/// `(len, len)` additive mask: 0 on and below the diagonal, -inf above.
fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (t, t), device)
}
