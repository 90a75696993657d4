//! The evaluation, guarded against a model that changes while it is scored. Frozen.
//!
//! The model is editable code and sees the validation stream through its inputs; one that
//! updated itself from those inputs (a step of test-time training, an n-gram cache) would score
//! the later windows with what it learned from the earlier ones. Two cheap checks refuse it:
//! its parameters must be bit-identical before and after the pass, and the first batch, scored
//! again at the end, must give bit-identical losses (which also catches state kept outside the
//! parameters).

use crate::contract::Training;
use crate::eval::{self, BpbReport, EvalError};
use crate::tokenizer::Tokenizer;
use candle_core::{DType, Device};

/// The parameters (`param.*` tensors of the training state) as raw f32 bits, by name.
fn parameter_bits(training: &dyn Training) -> Result<Vec<(String, Vec<u32>)>, EvalError> {
    let state = training.state()?;
    state
        .tensors
        .into_iter()
        .filter(|(name, _)| name.starts_with("param."))
        .map(|(name, t)| {
            let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            Ok((name, values.into_iter().map(f32::to_bits).collect()))
        })
        .collect()
}

fn changed(what: String) -> EvalError {
    EvalError::StateChanged(what)
}

/// [`eval::bits_per_byte`] of `training`'s model on `stream`, refused with
/// [`EvalError::StateChanged`] when the model changed while it was scored.
pub fn evaluate(
    training: &dyn Training,
    stream: &[u32],
    eval_tokens: usize,
    tok: &dyn Tokenizer,
    device: &Device,
) -> Result<BpbReport, EvalError> {
    let model = training.model();
    let before = parameter_bits(training)?;
    let first = eval::first_batch_losses(model, stream, eval_tokens, device)?;
    let report = eval::bits_per_byte(model, stream, eval_tokens, tok, device)?;
    let again = eval::first_batch_losses(model, stream, eval_tokens, device)?;
    let after = parameter_bits(training)?;
    if before.len() != after.len() {
        return Err(changed(format!(
            "{} parameter tensors before, {} after",
            before.len(),
            after.len()
        )));
    }
    for ((name, a), (name_after, b)) in before.iter().zip(&after) {
        if name != name_after || a != b {
            return Err(changed(format!("parameter {name} differs")));
        }
    }
    let same = first.len() == again.len()
        && first
            .iter()
            .zip(&again)
            .all(|(a, b)| a.to_bits() == b.to_bits());
    if !same {
        return Err(changed(
            "the first evaluation batch scores differently when scored again".into(),
        ));
    }
    Ok(report)
}
