//! `agentloop-trainer train ...`: see ARCHITECTURE.md §2 for the contract.

use agentloop_trainer::runner::{self, DeviceKind, RunArgs};
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

#[derive(Subcommand)]
enum Command {
    /// Train within a budget, then evaluate on the chosen split; writes OUT/metrics.json.
    Train {
        /// Fixes the initialization and the data order.
        #[arg(long)]
        seed: u64,
        /// Split of the final evaluation.
        #[arg(long)]
        split: Split,
        /// `30s` (wall clock), `200steps` or `500000tokens`.
        #[arg(long)]
        budget: Budget,
        /// Output directory (metrics.json, checkpoint/).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = runner::DEFAULT_CONFIG)]
        config: PathBuf,
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
    },
}

fn main() {
    // The default model is too small to gain from threads, and on a shared 2-core machine
    // idle-spinning rayon workers made steps about 4x slower; RAYON_NUM_THREADS overrides.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let cli = Cli::parse();
    let code = match cli.command {
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
        } => runner::run(&RunArgs {
            seed,
            split,
            budget,
            out,
            config,
            data,
            resume,
            checkpoint_every,
            timeout,
            device: match device {
                DeviceArg::Cpu => DeviceKind::Cpu,
                DeviceArg::Cuda => DeviceKind::Cuda,
            },
        }),
    };
    std::process::exit(code);
}
