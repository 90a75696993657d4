//! `eval`: scores the final checkpoint of a train-only run in its own process.

use super::access::EvalAccess;
use super::inputs::{load_config, open_device};
use super::outcome::{evaluation_outcome, panic_message, Outcome};
use super::records::finish;
use super::{BuildTraining, DeviceKind, EXIT_BAD_INPUT, TRAIN_METRICS};
use crate::checkpoint;
use crate::compute::Compute;
use crate::config::Split;
use crate::contract::Training;
use crate::data;
use crate::eval::EVAL_TOKENS;
use crate::metrics::{self, Metrics, Status};
use crate::tokenizer::Tokenizer;
use candle_core::Device;
use std::path::PathBuf;
use std::time::Instant;

/// `agentloop-trainer eval`: scores the final checkpoint of a train-only run in `out`.
#[derive(Debug, Clone)]
pub struct EvalArgs {
    pub split: Split,
    pub out: PathBuf,
    pub config: PathBuf,
    pub data: PathBuf,
    /// `None`: the device the run trained on.
    pub device: Option<DeviceKind>,
}

/// What `eval` loads before scoring; any failure here is bad input (exit 2).
struct EvalInputs {
    record: metrics::TrainRecord,
    training: Box<dyn Training>,
    tokenizer: Box<dyn Tokenizer>,
    device: Device,
    device_kind: DeviceKind,
    tokens: data::EvalTokens,
}

fn prepare_eval(args: &EvalArgs, build: BuildTraining) -> anyhow::Result<EvalInputs> {
    let path = args.out.join(TRAIN_METRICS);
    let text = std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {} ({e}): run `agentloop-trainer train` without --split into this directory first",
            path.display()
        )
    })?;
    let record: metrics::TrainRecord = serde_json::from_slice(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a training record: {e}", path.display()))?;
    if record.status != Status::Ok {
        anyhow::bail!(
            "{}: the training run ended with status {:?}; there is nothing to evaluate",
            path.display(),
            record.status
        );
    }
    let (config, tokenizer) = load_config(&args.config, &args.data)?;
    let device_kind = args.device.unwrap_or(if record.device == "cuda" {
        DeviceKind::Cuda
    } else {
        DeviceKind::Cpu
    });
    let device = open_device(device_kind)?;
    let loaded = checkpoint::load(&args.out, record.seed, &config.fingerprint(), &device)?;
    let mut training = build(&config, &device, record.seed, Compute::for_device(&device))
        .map_err(|e| anyhow::anyhow!("building the model failed: {e}"))?;
    training
        .restore(loaded.state)
        .map_err(|e| anyhow::anyhow!("restoring the checkpoint failed: {e}"))?;
    let tokens = data::load_eval_tokens(
        &args.data,
        args.split,
        tokenizer.as_ref(),
        &EvalAccess::new(),
    )?;
    Ok(EvalInputs {
        record,
        training,
        tokenizer,
        device,
        device_kind,
        tokens,
    })
}

/// Runs `agentloop-trainer eval` and returns the process exit code: writes `out/metrics.json`
/// as `train --split` would have, the training side taken from `train_metrics.json`.
pub fn evaluate_run(args: &EvalArgs, build: BuildTraining) -> i32 {
    let started = Instant::now();
    let inputs = match prepare_eval(args, build) {
        Ok(inputs) => inputs,
        Err(e) => {
            eprintln!("error: {e:#}");
            return EXIT_BAD_INPUT;
        }
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        evaluation_outcome(
            inputs.training.as_ref(),
            args.split,
            inputs.tokens.tokens(),
            inputs.tokenizer.as_ref(),
            &inputs.device,
        )
    }))
    .unwrap_or_else(|panic| Outcome {
        status: Status::Crashed,
        val_bpb: None,
        error: Some(format!("panic: {}", panic_message(&panic))),
    });
    let r = &inputs.record;
    let metrics = Metrics {
        val_bpb: outcome.val_bpb,
        split: args.split.name(),
        train_loss: r.train_loss,
        tokens: r.tokens,
        steps: r.steps,
        wall_s: r.wall_s + started.elapsed().as_secs_f64(),
        tokens_per_s: r.tokens_per_s,
        peak_mem_bytes: r.peak_mem_bytes.max(metrics::reported_peak_mem_bytes()),
        params: r.params,
        seed: r.seed,
        status: outcome.status,
        eval_tokens: EVAL_TOKENS,
        device: format!("{:?}", inputs.device_kind).to_lowercase(),
        flops_per_token: r.flops_per_token,
        flops: r.flops,
        flops_per_s: r.flops_per_token.map(|f| f * r.tokens_per_s),
        mfu: r.mfu,
        error: outcome.error,
    };
    finish(&args.out, &metrics)
}
