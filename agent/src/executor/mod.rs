//! Where training runs execute. The loop hands every run to an [`Executor`]: the local one runs
//! it as a child process on this machine (one slot per GPU, or CPU slots); the Slurm one
//! submits it as a batch job. Builds are not runs: they always happen here, in the worktree.

pub mod budget;
pub mod config;
pub mod local;
pub mod process;
pub mod slots;
pub mod slurm;

use std::path::PathBuf;
use std::time::Duration;

pub use config::{ExecutorConfig, ExecutorKind};
pub use local::LocalExecutor;
pub use slurm::SlurmExecutor;

use agentloop_guardrails::run_policy::DivergenceRule;
use agentloop_guardrails::target::TargetSpec;

use budget::Stop;
use process::Exit;

/// One training run, ready to execute: the rendered train command and where it runs.
#[derive(Debug, Clone)]
pub struct RunJob {
    /// The target's train command with its placeholders filled in, run with `sh -c`.
    pub command: String,
    /// The worktree whose build outputs the command uses (on a filesystem the workers share).
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// Resident memory ceiling (`None`: no ceiling).
    pub memory_limit: Option<u64>,
    /// Kill the run when its streamed loss goes NaN or blows up (`None`: no watch).
    pub divergence: Option<DivergenceRule>,
    /// The run's directory: `metrics.json` lands here and the log is `out/run.log`.
    pub out: PathBuf,
    /// A short readable name (`<change>-confirm-candidate-2`), for job names and logs.
    pub name: String,
}

impl RunJob {
    pub fn log(&self) -> PathBuf {
        self.out.join("run.log")
    }
}

/// How a run ended, and where it ran.
#[derive(Debug, Clone)]
pub struct Ran {
    pub exit: Exit,
    pub wall: Duration,
    /// The last few KiB of the run's output.
    pub tail: String,
    pub log: PathBuf,
    /// Which worker ran it, for the ledger: `local:0`, `slurm:12345`.
    pub worker: String,
}

/// Runs training jobs. `run` blocks the calling thread until the job ends, times out, or
/// `stop` fires (then the job is killed or cancelled and `Exit::Stopped` returned). Several
/// threads may call `run` at once; an executor runs at most `slots()` jobs at a time and
/// makes the others wait for a free slot.
pub trait Executor: Send + Sync {
    /// How many runs can execute at once.
    fn slots(&self) -> usize;
    /// One line for logs and the session_start event (`local, 2 slots`).
    fn describe(&self) -> String;
    fn run(&self, job: &RunJob, stop: &Stop) -> anyhow::Result<Ran>;
}

/// The executor `agentloop.toml`'s `[executor]` table asks for.
pub fn from_config(config: &ExecutorConfig) -> anyhow::Result<Box<dyn Executor>> {
    match config.kind {
        ExecutorKind::Local if config.gpus.is_empty() => {
            Ok(Box::new(LocalExecutor::new(config.slots)))
        }
        ExecutorKind::Local => Ok(Box::new(LocalExecutor::with_gpus(
            config.gpus.iter().copied().take(config.slots).collect(),
        ))),
        ExecutorKind::Slurm => Ok(Box::new(SlurmExecutor::new(
            config.slurm.clone(),
            config.slots,
        )?)),
    }
}

/// The executor the target's `[executor]` table asks for (one local slot by default).
pub fn for_target(target: &TargetSpec) -> anyhow::Result<Box<dyn Executor>> {
    from_config(&ExecutorConfig::from_target_extra(&target.extra)?)
}
