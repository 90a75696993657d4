//! Runs jobs as child processes of the loop, on this machine.

use anyhow::Context;

use super::{Executor, Ran, RunJob};
use crate::orchestrator::budget::Stop;
use crate::orchestrator::process::{self, Job};

pub struct LocalExecutor {
    slots: usize,
}

impl LocalExecutor {
    pub fn new(slots: usize) -> LocalExecutor {
        LocalExecutor {
            slots: slots.max(1),
        }
    }
}

impl Executor for LocalExecutor {
    fn slots(&self) -> usize {
        self.slots
    }

    fn describe(&self) -> String {
        format!("local, {} slot(s)", self.slots)
    }

    fn run(&self, job: &RunJob, stop: &Stop) -> anyhow::Result<Ran> {
        if job.out.exists() {
            // A leftover of an interrupted attempt must not be mistaken for this run's output.
            std::fs::remove_dir_all(&job.out)
                .with_context(|| format!("clearing {}", job.out.display()))?;
        }
        std::fs::create_dir_all(&job.out)
            .with_context(|| format!("creating {}", job.out.display()))?;
        let finished = process::run(
            &Job {
                command: &job.command,
                cwd: &job.cwd,
                env: job.env.clone(),
                timeout: job.timeout,
                memory_limit: job.memory_limit,
                log: job.log(),
            },
            stop,
        )
        .context("starting the train command")?;
        Ok(Ran {
            exit: finished.exit,
            wall: finished.wall,
            tail: finished.tail,
            log: finished.log,
            worker: "local:0".into(),
        })
    }
}
