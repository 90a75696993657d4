//! What executing a run as a Slurm job costs on top of the run itself: trivial runs (`true`)
//! through the local executor and through the Slurm executor on the tests' one-node cluster,
//! one at a time and two at once. Needs `apt-get install slurm-wlm munge` and root.
//!
//! `cargo run -p agentloop-tests --example slurm_overhead [runs]`

use std::time::{Duration, Instant};

use agentloop::executor::budget::Stop;
use agentloop::executor::config::SlurmConfig;
use agentloop::executor::process::Exit;
use agentloop::executor::{Executor, LocalExecutor, RunJob, SlurmExecutor};
use agentloop_tests::slurm::Cluster;

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20);
    let cluster = Cluster::start()?;
    std::env::set_var("SLURM_CONF", cluster.conf());
    let dir = tempfile::tempdir()?;

    println!("{runs} trivial runs (`true`) per row; wall = first call to last return");
    println!("| executor | at once | wall s | s per run | runs per hour |");
    println!("|---|---|---|---|---|");
    let local = LocalExecutor::new(1);
    row("local", 1, &local, runs, dir.path())?;
    for slots in [1, 2] {
        let slurm = SlurmExecutor::new(SlurmConfig::default(), slots)?;
        row("slurm", slots, &slurm, runs, dir.path())?;
    }
    Ok(())
}

fn row(
    label: &str,
    at_once: usize,
    exec: &dyn Executor,
    runs: usize,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..at_once)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if i >= runs {
                            return Ok(());
                        }
                        let name = format!("{label}-{at_once}-{i}");
                        let job = RunJob {
                            command: "true".into(),
                            cwd: dir.to_path_buf(),
                            env: vec![],
                            timeout: Duration::from_secs(60),
                            memory_limit: None,
                            divergence: None,
                            out: dir.join(&name),
                            name,
                        };
                        let ran = exec.run(&job, &Stop::never())?;
                        anyhow::ensure!(ran.exit == Exit::Code(Some(0)), "{}", ran.tail);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker thread")?;
        }
        Ok(())
    })?;
    let wall = started.elapsed().as_secs_f64();
    let per_run = wall / runs as f64;
    println!(
        "| {label} | {at_once} | {wall:.1} | {per_run:.2} | {:.0} |",
        3600.0 / per_run
    );
    Ok(())
}
