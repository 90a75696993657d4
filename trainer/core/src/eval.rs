//! The frozen evaluation: bits per byte over a fixed number of target tokens.
//!
//! bpb = sum of cross-entropy in nats / (ln 2 * bytes of the target tokens), special tokens
//! (BOS) excluded from both sums. The model is reached only through [`LanguageModel`]
//! (tokens in, logits out); the cross-entropy is computed here, never by the model.

use crate::tokenizer::Tokenizer;
use candle_core::{DType, Device, Tensor, D};

/// Target tokens scored per evaluation: the same for every run, whatever the model's context.
pub const EVAL_TOKENS: usize = 32_768;
/// Full-length windows scored per forward pass.
const EVAL_BATCH: usize = 16;

pub use agentloop_trainer_api::contract::LanguageModel;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("the model failed during evaluation: {0}")]
    Model(#[from] candle_core::Error),
    #[error("the model returned logits of shape {got:?}, expected ({batch}, {len}, >= {vocab})")]
    BadShape {
        got: Vec<usize>,
        batch: usize,
        len: usize,
        vocab: usize,
    },
    #[error("the model is not causal: its output at position {position} changed by {diff} when only later tokens (or another row of the batch) changed")]
    NotCausal { position: usize, diff: f32 },
    #[error("the loss is not finite at evaluation token {index}")]
    NonFinite { index: usize },
    #[error("the evaluation split has {0} tokens; at least 2 are needed")]
    TooFewTokens(usize),
    #[error("the evaluated targets contain no bytes (only special tokens)")]
    NoBytes,
    #[error("model state changed during evaluation: {0}")]
    StateChanged(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BpbReport {
    pub bpb: f64,
    /// Sum of cross-entropy (nats) over the non-special targets.
    pub nats: f64,
    /// Bytes of the non-special targets.
    pub bytes: u64,
    /// Target tokens scored, special ones included.
    pub tokens: usize,
}

/// bpb from per-target losses (nats) and the targets themselves; special targets are skipped.
pub fn bpb_from_losses(
    losses: &[f64],
    targets: &[u32],
    tok: &dyn Tokenizer,
) -> Result<BpbReport, EvalError> {
    assert_eq!(losses.len(), targets.len(), "one loss per target");
    let (mut nats, mut bytes) = (0.0f64, 0u64);
    for (index, (&loss, &target)) in losses.iter().zip(targets).enumerate() {
        if tok.is_special(target) {
            continue;
        }
        if !loss.is_finite() {
            return Err(EvalError::NonFinite { index });
        }
        nats += loss;
        bytes += tok.bytes_of(target);
    }
    if bytes == 0 {
        return Err(EvalError::NoBytes);
    }
    Ok(BpbReport {
        bpb: nats / (std::f64::consts::LN_2 * bytes as f64),
        nats,
        bytes,
        tokens: targets.len(),
    })
}

/// Cross-entropy (nats) of each target under the model's logits for `windows`, each a
/// `(inputs, targets)` pair of equal length.
fn window_losses(
    model: &dyn LanguageModel,
    windows: &[(&[u32], &[u32])],
    device: &Device,
) -> Result<Vec<f64>, EvalError> {
    let (batch, len) = (windows.len(), windows[0].0.len());
    let inputs: Vec<u32> = windows.iter().flat_map(|w| w.0.iter().copied()).collect();
    let targets: Vec<u32> = windows.iter().flat_map(|w| w.1.iter().copied()).collect();
    let inputs = Tensor::from_vec(inputs, (batch, len), device)?;
    let logits = model.logits(&inputs)?.to_dtype(DType::F32)?;
    let dims = logits.dims().to_vec();
    let max_target = targets.iter().copied().max().unwrap_or(0) as usize;
    if dims.len() != 3 || dims[0] != batch || dims[1] != len || dims[2] <= max_target {
        return Err(EvalError::BadShape {
            got: dims,
            batch,
            len,
            vocab: max_target + 1,
        });
    }
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let targets = Tensor::from_vec(targets, (batch, len, 1), device)?;
    let picked = log_probs.gather(&targets, D::Minus1)?.flatten_all()?;
    Ok(picked
        .to_vec1::<f32>()?
        .into_iter()
        .map(|lp| -f64::from(lp))
        .collect())
}

/// Fails when changing later tokens changes the model's output at earlier positions: a model
/// that peeks ahead would otherwise score an impossible bpb.
pub fn check_causal(
    model: &dyn LanguageModel,
    stream: &[u32],
    tok: &dyn Tokenizer,
    device: &Device,
) -> Result<(), EvalError> {
    let len = model.max_seq_len().min(stream.len());
    if len < 2 {
        return Ok(());
    }
    let original = &stream[..len];
    let cut = len / 2;
    let vocab = tok.vocab_size() as u32;
    let altered: Vec<u32> = original
        .iter()
        .enumerate()
        .map(|(i, &t)| if i >= cut { (t + 1) % vocab } else { t })
        .collect();
    let run = |tokens: &[u32]| -> Result<Vec<Vec<f32>>, EvalError> {
        let input = Tensor::from_vec(tokens.to_vec(), (1, len), device)?;
        let logits = model.logits(&input)?.to_dtype(DType::F32)?;
        Ok(logits.squeeze(0)?.narrow(0, 0, cut)?.to_vec2::<f32>()?)
    };
    let (a, b) = (run(original)?, run(&altered)?);
    compare_rows(&a, &b)?;
    // Rows of a batch are independent windows: the evaluation batches consecutive windows, so a
    // model reading another row would read the text after the one it predicts.
    let row0 = |rows: &[&[u32]]| -> Result<Vec<Vec<f32>>, EvalError> {
        let tokens: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        let input = Tensor::from_vec(tokens, (rows.len(), len), device)?;
        let logits = model.logits(&input)?.to_dtype(DType::F32)?;
        Ok(logits.get(0)?.to_vec2::<f32>()?)
    };
    let shifted: Vec<u32> = original.iter().map(|&t| (t + 1) % vocab).collect();
    let alone = row0(&[original])?;
    compare_rows(&alone, &row0(&[original, original])?)?;
    compare_rows(&alone, &row0(&[original, &shifted])?)
}

/// Fails when two runs' logits at the same positions differ beyond rounding.
fn compare_rows(a: &[Vec<f32>], b: &[Vec<f32>]) -> Result<(), EvalError> {
    for (position, (ra, rb)) in a.iter().zip(b).enumerate() {
        let diff = ra
            .iter()
            .zip(rb)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        let scale = ra.iter().map(|x| x.abs()).fold(1.0f32, f32::max);
        if diff.is_nan() || diff > 1e-3 * scale {
            return Err(EvalError::NotCausal { position, diff });
        }
    }
    Ok(())
}

/// The `(inputs, targets)` windows scoring the first `count` targets of `stream`, in the
/// model's context length: the full ones, then the short last one if any.
type Window<'a> = (&'a [u32], &'a [u32]);
fn eval_windows<'a>(
    model: &dyn LanguageModel,
    stream: &'a [u32],
    count: usize,
) -> (Vec<Window<'a>>, Vec<Window<'a>>) {
    let seq_len = model.max_seq_len().max(1);
    let windows: Vec<Window<'a>> = (0..count)
        .step_by(seq_len)
        .map(|start| {
            let end = (start + seq_len).min(count);
            (&stream[start..end], &stream[start + 1..end + 1])
        })
        .collect();
    // Only the last window can be short; it runs on its own after the batched full ones.
    windows.into_iter().partition(|w| w.0.len() == seq_len)
}

/// The per-target losses of the first forward pass [`bits_per_byte`] makes on `stream`: scored
/// again after the evaluation, they must come out bit-identical (a model that learns from the
/// stream it is scored on would change them).
pub fn first_batch_losses(
    model: &dyn LanguageModel,
    stream: &[u32],
    eval_tokens: usize,
    device: &Device,
) -> Result<Vec<f64>, EvalError> {
    if stream.len() < 2 {
        return Err(EvalError::TooFewTokens(stream.len()));
    }
    let count = eval_tokens.min(stream.len() - 1);
    let (full, tail) = eval_windows(model, stream, count);
    match full.chunks(EVAL_BATCH).next() {
        Some(first) => window_losses(model, first, device),
        None => window_losses(model, &tail, device),
    }
}

/// Scores the first `eval_tokens` targets of `stream` (inputs `stream[i]`, target
/// `stream[i + 1]`) in consecutive windows of the model's context length.
pub fn bits_per_byte(
    model: &dyn LanguageModel,
    stream: &[u32],
    eval_tokens: usize,
    tok: &dyn Tokenizer,
    device: &Device,
) -> Result<BpbReport, EvalError> {
    if stream.len() < 2 {
        return Err(EvalError::TooFewTokens(stream.len()));
    }
    check_causal(model, stream, tok, device)?;
    let count = eval_tokens.min(stream.len() - 1);
    let (full, tail) = eval_windows(model, stream, count);
    let mut losses = Vec::with_capacity(count);
    for chunk in full.chunks(EVAL_BATCH) {
        losses.extend(window_losses(model, chunk, device)?);
    }
    for window in tail {
        losses.extend(window_losses(model, &[window], device)?);
    }
    bpb_from_losses(&losses, &stream[1..count + 1], tok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::ByteTokenizer;

    /// Predicts from the current token only: logit 0 for every class except `boost` on
    /// (current token + 1) mod 257. Its losses have a closed form.
    struct NextTokenModel {
        boost: f32,
        seq_len: usize,
    }

    impl LanguageModel for NextTokenModel {
        fn logits(&self, tokens: &Tensor) -> candle_core::Result<Tensor> {
            let (b, t) = tokens.dims2()?;
            let ids = tokens.to_vec2::<u32>()?;
            let mut out = vec![0f32; b * t * 257];
            for (i, row) in ids.iter().enumerate() {
                for (j, &tok) in row.iter().enumerate() {
                    out[(i * t + j) * 257 + ((tok + 1) % 257) as usize] = self.boost;
                }
            }
            Tensor::from_vec(out, (b, t, 257), tokens.device())
        }
        fn max_seq_len(&self) -> usize {
            self.seq_len
        }
    }

    /// Sees the whole window: the output at every position depends on the last token.
    struct PeekingModel;

    impl LanguageModel for PeekingModel {
        fn logits(&self, tokens: &Tensor) -> candle_core::Result<Tensor> {
            let (b, t) = tokens.dims2()?;
            let last = tokens.narrow(1, t - 1, 1)?.to_dtype(DType::F32)?;
            last.unsqueeze(2)?.broadcast_as((b, t, 257))?.contiguous()
        }
        fn max_seq_len(&self) -> usize {
            8
        }
    }

    /// Causal within each row, but reads the next row of the batch: the evaluation batches
    /// consecutive windows, so the next row is the text that follows.
    struct NextRowModel;

    impl LanguageModel for NextRowModel {
        fn logits(&self, tokens: &Tensor) -> candle_core::Result<Tensor> {
            let (b, t) = tokens.dims2()?;
            let ids = tokens.to_vec2::<u32>()?;
            let mut out = vec![0f32; b * t * 257];
            for i in 0..b.saturating_sub(1) {
                for j in 0..t {
                    out[(i * t + j) * 257 + ids[i + 1][j] as usize] = 5.0;
                }
            }
            Tensor::from_vec(out, (b, t, 257), tokens.device())
        }
        fn max_seq_len(&self) -> usize {
            8
        }
    }

    #[test]
    fn a_model_reading_another_row_of_the_batch_is_refused() {
        let stream: Vec<u32> = (0..64).map(|i| 97 + (i * 7 % 26)).collect();
        let err =
            bits_per_byte(&NextRowModel, &stream, 60, &ByteTokenizer, &Device::Cpu).unwrap_err();
        assert!(matches!(err, EvalError::NotCausal { .. }), "{err}");
    }

    #[test]
    fn bpb_matches_a_hand_computed_example_and_skips_special_targets() {
        let tok = ByteTokenizer;
        // Targets: 'a' (loss 2 nats), BOS (loss 100, excluded), 'b' (loss 1), 'c' (loss 0.5).
        let report = bpb_from_losses(&[2.0, 100.0, 1.0, 0.5], &[97, 256, 98, 99], &tok).unwrap();
        assert_eq!(report.bytes, 3);
        assert!((report.nats - 3.5).abs() < 1e-12);
        let expected = 3.5 / (std::f64::consts::LN_2 * 3.0);
        assert!((report.bpb - expected).abs() < 1e-12, "{}", report.bpb);
        assert!(matches!(
            bpb_from_losses(&[1.0], &[256], &tok),
            Err(EvalError::NoBytes)
        ));
    }

    #[test]
    fn bpb_of_a_model_matches_its_closed_form() {
        let tok = ByteTokenizer;
        let model = NextTokenModel {
            boost: 3.0,
            seq_len: 4,
        };
        // Stream: BOS a b c x BOS d e.
        let stream = [256u32, 97, 98, 99, 120, 256, 100, 101];
        let z = 256.0f64 + 3f64.exp(); // partition function of every row
        let hit = z.ln() - 3.0; // the boosted class
        let miss = z.ln();
        // Pairs (input -> target): 256->97 miss, 97->98 hit, 98->99 hit, 99->120 miss,
        // 120->256 (special, skipped), 256->100 miss, 100->101 hit.
        let nats = 3.0 * hit + 3.0 * miss;
        let expected = nats / (std::f64::consts::LN_2 * 6.0);
        let report = bits_per_byte(&model, &stream, 100, &tok, &Device::Cpu).unwrap();
        assert_eq!(report.tokens, 7);
        assert_eq!(report.bytes, 6);
        assert!(
            (report.bpb - expected).abs() < 1e-5,
            "{} vs {expected}",
            report.bpb
        );
        // Only the first `eval_tokens` targets count: 97->98 etc. excluded beyond 2.
        let two = bits_per_byte(&model, &stream, 2, &tok, &Device::Cpu).unwrap();
        let expected_two = (miss + hit) / (std::f64::consts::LN_2 * 2.0);
        assert!((two.bpb - expected_two).abs() < 1e-5);
    }

    #[test]
    fn a_model_that_sees_future_tokens_is_refused() {
        let tok = ByteTokenizer;
        let stream: Vec<u32> = (0..40).map(|i| (i * 7) % 256).collect();
        let err = bits_per_byte(&PeekingModel, &stream, 32, &tok, &Device::Cpu).unwrap_err();
        assert!(matches!(err, EvalError::NotCausal { .. }), "{err}");
    }
}
