//! The interface between the frozen runner and the editable training code (`train.rs` of the
//! recipe). Frozen: the runner owns the budget, divergence checks, checkpoints and the
//! evaluation; the training code owns how one optimizer step is done.

use candle_core::Tensor;

/// One training batch: `inputs` and `targets` are `(batch, seq_len)` u32 tensors, `targets`
/// shifted one token ahead.
pub struct Batch {
    pub inputs: Tensor,
    pub targets: Tensor,
}

/// What the editable training loop gets: training batches, nothing else. Every batch drawn
/// counts against the token budget.
pub trait BatchSource {
    fn next_batch(&mut self) -> candle_core::Result<Batch>;
    fn batch_size(&self) -> usize;
    fn seq_len(&self) -> usize;
}

/// The narrow interface the frozen evaluation calls.
pub trait LanguageModel {
    /// `tokens`: `(batch, len)` u32 with `len <= max_seq_len()`; returns `(batch, len, vocab)`
    /// logits (any float dtype), position `i` predicting token `i + 1`.
    fn logits(&self, tokens: &Tensor) -> candle_core::Result<Tensor>;
    /// The longest window the model accepts.
    fn max_seq_len(&self) -> usize;
}

/// What one optimizer step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean training cross-entropy of the step (nats per token).
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used (the block matrices' rate).
    pub lr: f64,
}

/// Everything the training code needs to continue bit-for-bit after a resume: named tensors
/// (parameters, optimizer moments) and small scalars as JSON. Parameters are named
/// `param.<name>`; the evaluation checks that they do not change while it scores.
pub struct TrainState {
    pub tensors: Vec<(String, Tensor)>,
    pub meta: serde_json::Value,
}

pub trait Training {
    /// One optimizer step. `progress` in [0, 1) is the fraction of the budget used so far
    /// (for the learning-rate schedule).
    fn step(
        &mut self,
        batches: &mut dyn BatchSource,
        progress: f64,
    ) -> candle_core::Result<StepStats>;
    /// The model, for the frozen evaluation.
    fn model(&self) -> &dyn LanguageModel;
    /// Trainable scalar count.
    fn param_count(&self) -> usize;
    fn state(&self) -> candle_core::Result<TrainState>;
    fn restore(&mut self, state: TrainState) -> candle_core::Result<()>;
}
