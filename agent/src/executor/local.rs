//! Runs jobs as child processes of the loop, on this machine: a pool of slots, one per GPU
//! listed in `[executor] gpus` (the run sees only its GPU through `CUDA_VISIBLE_DEVICES`), or
//! CPU slots that split the cores between them.

use anyhow::Context;

use super::budget::Stop;
use super::process::{self, Job};
use super::slots::SlotPool;
use super::{Executor, Ran, RunJob};

pub struct LocalExecutor {
    pool: SlotPool,
    /// The GPU of each slot; empty for CPU slots.
    gpus: Vec<u32>,
    /// Threads each CPU slot may use (`None`: leave the trainer's own default).
    cpu_threads: Option<usize>,
}

impl LocalExecutor {
    /// `slots` CPU slots.
    pub fn new(slots: usize) -> LocalExecutor {
        let slots = slots.max(1);
        LocalExecutor {
            pool: SlotPool::new(slots),
            gpus: Vec::new(),
            cpu_threads: cpu_threads_per_slot(slots, available_cores()),
        }
    }

    /// One slot per GPU id; `slots` beyond the list are refused by the config check.
    pub fn with_gpus(gpus: Vec<u32>) -> LocalExecutor {
        LocalExecutor {
            pool: SlotPool::new(gpus.len()),
            gpus,
            cpu_threads: None,
        }
    }

    /// The environment slot `slot` adds to a run.
    fn slot_env(&self, slot: usize) -> Vec<(String, String)> {
        if let Some(gpu) = self.gpus.get(slot) {
            return vec![("CUDA_VISIBLE_DEVICES".into(), gpu.to_string())];
        }
        let Some(threads) = self.cpu_threads else {
            return Vec::new();
        };
        // The user's own setting wins; the cap only keeps slots from oversubscribing cores.
        ["RAYON_NUM_THREADS", "OMP_NUM_THREADS"]
            .into_iter()
            .filter(|k| std::env::var_os(k).is_none())
            .map(|k| (k.to_string(), threads.to_string()))
            .collect()
    }
}

/// Removes `dir`, retrying while a run orphaned by a killed loop may still be writing into it.
fn clear_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            other => return other,
        }
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Cores per CPU slot when several share the machine; one slot keeps the trainer's default
/// (the default CPU trainer picks one thread itself: more made it slower on small models).
fn cpu_threads_per_slot(slots: usize, cores: usize) -> Option<usize> {
    (slots > 1).then(|| (cores / slots).max(1))
}

impl Executor for LocalExecutor {
    fn slots(&self) -> usize {
        self.pool.size()
    }

    fn describe(&self) -> String {
        let n = self.pool.size();
        if self.gpus.is_empty() {
            format!("local, {n} CPU slot(s)")
        } else {
            let ids: Vec<String> = self.gpus.iter().map(u32::to_string).collect();
            format!("local, {n} GPU slot(s) (GPUs {})", ids.join(","))
        }
    }

    fn run(&self, job: &RunJob, stop: &Stop) -> anyhow::Result<Ran> {
        let Some(slot) = self.pool.acquire(stop) else {
            return Ok(Ran {
                exit: process::Exit::Stopped,
                wall: std::time::Duration::ZERO,
                tail: String::new(),
                log: job.log(),
                worker: "local".into(),
            });
        };
        if job.out.exists() {
            // A leftover of an interrupted attempt must not be mistaken for this run's output.
            clear_dir(&job.out).with_context(|| format!("clearing {}", job.out.display()))?;
        }
        std::fs::create_dir_all(&job.out)
            .with_context(|| format!("creating {}", job.out.display()))?;
        let mut env = job.env.clone();
        env.extend(self.slot_env(slot.index()));
        let finished = process::run(
            &Job {
                command: &job.command,
                cwd: &job.cwd,
                env,
                timeout: job.timeout,
                memory_limit: job.memory_limit,
                divergence: job.divergence,
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
            worker: format!("local:{}", slot.index()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cpu_slots_split_the_cores_and_one_slot_keeps_the_default() {
        assert_eq!(cpu_threads_per_slot(1, 8), None);
        assert_eq!(cpu_threads_per_slot(2, 8), Some(4));
        assert_eq!(cpu_threads_per_slot(3, 2), Some(1));
    }

    fn job(dir: &std::path::Path, name: &str) -> RunJob {
        RunJob {
            command: "echo \"gpu=$CUDA_VISIBLE_DEVICES\"; sleep 0.2".into(),
            cwd: dir.to_path_buf(),
            env: Vec::new(),
            timeout: Duration::from_secs(30),
            memory_limit: None,
            divergence: None,
            out: dir.join(name),
            name: name.into(),
        }
    }

    #[test]
    fn each_gpu_slot_sees_only_its_gpu_and_names_its_worker() {
        let dir = tempfile::tempdir().unwrap();
        let exec = LocalExecutor::with_gpus(vec![3, 5]);
        assert_eq!(exec.slots(), 2);
        let stop = Stop::new();
        let ran: Vec<Ran> = std::thread::scope(|s| {
            let handles: Vec<_> = ["a", "b"]
                .iter()
                .map(|name| {
                    let (exec, stop, job) = (&exec, &stop, job(dir.path(), name));
                    s.spawn(move || exec.run(&job, stop).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut seen: Vec<(String, String)> = ran
            .iter()
            .map(|r| (r.worker.clone(), r.tail.trim().to_string()))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("local:0".to_string(), "gpu=3".to_string()),
                ("local:1".to_string(), "gpu=5".to_string())
            ]
        );
    }

    #[test]
    fn a_run_waiting_for_a_slot_returns_stopped_when_the_loop_stops() {
        let dir = tempfile::tempdir().unwrap();
        let exec = LocalExecutor::new(1);
        let stop = Stop::new();
        let mut long = job(dir.path(), "long");
        long.command = "sleep 30".into();
        let ran = std::thread::scope(|s| {
            let first = s.spawn(|| exec.run(&long, &stop).unwrap());
            std::thread::sleep(Duration::from_millis(100));
            let waiting = s.spawn(|| exec.run(&job(dir.path(), "queued"), &stop).unwrap());
            std::thread::sleep(Duration::from_millis(100));
            stop.request("test");
            (first.join().unwrap(), waiting.join().unwrap())
        });
        assert_eq!(ran.0.exit, process::Exit::Stopped);
        assert_eq!(ran.1.exit, process::Exit::Stopped);
        assert!(
            !dir.path().join("queued").exists(),
            "a run that never got a slot never started"
        );
    }
}
