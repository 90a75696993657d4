//! The GPT (EDITABLE by the agent), in the spirit of nanochat: token embedding, rotary
//! positions, pre-norm RMSNorm without weights, QK-norm, causal self-attention, ReLU^2 MLP,
//! untied output head, logit soft-capping.
//!
//! Every op here must have a backward pass: candle's fused `rms_norm`, `layer_norm`,
//! `softmax_last_dim` and `rope` have none, so gradients would silently stop at them. The
//! composite forms below are differentiable.

use crate::config::ModelConfig;
use crate::eval::LanguageModel;
use crate::params::ParamStore;
use candle_core::{DType, Device, Result, Tensor, D};

const NORM_EPS: f64 = 1e-6;
const ROPE_BASE: f64 = 10_000.0;

/// x / sqrt(mean(x^2) + eps) over the last dimension, without a learned scale.
fn rms_norm(x: &Tensor) -> Result<Tensor> {
    let mean_sq = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(mean_sq + NORM_EPS)?.sqrt()?)
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
    /// Compute dtype: f32 on CPU, bf16 on CUDA (parameters stay f32).
    dtype: DType,
}

impl Gpt {
    pub fn new(cfg: &ModelConfig, params: &mut ParamStore) -> Result<Self> {
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
        let dtype = if device.is_cuda() {
            DType::BF16
        } else {
            DType::F32
        };
        Ok(Self {
            wte,
            blocks,
            lm_head,
            cos,
            sin,
            cfg: cfg.clone(),
            dtype,
        })
    }

    fn attention(&self, block: &Block, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let (h, hd) = (self.cfg.heads, d / self.cfg.heads);
        let heads = |w: &Tensor| -> Result<Tensor> {
            linear(x, &w.to_dtype(self.dtype)?)?
                .reshape((b, t, h, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let cos = self.cos.narrow(0, 0, t)?.to_dtype(self.dtype)?;
        let sin = self.sin.narrow(0, 0, t)?.to_dtype(self.dtype)?;
        let q = apply_rope(&rms_norm(&heads(&block.wq)?)?, &cos, &sin)?;
        let k = apply_rope(&rms_norm(&heads(&block.wk)?)?, &cos, &sin)?;
        let v = heads(&block.wv)?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (hd as f64).sqrt())?;
        let scores = scores.broadcast_add(&causal_mask(t, x.device())?.to_dtype(self.dtype)?)?;
        let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let y = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        linear(&y, &block.wo.to_dtype(self.dtype)?)
    }

    fn mlp(&self, block: &Block, x: &Tensor) -> Result<Tensor> {
        let hidden = linear(x, &block.w_fc.to_dtype(self.dtype)?)?
            .relu()?
            .sqr()?;
        linear(&hidden, &block.w_proj.to_dtype(self.dtype)?)
    }

    /// `(batch, len)` token ids -> `(batch, len, vocab)` f32 logits.
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        if t > self.cfg.seq_len {
            candle_core::bail!(
                "sequence of {t} tokens exceeds seq_len {}",
                self.cfg.seq_len
            );
        }
        let emb = self
            .wte
            .to_dtype(self.dtype)?
            .embedding(&tokens.flatten_all()?)?;
        let mut x = rms_norm(&emb.reshape((b, t, self.cfg.width))?)?;
        for block in &self.blocks {
            x = (&x + self.attention(block, &rms_norm(&x)?)?)?;
            x = (&x + self.mlp(block, &rms_norm(&x)?)?)?;
        }
        let logits =
            linear(&rms_norm(&x)?, &self.lm_head.to_dtype(self.dtype)?)?.to_dtype(DType::F32)?;
        let cap = self.cfg.softcap;
        if cap > 0.0 {
            (logits / cap)?.tanh()? * cap
        } else {
            Ok(logits)
        }
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
