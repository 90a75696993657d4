//! One training run: load inputs, train within the budget, fail fast on divergence,
//! checkpoint, then either evaluate on the requested split and write `metrics.json` (`train
//! --split S`), or save the final checkpoint and `train_metrics.json` without ever opening the
//! evaluation data (`train` alone; `eval` then scores the checkpoint in another process, see
//! `evaluate_run`). Frozen.

use crate::checkpoint::{self, Progress};
use crate::compute::{Compute, FusedChoice, Precision};
use crate::config::{Budget, CheckpointEvery, Config, Split};
use crate::contract::Training;
use crate::data::{self, TrainBatches};
use crate::eval::{EvalError, EVAL_TOKENS};
use crate::metrics::{self, Metrics, Status};
use crate::tokenizer::Tokenizer;
use candle_core::Device;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Exit code for bad input or usage (no metrics are written).
pub const EXIT_BAD_INPUT: i32 = 2;
/// Smoothing of the reported training loss.
const LOSS_EMA_BETA: f64 = 0.9;
/// A step whose loss exceeds this multiple of the best smoothed loss is a blow-up.
const BLOWUP_FACTOR: f64 = 2.5;
/// A step whose loss exceeds this multiple of ln(vocab) (a fresh model's loss) is a blow-up.
const BLOWUP_UNIFORM_FACTOR: f64 = 2.0;
/// Steps before the relative blow-up rule applies (the smoothed loss needs a few values).
const BLOWUP_GRACE_STEPS: u64 = 10;

/// How the runner builds the editable training code: the recipe's `train::build_with` (model,
/// optimizer and step for a config, device, seed and computation), handed in by the binary so
/// that this crate does not depend on the recipe.
pub type BuildTraining =
    fn(&Config, &Device, u64, Compute) -> candle_core::Result<Box<dyn Training>>;

/// Proof of being the frozen runner: only this module can create one, and the validation and
/// holdout tokens cannot be loaded without it.
pub struct EvalAccess(());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

#[derive(Debug, Clone)]
pub struct RunArgs {
    pub seed: u64,
    /// The split of the final evaluation; `None` trains only (see the module doc).
    pub split: Option<Split>,
    pub budget: Budget,
    pub out: PathBuf,
    pub config: PathBuf,
    pub data: PathBuf,
    pub resume: bool,
    pub checkpoint_every: Option<CheckpointEvery>,
    pub timeout: Option<Duration>,
    pub device: DeviceKind,
    /// `--dtype`: the training compute dtype (auto: bf16 on CUDA, f32 on CPU).
    pub precision: Precision,
    /// `--fused`: the fused kernels (auto: on, CUDA and CPU).
    pub fused: FusedChoice,
}

/// Everything loaded before training starts; any failure here is bad input (exit 2).
struct Prepared {
    config: Config,
    tokenizer: Box<dyn Tokenizer>,
    device: Device,
    compute: Compute,
    batches: TrainBatches,
    /// Loaded before training (bad data fails fast), only when the run evaluates.
    eval_tokens: Option<data::EvalTokens>,
}

/// The config and the data's tokenizer, checked against each other.
fn load_config(config: &Path, data: &Path) -> anyhow::Result<(Config, Box<dyn Tokenizer>)> {
    let parsed = crate::config::load(config)?;
    let tokenizer = data::tokenizer_for(data)?;
    if parsed.model.vocab_size < tokenizer.vocab_size() {
        anyhow::bail!(
            "config file {}: `model.vocab_size` is {} but the tokenizer has {} tokens",
            config.display(),
            parsed.model.vocab_size,
            tokenizer.vocab_size()
        );
    }
    Ok((parsed, tokenizer))
}

fn open_device(kind: DeviceKind) -> anyhow::Result<Device> {
    Ok(match kind {
        DeviceKind::Cpu => Device::Cpu,
        DeviceKind::Cuda => {
            Device::new_cuda(0).map_err(|e| anyhow::anyhow!("cannot open CUDA device 0: {e}"))?
        }
    })
}

fn prepare(args: &RunArgs) -> anyhow::Result<Prepared> {
    let (config, tokenizer) = load_config(&args.config, &args.data)?;
    let device = open_device(args.device)?;
    let compute = Compute::resolve(&device, args.precision, args.fused)?;
    let batches = TrainBatches::load(
        &args.data,
        tokenizer.as_ref(),
        config.train.batch_size,
        config.model.seq_len,
        args.seed,
        &device,
    )?;
    let eval_tokens = args
        .split
        .map(|split| data::load_eval_tokens(&args.data, split, tokenizer.as_ref(), &EvalAccess(())))
        .transpose()?;
    Ok(Prepared {
        config,
        tokenizer,
        device,
        compute,
        batches,
        eval_tokens,
    })
}

/// What the timeout watchdog needs to write a `timed_out` record.
#[derive(Clone)]
struct Snapshot {
    steps: u64,
    tokens: u64,
    train_loss: Option<f64>,
    params: usize,
    flops_per_token: Option<f64>,
    finished: bool,
}

struct Outcome {
    status: Status,
    val_bpb: Option<f64>,
    error: Option<String>,
}

struct Loop<'a> {
    args: &'a RunArgs,
    fingerprint: String,
    progress: Progress,
    snapshot: Arc<Mutex<Snapshot>>,
    /// The built model's training FLOPs per token (`crate::flops`); set once it is built.
    flops_per_token: f64,
}

impl Loop<'_> {
    fn smoothed_loss(&self) -> Option<f64> {
        (self.progress.ema_weight > 0.0).then(|| self.progress.loss_ema / self.progress.ema_weight)
    }

    fn budget_used(&self) -> f64 {
        let p = &self.progress;
        match self.args.budget {
            Budget::Tokens(n) => p.tokens as f64 / n as f64,
            Budget::Steps(n) => p.step as f64 / n as f64,
            Budget::Seconds(s) => p.elapsed_s / s,
            Budget::Flops(f) => p.tokens as f64 * self.flops_per_token / f,
        }
    }

    /// Returns the divergence message, if the step diverged.
    fn record_step(
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

/// `split` of the records a run writes: the evaluated split, or `train` for a run that only
/// trains (its `metrics.json`, written only on failure, then says where it failed).
fn split_name(split: Option<Split>) -> &'static str {
    split.map_or("train", Split::name)
}

/// A train-only run: `train_metrics.json` always (what `eval` merges), `metrics.json` too when
/// training failed, so that the failure is reported as with `--split`.
fn finish_training(out: &Path, metrics: &Metrics) -> i32 {
    if let Err(e) = metrics::write_named(out, TRAIN_METRICS, metrics) {
        eprintln!(
            "error: cannot write {}: {e}",
            out.join(TRAIN_METRICS).display()
        );
        return Status::Crashed.exit_code();
    }
    if metrics.status != Status::Ok {
        return finish(out, metrics);
    }
    metrics::emit(&json!({
        "event": "trained",
        "status": metrics.status,
        "steps": metrics.steps,
        "tokens": metrics.tokens,
        "wall_s": metrics.wall_s,
    }));
    metrics.status.exit_code()
}

/// Model FLOPs utilization, reported on CUDA only (a CPU has no meaningful bf16 peak).
fn mfu(device: DeviceKind, tokens_per_s: f64, flops_per_token: Option<f64>) -> Option<f64> {
    (device == DeviceKind::Cuda)
        .then(|| flops_per_token.map(|f| tokens_per_s * f / metrics::peak_flops()))
        .flatten()
}

fn finish(out: &Path, metrics: &Metrics) -> i32 {
    if let Some(error) = &metrics.error {
        eprintln!("error: {error}");
    }
    if let Err(e) = metrics::write(out, metrics) {
        eprintln!(
            "error: cannot write {}: {e}",
            out.join("metrics.json").display()
        );
        return Status::Crashed.exit_code();
    }
    metrics::emit(&json!({
        "event": "done",
        "status": metrics.status,
        "val_bpb": metrics.val_bpb,
        "split": metrics.split,
        "steps": metrics.steps,
        "tokens": metrics.tokens,
        "wall_s": metrics.wall_s,
    }));
    metrics.status.exit_code()
}

fn train_and_evaluate(
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
            let saved = training
                .state()
                .map_err(|e| e.to_string())
                .and_then(|state| {
                    checkpoint::save(
                        &args.out,
                        args.seed,
                        &looped.fingerprint,
                        &looped.progress,
                        state,
                    )
                    .map_err(|e| e.to_string())
                });
            if let Err(e) = saved {
                return crashed(format!("checkpoint failed: {e}"));
            }
            last_checkpoint = Instant::now();
        }
    }
    let (Some(split), Some(tokens)) = (args.split, prepared.eval_tokens.as_ref()) else {
        // Train only: the final state, for `eval` to score in its own process.
        let saved = training
            .state()
            .map_err(|e| e.to_string())
            .and_then(|state| {
                checkpoint::save(
                    &args.out,
                    args.seed,
                    &looped.fingerprint,
                    &looped.progress,
                    state,
                )
                .map_err(|e| e.to_string())
            });
        return match saved {
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

/// The guarded evaluation (`stateless::evaluate`) as the run's outcome.
fn evaluation_outcome(
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

/// Writes a `timed_out` record and exits 4 when the run outlives `--timeout`, wherever it is
/// stuck (a step, the evaluation, a checkpoint).
fn spawn_watchdog(
    args: &RunArgs,
    remaining: Duration,
    started: Instant,
    snapshot: Arc<Mutex<Snapshot>>,
) {
    let args = args.clone();
    std::thread::spawn(move || {
        std::thread::sleep(remaining);
        let snap = snapshot.lock().unwrap_or_else(|p| p.into_inner());
        if snap.finished {
            return;
        }
        let wall_s = started.elapsed().as_secs_f64();
        let metrics = Metrics {
            val_bpb: None,
            split: split_name(args.split),
            train_loss: snap.train_loss,
            tokens: snap.tokens,
            steps: snap.steps,
            wall_s,
            tokens_per_s: snap.tokens as f64 / wall_s.max(1e-9),
            peak_mem_bytes: metrics::reported_peak_mem_bytes(),
            params: snap.params,
            seed: args.seed,
            status: Status::TimedOut,
            eval_tokens: EVAL_TOKENS,
            device: format!("{:?}", args.device).to_lowercase(),
            flops_per_token: snap.flops_per_token,
            flops: snap.flops_per_token.map(|f| f * snap.tokens as f64),
            flops_per_s: None,
            mfu: None,
            error: Some(format!(
                "the run exceeded its timeout of {}",
                humantime::format_duration(args.timeout.unwrap_or_default())
            )),
        };
        let code = match args.split {
            Some(_) => finish(&args.out, &metrics),
            None => finish_training(&args.out, &metrics),
        };
        std::process::exit(code);
    });
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Written by a train-only run: the training side of its metrics, merged by `eval`.
pub const TRAIN_METRICS: &str = "train_metrics.json";

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
    let tokens =
        data::load_eval_tokens(&args.data, args.split, tokenizer.as_ref(), &EvalAccess(()))?;
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

/// Default `--config`, relative to the current directory (the loop runs in the repo root).
pub const DEFAULT_CONFIG: &str = "trainer/config/default.toml";
/// Default `--data`, relative to the current directory.
pub const DEFAULT_DATA: &str = "trainer/data/shakespeare";
