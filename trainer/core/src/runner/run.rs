//! `train`: one training run from start to finish, and the metrics it reports.

use super::inputs::prepare;
use super::outcome::{panic_message, Outcome};
use super::progress::Loop;
use super::records::{finish, finish_training, mfu, split_name};
use super::training_loop::train_and_evaluate;
use super::watchdog::{spawn_watchdog, Snapshot};
use super::{BuildTraining, RunArgs, EXIT_BAD_INPUT};
use crate::checkpoint::{self, Progress};
use crate::eval::EVAL_TOKENS;
use crate::metrics::{self, Metrics, Status};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Runs one training job and returns the process exit code.
pub fn run(args: &RunArgs, build: BuildTraining) -> i32 {
    let started = Instant::now();
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!(
            "error: cannot create output directory {}: {e}",
            args.out.display()
        );
        return EXIT_BAD_INPUT;
    }
    let mut prepared = match prepare(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e:#}");
            return EXIT_BAD_INPUT;
        }
    };
    let fingerprint = prepared.config.fingerprint();
    let resumed = if args.resume {
        match checkpoint::load(&args.out, args.seed, &fingerprint, &prepared.device) {
            Ok(loaded) => Some(loaded),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_BAD_INPUT;
            }
        }
    } else {
        None
    };
    let snapshot = Arc::new(Mutex::new(Snapshot {
        steps: 0,
        tokens: 0,
        train_loss: None,
        params: 0,
        flops_per_token: None,
        finished: false,
    }));
    if let Some(limit) = args.timeout {
        spawn_watchdog(
            args,
            limit.saturating_sub(started.elapsed()),
            started,
            snapshot.clone(),
        );
    }

    let mut looped = Loop {
        args,
        fingerprint,
        progress: Progress {
            step: 0,
            data_position: 0,
            tokens: 0,
            elapsed_s: 0.0,
            loss_ema: 0.0,
            ema_weight: 0.0,
            best_loss_ema: f64::INFINITY,
            last_loss: f64::NAN,
        },
        snapshot: snapshot.clone(),
        flops_per_token: 0.0,
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train_and_evaluate(&mut looped, &mut prepared, resumed, build)
    }))
    .unwrap_or_else(|panic| Outcome {
        status: Status::Crashed,
        val_bpb: None,
        error: Some(format!("panic: {}", panic_message(&panic))),
    });

    let mut snap = snapshot.lock().unwrap_or_else(|p| p.into_inner());
    snap.finished = true;
    let p = &looped.progress;
    let tokens_per_s = if p.elapsed_s > 0.0 {
        p.tokens as f64 / p.elapsed_s
    } else {
        0.0
    };
    let metrics = Metrics {
        val_bpb: outcome.val_bpb,
        split: split_name(args.split),
        train_loss: looped.smoothed_loss(),
        tokens: p.tokens,
        steps: p.step,
        wall_s: started.elapsed().as_secs_f64(),
        tokens_per_s,
        peak_mem_bytes: metrics::reported_peak_mem_bytes(),
        params: snap.params,
        seed: args.seed,
        status: outcome.status,
        eval_tokens: EVAL_TOKENS,
        device: format!("{:?}", args.device).to_lowercase(),
        flops_per_token: snap.flops_per_token,
        flops: snap.flops_per_token.map(|f| f * p.tokens as f64),
        flops_per_s: snap.flops_per_token.map(|f| f * tokens_per_s),
        mfu: mfu(args.device, tokens_per_s, snap.flops_per_token),
        error: outcome.error.clone(),
    };
    if args.split.is_none() {
        return finish_training(&args.out, &metrics);
    }
    finish(&args.out, &metrics)
}
