//! `agentloop-trainer train ...` and `agentloop-trainer eval ...`: see ARCHITECTURE.md §2 for
//! the contract.
//! `agentloop-trainer prepare ...`: documents in, token shards out (see `prepare`).

use agentloop_trainer::compute::{FusedChoice, Precision};
use agentloop_trainer::prepare::{self, input::Format, PrepareArgs};
use agentloop_trainer::runner::{self, DeviceKind, EvalArgs, RunArgs};
use agentloop_trainer::tokenizer::spec::TokenizerSpec;
use agentloop_trainer::{Budget, CheckpointEvery, Split};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "agentloop-trainer",
    version,
    about = "Train the small GPT and evaluate it in bits per byte"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceArg {
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, ValueEnum)]
enum DtypeArg {
    Auto,
    F32,
    Bf16,
}

#[derive(Clone, Copy, ValueEnum)]
enum FusedArg {
    Auto,
    On,
    Off,
}

#[derive(Subcommand)]
enum Command {
    /// Train within a budget. With --split, evaluate on it too and write OUT/metrics.json;
    /// without, never open the evaluation data: write OUT/checkpoint and
    /// OUT/train_metrics.json for `eval`.
    Train {
        /// Fixes the initialization and the data order.
        #[arg(long)]
        seed: u64,
        /// Split of the final evaluation (omit it to train only).
        #[arg(long)]
        split: Option<Split>,
        /// `30s` (wall clock), `200steps` or `500000tokens`.
        #[arg(long)]
        budget: Budget,
        /// Output directory (metrics.json, checkpoint/).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = runner::DEFAULT_CONFIG)]
        config: PathBuf,
        /// A folder of `*.txt` documents, or a folder made by `prepare` (has `manifest.json`).
        #[arg(long, default_value = runner::DEFAULT_DATA)]
        data: PathBuf,
        /// Continue from OUT/checkpoint (refused if there is none).
        #[arg(long)]
        resume: bool,
        /// Save a checkpoint every `N` steps (`N`, `Nsteps`) or seconds (`Ns`).
        #[arg(long)]
        checkpoint_every: Option<CheckpointEvery>,
        /// Hard wall-clock limit of the whole run, e.g. `10m`; exceeding it exits 4.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceArg,
        /// Training compute dtype; `auto` is bf16 on CUDA (f32 master weights and optimizer
        /// moments) and f32 on CPU, which refuses bf16. The evaluation is always f32.
        #[arg(long, value_enum, default_value = "auto")]
        dtype: DtypeArg,
        /// Fused kernels (RMSNorm, QK-norm with RoPE, causal softmax, ReLU^2, cross-entropy, AdamW);
        /// `auto` is on (CUDA and CPU); `off` is the composite candle ops.
        #[arg(long, value_enum, default_value = "auto")]
        fused: FusedArg,
    },
    /// Score the final checkpoint of a train-only run in OUT on a split; writes
    /// OUT/metrics.json (the training side merged from OUT/train_metrics.json).
    Eval {
        #[arg(long)]
        split: Split,
        /// The directory `train` (without --split) wrote.
        #[arg(long)]
        out: PathBuf,
        /// The config the run trained with (its fingerprint must match the checkpoint's).
        #[arg(long, default_value = runner::DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long, default_value = runner::DEFAULT_DATA)]
        data: PathBuf,
        /// Default: the device the run trained on.
        #[arg(long, value_enum)]
        device: Option<DeviceArg>,
    },
    /// Tokenize documents (text files or folders, JSONL, Parquet) into token shards in OUT.
    /// Re-running with the same inputs and settings reuses finished shards.
    Prepare {
        /// Files or folders (folders are read recursively, in sorted order).
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "auto")]
        format: Format,
        /// JSONL field or Parquet column holding the text.
        #[arg(long, default_value = "text")]
        field: String,
        /// `byte`, `gpt2` or `bpe:<vocab size>` (trained on the training split).
        #[arg(long, default_value = "byte")]
        tokenizer: TokenizerSpec,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        val_docs: u64,
        #[arg(long, default_value_t = 1)]
        holdout_docs: u64,
        #[arg(long, default_value_t = 0)]
        split_seed: u64,
        /// A shard closes after the document that brings it to this many tokens.
        #[arg(long, default_value_t = PrepareArgs::DEFAULT_SHARD_TOKENS)]
        shard_tokens: u64,
        /// Training text the BPE trainer reads at most (bounds its memory).
        #[arg(long, default_value_t = PrepareArgs::DEFAULT_BPE_TRAIN_BYTES)]
        bpe_train_bytes: u64,
        /// Hide the progress bar (it is hidden anyway when stderr is not a terminal).
        #[arg(long)]
        quiet: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Prepare {
            input,
            format,
            field,
            tokenizer,
            out,
            val_docs,
            holdout_docs,
            split_seed,
            shard_tokens,
            bpe_train_bytes,
            quiet,
        } => run_prepare(PrepareArgs {
            inputs: input,
            format,
            field,
            tokenizer,
            out,
            val_docs,
            holdout_docs,
            split_seed,
            shard_tokens,
            bpe_train_bytes,
            progress: !quiet,
        }),
        Command::Eval {
            split,
            out,
            config,
            data,
            device,
        } => {
            single_threaded_by_default();
            keep_freed_memory();
            runner::evaluate_run(
                &EvalArgs {
                    split,
                    out,
                    config,
                    data,
                    device: device.map(device_kind),
                },
                agentloop_trainer::train::build_with,
            )
        }
        Command::Train {
            seed,
            split,
            budget,
            out,
            config,
            data,
            resume,
            checkpoint_every,
            timeout,
            device,
            dtype,
            fused,
        } => {
            single_threaded_by_default();
            keep_freed_memory();
            runner::run(
                &RunArgs {
                    seed,
                    split,
                    budget,
                    out,
                    config,
                    data,
                    resume,
                    checkpoint_every,
                    timeout,
                    device: device_kind(device),
                    precision: match dtype {
                        DtypeArg::Auto => Precision::Auto,
                        DtypeArg::F32 => Precision::F32,
                        DtypeArg::Bf16 => Precision::Bf16,
                    },
                    fused: match fused {
                        FusedArg::Auto => FusedChoice::Auto,
                        FusedArg::On => FusedChoice::On,
                        FusedArg::Off => FusedChoice::Off,
                    },
                },
                agentloop_trainer::train::build_with,
            )
        }
    };
    std::process::exit(code);
}

/// The default model is too small to gain from threads, and on a shared 2-core machine
/// idle-spinning rayon workers made steps about 4x slower; RAYON_NUM_THREADS overrides.
/// (`prepare` keeps every core.)
fn single_threaded_by_default() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
}

/// Keeps freed memory in the heap: every step allocates and frees the same few-hundred-KiB
/// activation buffers, and glibc's default (return the heap's top to the OS, serve big blocks
/// by mmap) made each step fault in and zero fresh pages (about 10% of a CPU step).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
    }
}

fn device_kind(device: DeviceArg) -> DeviceKind {
    match device {
        DeviceArg::Cpu => DeviceKind::Cpu,
        DeviceArg::Cuda => DeviceKind::Cuda,
    }
}

fn run_prepare(args: PrepareArgs) -> i32 {
    match prepare::prepare(&args) {
        Ok(summary) => {
            let m = &summary.manifest;
            println!(
                "{}",
                serde_json::json!({
                    "event": "prepared",
                    "out": args.out,
                    "tokenizer": m.tokenizer.to_string(),
                    "vocab_size": m.vocab_size,
                    "token_width": m.token_width,
                    "train_tokens": m.train.tokens,
                    "val_tokens": m.val.tokens,
                    "holdout_tokens": m.holdout.tokens,
                    "documents": m.train.documents + m.val.documents + m.holdout.documents,
                    "shards_written": summary.shards_written,
                    "shards_reused": summary.shards_reused,
                })
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            runner::EXIT_BAD_INPUT
        }
    }
}
