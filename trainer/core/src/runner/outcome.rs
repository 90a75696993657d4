//! How a run ended (status, score, error): the guarded evaluation's result and caught panics.

use crate::config::Split;
use crate::contract::Training;
use crate::eval::{EvalError, EVAL_TOKENS};
use crate::metrics::Status;
use crate::tokenizer::Tokenizer;
use candle_core::Device;

pub(super) struct Outcome {
    pub(super) status: Status,
    pub(super) val_bpb: Option<f64>,
    pub(super) error: Option<String>,
}

/// The guarded evaluation (`stateless::evaluate`) as the run's outcome.
pub(super) fn evaluation_outcome(
    training: &dyn Training,
    split: Split,
    tokens: &[u32],
    tokenizer: &dyn Tokenizer,
    device: &Device,
) -> Outcome {
    let report = crate::stateless::evaluate(training, tokens, EVAL_TOKENS, tokenizer, device);
    match report {
        Ok(r) => Outcome {
            status: Status::Ok,
            val_bpb: Some(r.bpb),
            error: None,
        },
        Err(e @ EvalError::NonFinite { .. }) => Outcome {
            status: Status::Diverged,
            val_bpb: None,
            error: Some(format!("evaluation on {}: {e}", split.name())),
        },
        Err(e) => Outcome {
            status: Status::Crashed,
            val_bpb: None,
            error: Some(format!("evaluation on {}: {e}", split.name())),
        },
    }
}

pub(super) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
