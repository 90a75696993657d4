//! The analytic training FLOPs of a run: what a `--budget ...flops` charges and what the MFU
//! figure divides. Frozen, and computed from the model the run actually built: its parameters
//! are the `param.*` tensors of its training state (the tensors every checkpoint saves and the
//! evaluation restores), not the editable code's own report nor the config's sizes, so a patch
//! cannot under-report them by describing a smaller model than it trains.
//!
//! Compute a parameter count cannot see (a weight reused by several layers, extra passes over
//! the same weights) is not charged here; the `tokens_per_s` guard of the loop's decision
//! catches it instead (ARCHITECTURE.md §2, "FLOPs budget").

use crate::config::ModelConfig;
use crate::contract::TrainState;

/// The parameters a built model holds, as this module counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCount {
    /// Scalars in every `param.*` tensor of the training state.
    pub total: usize,
    /// Scalars of the token-embedding table (a gather, no matmul): the `param.wte` tensor when
    /// it has exactly the config's `(vocab_size, width)` shape, else 0.
    pub embedding: usize,
}

/// Counts the parameters of `state` (see [`ParamCount`]).
pub fn count_params(state: &TrainState, model: &ModelConfig) -> ParamCount {
    let mut count = ParamCount {
        total: 0,
        embedding: 0,
    };
    for (name, tensor) in &state.tensors {
        let Some(param) = name.strip_prefix("param.") else {
            continue;
        };
        count.total += tensor.elem_count();
        if param == "wte" && tensor.dims() == [model.vocab_size, model.width] {
            count.embedding = tensor.elem_count();
        }
    }
    count
}

/// Training FLOPs per token, forward and backward:
/// `6 * (params - embedding) + 12 * depth * width * seq_len`. Each matmul parameter costs 2
/// FLOPs forward and 4 backward; attention's score and value matmuls cost `2 * 2 * width *
/// seq_len` per layer forward (counted without the causal saving) and twice that backward.
/// The formula of nanochat / autoresearch, so MFU figures compare.
pub fn training_flops_per_token(params: ParamCount, model: &ModelConfig) -> f64 {
    let matmul_params = params.total.saturating_sub(params.embedding) as f64;
    let attention = 12.0 * model.depth as f64 * model.width as f64 * model.seq_len as f64;
    6.0 * matmul_params + attention
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    fn zeros(name: &str, shape: &[usize]) -> (String, Tensor) {
        let t = Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap();
        (name.to_string(), t)
    }

    fn tiny() -> ModelConfig {
        ModelConfig {
            depth: 1,
            width: 4,
            heads: 2,
            seq_len: 8,
            vocab_size: 10,
            softcap: 0.0,
        }
    }

    /// The tiny default-shaped GPT counted by hand: wte 10x4 (free), one block of
    /// q, k, v, o (4x4 each), fc 4x16, proj 16x4, and the head 4x10.
    #[test]
    fn a_tiny_gpt_costs_what_a_hand_count_says() {
        let m = tiny();
        let state = TrainState {
            tensors: vec![
                zeros("param.wte", &[10, 4]),
                zeros("param.h0.attn.wq", &[4, 4]),
                zeros("param.h0.attn.wk", &[4, 4]),
                zeros("param.h0.attn.wv", &[4, 4]),
                zeros("param.h0.attn.wo", &[4, 4]),
                zeros("param.h0.mlp.fc", &[4, 16]),
                zeros("param.h0.mlp.proj", &[16, 4]),
                zeros("param.lm_head", &[4, 10]),
                // Optimizer moments are not parameters.
                zeros("adam.m.lm_head", &[4, 10]),
            ],
            meta: serde_json::json!({}),
        };
        let count = count_params(&state, &m);
        assert_eq!(count.total, 40 + 4 * 16 + 64 + 64 + 40);
        assert_eq!(count.embedding, 40);
        // Matmuls: 64 + 64 + 64 + 40 = 232 parameters, 2 FLOPs forward + 4 backward each.
        // Attention, one layer: q.k^T and att.v are 2 * 8 * 4 multiply-adds per token each
        // forward (64 FLOPs), 128 backward: 12 * 1 * 4 * 8 = 384.
        assert_eq!(training_flops_per_token(count, &m), 6.0 * 232.0 + 384.0);
    }

    /// An embedding of another shape than the config's is charged as a matmul: naming a
    /// weight `wte` does not make it free.
    #[test]
    fn only_a_config_shaped_wte_is_free() {
        let m = tiny();
        let state = TrainState {
            tensors: vec![zeros("param.wte", &[4, 64])],
            meta: serde_json::json!({}),
        };
        let count = count_params(&state, &m);
        assert_eq!(count.embedding, 0);
        assert_eq!(training_flops_per_token(count, &m), 6.0 * 256.0 + 384.0);
    }
}
