//! A real one-node Slurm cluster for tests, hermetic: its own munged (key, socket, pid and
//! log in a temporary directory), its own slurmctld and slurmd on free ports of 127.0.0.1, its
//! own `slurm.conf` (clients find it through `SLURM_CONF`), no cgroups, no accounting
//! database (finished jobs are written to a jobcomp text file). Everything stops on drop.
//! It needs Debian's `slurm-wlm` and `munge` packages and root (slurmd runs jobs as their user).

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const CLIENTS: [&str; 6] = ["sbatch", "squeue", "sinfo", "scontrol", "scancel", "sacct"];
const DAEMONS: [&str; 3] = ["munged", "slurmctld", "slurmd"];

pub struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
    /// Started in this order; stopped in the reverse one.
    daemons: Vec<(&'static str, Child)>,
}

/// A job as squeue shows it.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    pub id: String,
    pub name: String,
    pub state: String,
}

/// The full path of `program` on PATH or in the sbin directories, where Debian puts daemons.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// RealMemory for the node: a bit under what the machine has (slurmd drains a node that
/// claims more than it has).
fn real_memory_mb() -> Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("MemTotal in /proc/meminfo")?;
    Ok(kb / 1024 * 9 / 10)
}

impl Cluster {
    /// Starts the cluster and waits until its node is idle.
    pub fn start() -> Result<Cluster> {
        let missing: Vec<&str> = CLIENTS
            .iter()
            .chain(DAEMONS.iter())
            .copied()
            .filter(|p| find_program(p).is_none())
            .collect();
        if !missing.is_empty() {
            bail!(
                "the Slurm tests need a local cluster; missing {}: install them with `apt-get install slurm-wlm munge`",
                missing.join(", ")
            );
        }
        // SAFETY: geteuid has no preconditions and touches no memory of ours.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the Slurm tests start slurmd, which must run as root");
        }
        let dir = tempfile::Builder::new().prefix("slurm-test").tempdir()?;
        let d = dir.path();
        // munged refuses a socket directory others cannot reach and a key others can read.
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        for sub in ["state", "spool"] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        let key = d.join("munge.key");
        let mut bytes = vec![0u8; 1024];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
        std::fs::write(&key, &bytes)?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400))?;
        let socket = d.join("munge.socket");
        let conf = d.join("slurm.conf");
        std::fs::write(&conf, slurm_conf(d, &socket)?)?;

        let mut cluster = Cluster {
            conf: conf.clone(),
            daemons: Vec::new(),
            dir,
        };
        let d = cluster.dir.path().to_path_buf();
        let mut munged = Command::new(find_program("munged").expect("checked"));
        munged
            .args(["-F", "-f"])
            .arg(format!("--key-file={}", key.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", d.join("munged.pid").display()))
            .arg(format!("--log-file={}", d.join("munged.log").display()))
            .arg(format!("--seed-file={}", d.join("munged.seed").display()));
        cluster.spawn("munged", munged)?;
        cluster.wait_for("the munge socket", Duration::from_secs(10), |_| {
            socket.exists()
        })?;
        let mut ctld = Command::new(find_program("slurmctld").expect("checked"));
        ctld.args(["-D", "-i", "-f"]).arg(&conf);
        cluster.spawn("slurmctld", ctld)?;
        let mut slurmd = Command::new(find_program("slurmd").expect("checked"));
        slurmd.args(["-D", "-N", "localhost", "-f"]).arg(&conf);
        cluster.spawn("slurmd", slurmd)?;
        cluster.wait_for("the node to be idle", Duration::from_secs(60), |c| {
            c.output("sinfo", &["-h", "-o", "%T"])
                .map(|s| s.trim() == "idle")
                .unwrap_or(false)
        })?;
        Ok(cluster)
    }

    fn spawn(&mut self, name: &'static str, mut cmd: Command) -> Result<()> {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.out")))?;
        cmd.env("SLURM_CONF", &self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        self.daemons.push((name, child));
        Ok(())
    }

    fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&Cluster) -> bool,
    ) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if ready(self) {
                return Ok(());
            }
            for (name, child) in &mut self.daemons {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "{name} exited ({status}) while waiting for {what}:\n{}",
                        daemon_logs(self.dir.path())
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "timed out waiting for {what}:\n{}",
            daemon_logs(self.dir.path())
        )
    }

    /// `SLURM_CONF` for clients of this cluster (set it on the agentloop process under test).
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// A client command of this cluster.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf).stdin(Stdio::null());
        c
    }

    /// Runs a client command; its stdout, or an error with its stderr.
    pub fn output(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = self.command(program).args(args).output()?;
        if !out.status.success() {
            bail!(
                "{program} {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Every job in the queue.
    pub fn queue(&self) -> Result<Vec<QueuedJob>> {
        Ok(self
            .output("squeue", &["-h", "-o", "%i|%j|%T"])?
            .lines()
            .filter_map(|l| {
                let mut f = l.trim().splitn(3, '|');
                Some(QueuedJob {
                    id: f.next()?.to_string(),
                    name: f.next()?.to_string(),
                    state: f.next()?.to_string(),
                })
            })
            .collect())
    }

    pub fn cancel(&self, job_id: &str) -> Result<()> {
        self.output("scancel", &[job_id]).map(drop)
    }

    /// The jobcomp file: one line per finished job (`JobId=.. Name=.. JobState=..`).
    pub fn finished_jobs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("jobcomp.txt")).unwrap_or_default()
    }

    /// The `JobState` the jobcomp file records for `job_id`, if it finished.
    pub fn finished_state(&self, job_id: &str) -> Option<String> {
        let prefix = format!("JobId={job_id} ");
        self.finished_jobs()
            .lines()
            .find(|l| l.starts_with(&prefix))?
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("JobState="))
            .map(str::to_string)
    }

    /// How many finished jobs had this name.
    pub fn finished_named(&self, name: &str) -> usize {
        let field = format!("Name={name}");
        self.finished_jobs()
            .lines()
            .filter(|l| l.split_whitespace().any(|kv| kv == field))
            .count()
    }

    /// The daemons' logs, for a failing test's message.
    pub fn logs(&self) -> String {
        daemon_logs(self.dir.path())
    }
}

fn daemon_logs(dir: &Path) -> String {
    let mut text = String::new();
    for name in DAEMONS {
        for file in [format!("{name}.out"), format!("{name}.log")] {
            let body = std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
            let tail: Vec<&str> = body.lines().rev().take(15).collect();
            if !tail.is_empty() {
                text.push_str(&format!("--- {file}\n"));
                for l in tail.iter().rev() {
                    text.push_str(l);
                    text.push('\n');
                }
            }
        }
    }
    text
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Jobs first, so no slurmstepd outlives the cluster.
        let _ = self.output("scancel", &["--user=root"]);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10)
            && self.queue().map(|q| !q.is_empty()).unwrap_or(false)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        while let Some((_, mut child)) = self.daemons.pop() {
            let pid = child.id() as i32;
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn slurm_conf(dir: &Path, munge_socket: &Path) -> Result<String> {
    let cpus = std::thread::available_parallelism()?.get();
    let memory = real_memory_mb()?;
    let ctld_port = free_port()?;
    let mut slurmd_port = free_port()?;
    while slurmd_port == ctld_port {
        slurmd_port = free_port()?;
    }
    let d = dir.display();
    Ok(format!(
        "# A one-node cluster for agentloop's tests.
ClusterName=agentloop-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobCompType=jobcomp/filetxt
JobCompLoc={d}/jobcomp.txt
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
# Start a submitted job at once rather than batching submissions for 3 s.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
",
        socket = munge_socket.display(),
    ))
}
