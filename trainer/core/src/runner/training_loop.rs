//! The training loop: build the model, resume, step within the budget, checkpoint, then score.

use super::inputs::Prepared;
use super::outcome::{evaluation_outcome, Outcome};
use super::progress::Loop;
use super::BuildTraining;
use crate::checkpoint;
use crate::config::CheckpointEvery;
use crate::contract::Training;
use crate::metrics::{self, Status};
use serde_json::json;
use std::time::Instant;

pub(super) fn train_and_evaluate(
    looped: &mut Loop<'_>,
    prepared: &mut Prepared,
    resumed: Option<checkpoint::Loaded>,
    build: BuildTraining,
) -> Outcome {
    let crashed = |e: String| Outcome {
        status: Status::Crashed,
        val_bpb: None,
        error: Some(e),
    };
    let args = looped.args;
    let mut training: Box<dyn Training> = match build(
        &prepared.config,
        &prepared.device,
        args.seed,
        prepared.compute,
    ) {
        Ok(t) => t,
        Err(e) => return crashed(format!("building the model failed: {e}")),
    };
    // The parameters the model actually holds, counted by the frozen side (`crate::flops`).
    let params = match training.state() {
        Ok(state) => crate::flops::count_params(&state, &prepared.config.model),
        Err(e) => return crashed(format!("reading the built model's parameters failed: {e}")),
    };
    looped.flops_per_token = crate::flops::training_flops_per_token(params, &prepared.config.model);
    {
        let mut snap = looped.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        snap.params = params.total;
        snap.flops_per_token = Some(looped.flops_per_token);
    }
    if let Some(loaded) = resumed {
        if let Err(e) = training.restore(loaded.state) {
            return crashed(format!("restoring the checkpoint failed: {e}"));
        }
        prepared.batches.set_position(loaded.progress.data_position);
        looped.progress = loaded.progress;
    }
    let vocab = prepared.config.model.vocab_size;
    let prior_elapsed = looped.progress.elapsed_s;
    let train_started = Instant::now();
    let mut last_checkpoint = Instant::now();
    while looped.budget_used() < 1.0 {
        let used = looped.budget_used();
        let stats = match training.step(&mut prepared.batches, used) {
            Ok(s) => s,
            Err(e) => {
                return crashed(format!(
                    "training step {} failed: {e}",
                    looped.progress.step + 1
                ))
            }
        };
        looped.progress.elapsed_s = prior_elapsed + train_started.elapsed().as_secs_f64();
        metrics::sample_device_memory(&prepared.device);
        let diverged = looped.record_step(
            stats.loss,
            stats.grad_norm,
            prepared.batches.tokens_drawn(),
            prepared.batches.position(),
            vocab,
        );
        let p = &looped.progress;
        metrics::emit(&json!({
            "event": "step",
            "step": p.step,
            "loss": stats.loss,
            "grad_norm": stats.grad_norm,
            "lr": stats.lr,
            "tokens": p.tokens,
            "tokens_per_s": p.tokens as f64 / p.elapsed_s.max(1e-9),
        }));
        {
            let mut snap = looped.snapshot.lock().unwrap_or_else(|p| p.into_inner());
            snap.steps = p.step;
            snap.tokens = p.tokens;
            snap.train_loss = looped.smoothed_loss();
        }
        if let Some(message) = diverged {
            return Outcome {
                status: Status::Diverged,
                val_bpb: None,
                error: Some(message),
            };
        }
        let due = match args.checkpoint_every {
            Some(CheckpointEvery::Steps(n)) => looped.progress.step % n == 0,
            Some(CheckpointEvery::Seconds(s)) => last_checkpoint.elapsed().as_secs_f64() >= s,
            None => false,
        };
        if due && looped.budget_used() < 1.0 {
            if let Err(e) = save_checkpoint(training.as_ref(), looped) {
                return crashed(format!("checkpoint failed: {e}"));
            }
            last_checkpoint = Instant::now();
        }
    }
    let (Some(split), Some(tokens)) = (args.split, prepared.eval_tokens.as_ref()) else {
        // Train only: the final state, for `eval` to score in its own process.
        return match save_checkpoint(training.as_ref(), looped) {
            Ok(()) => Outcome {
                status: Status::Ok,
                val_bpb: None,
                error: None,
            },
            Err(e) => crashed(format!("final checkpoint failed: {e}")),
        };
    };
    evaluation_outcome(
        training.as_ref(),
        split,
        tokens.tokens(),
        prepared.tokenizer.as_ref(),
        &prepared.device,
    )
}

/// The model's state and the loop's progress, saved where `eval` and a resume look for them.
fn save_checkpoint(training: &dyn Training, looped: &Loop<'_>) -> Result<(), String> {
    let args = looped.args;
    let state = training.state().map_err(|e| e.to_string())?;
    checkpoint::save(
        &args.out,
        args.seed,
        &looped.fingerprint,
        &looped.progress,
        state,
    )
    .map_err(|e| e.to_string())
}
