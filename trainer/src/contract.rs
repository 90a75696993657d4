//! The interface between the frozen runner and the editable training code (`train.rs`).
//! Frozen: the runner owns the budget, divergence checks, checkpoints and the evaluation;
//! the training code owns how one optimizer step is done.

use crate::data::BatchSource;
use crate::eval::LanguageModel;
use candle_core::Tensor;

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
/// (parameters, optimizer moments) and small scalars as JSON.
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
    /// Model FLOPs per trained token, for the reported MFU; `None` if unknown.
    fn flops_per_token(&self) -> Option<f64> {
        None
    }
    fn state(&self) -> candle_core::Result<TrainState>;
    fn restore(&mut self, state: TrainState) -> candle_core::Result<()>;
}
