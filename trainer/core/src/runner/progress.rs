//! The training loop's state: the budget used, the smoothed loss and the blow-up rules.

use super::watchdog::Snapshot;
use super::RunArgs;
use crate::checkpoint::Progress;
use crate::config::Budget;
use std::sync::{Arc, Mutex};

/// Smoothing of the reported training loss.
const LOSS_EMA_BETA: f64 = 0.9;
/// A step whose loss exceeds this multiple of the best smoothed loss is a blow-up.
const BLOWUP_FACTOR: f64 = 2.5;
/// A step whose loss exceeds this multiple of ln(vocab) (a fresh model's loss) is a blow-up.
const BLOWUP_UNIFORM_FACTOR: f64 = 2.0;
/// Steps before the relative blow-up rule applies (the smoothed loss needs a few values).
const BLOWUP_GRACE_STEPS: u64 = 10;

pub(super) struct Loop<'a> {
    pub(super) args: &'a RunArgs,
    pub(super) fingerprint: String,
    pub(super) progress: Progress,
    pub(super) snapshot: Arc<Mutex<Snapshot>>,
    /// The built model's training FLOPs per token (`crate::flops`); set once it is built.
    pub(super) flops_per_token: f64,
}

impl Loop<'_> {
    pub(super) fn smoothed_loss(&self) -> Option<f64> {
        (self.progress.ema_weight > 0.0).then(|| self.progress.loss_ema / self.progress.ema_weight)
    }

    pub(super) fn budget_used(&self) -> f64 {
        let p = &self.progress;
        match self.args.budget {
            Budget::Tokens(n) => p.tokens as f64 / n as f64,
            Budget::Steps(n) => p.step as f64 / n as f64,
            Budget::Seconds(s) => p.elapsed_s / s,
            Budget::Flops(f) => p.tokens as f64 * self.flops_per_token / f,
        }
    }

    /// Returns the divergence message, if the step diverged.
    pub(super) fn record_step(
        &mut self,
        loss: f64,
        grad_norm: f64,
        tokens: u64,
        position: u64,
        vocab: usize,
    ) -> Option<String> {
        let p = &mut self.progress;
        p.step += 1;
        p.tokens = tokens;
        p.data_position = position;
        p.last_loss = loss;
        if !loss.is_finite() || !grad_norm.is_finite() {
            return Some(format!(
                "step {}: loss {loss} or gradient norm {grad_norm} is not finite",
                p.step
            ));
        }
        p.loss_ema = LOSS_EMA_BETA * p.loss_ema + (1.0 - LOSS_EMA_BETA) * loss;
        p.ema_weight = LOSS_EMA_BETA * p.ema_weight + (1.0 - LOSS_EMA_BETA);
        let smoothed = p.loss_ema / p.ema_weight;
        let uniform = (vocab as f64).ln();
        if loss > BLOWUP_UNIFORM_FACTOR * uniform {
            return Some(format!(
                "step {}: loss {loss:.3} exceeds {BLOWUP_UNIFORM_FACTOR} x ln(vocab) = {:.3}",
                p.step,
                BLOWUP_UNIFORM_FACTOR * uniform
            ));
        }
        if p.step > BLOWUP_GRACE_STEPS && loss > BLOWUP_FACTOR * p.best_loss_ema {
            return Some(format!(
                "step {}: loss {loss:.3} blew up to over {BLOWUP_FACTOR} x the best smoothed loss {:.3}",
                p.step, p.best_loss_ema
            ));
        }
        p.best_loss_ema = p.best_loss_ema.min(smoothed);
        None
    }
}
