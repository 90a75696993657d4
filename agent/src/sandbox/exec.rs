//! `agentloop sandbox-exec --policy FILE [--timeout SECS] -- CMD...`: the one way the loop
//! starts a build, training or eval command (locally and inside Slurm jobs). It reads the
//! policy, scrubs the environment, cuts the network, restricts the filesystem with Landlock,
//! and runs the command; it exits with the command's code, 124 when the timeout killed it, and
//! 125 when the sandbox could not be set up (the reason on stderr, which is the run's log).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::netns::{self, NetMode};
use super::policy::{self, Access, Policy};
use super::{env, landlock};

pub const TIMED_OUT: i32 = 124;
pub const SETUP_FAILED: i32 = 125;

/// Runs the command under the policy; returns the exit code for this process.
pub fn main(policy_file: &Path, timeout: Option<Duration>, argv: &[String]) -> i32 {
    match run(policy_file, timeout, argv) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agentloop sandbox: {e:#}");
            SETUP_FAILED
        }
    }
}

fn run(policy_file: &Path, timeout: Option<Duration>, argv: &[String]) -> Result<i32> {
    let text = std::fs::read_to_string(policy_file)
        .with_context(|| format!("reading the policy {}", policy_file.display()))?;
    let policy: Policy = serde_json::from_str(&text)
        .with_context(|| format!("parsing the policy {}", policy_file.display()))?;
    let Some((program, args)) = argv.split_first() else {
        bail!("no command given");
    };
    let env = env::filter(std::env::vars(), &policy.env);
    if let Some(tmp) = env.get("TMPDIR") {
        std::fs::create_dir_all(tmp).with_context(|| format!("creating TMPDIR {tmp}"))?;
    }
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear().envs(&env);
    if !policy.enforce {
        return supervise(cmd, timeout, || Ok(()));
    }
    let hidden = match &policy.hide {
        Some(h) => h
            .resolve()
            .context("finding the files to hide (eval_data, runtime_only)")?,
        None => Vec::new(),
    };
    let net = match netns::enter() {
        Ok(()) => NetMode::Namespace,
        Err(e) if landlock::current_abi() >= 4 => {
            eprintln!("agentloop sandbox: no network namespace ({e}); TCP is cut by Landlock only");
            NetMode::LandlockTcpOnly
        }
        Err(e) => bail!("cannot cut the network: unshare: {e}"),
    };
    let mut roots: Vec<(PathBuf, Access)> = Vec::new();
    for p in &policy.read {
        if p == Path::new("/proc") && net == NetMode::LandlockTcpOnly {
            // The host's /proc: machine facts only, no other process's environ or cmdline.
            roots.extend(
                netns::shared_proc_paths()
                    .into_iter()
                    .map(|p| (p, Access::Read)),
            );
        } else {
            roots.push((p.clone(), Access::Read));
        }
    }
    roots.extend(policy.write.iter().map(|p| (p.clone(), Access::Write)));
    let rules = policy::rules(&roots, &hidden);
    let own_proc = net == NetMode::Namespace;
    supervise(cmd, timeout, move || {
        if own_proc {
            netns::mount_own_proc()?;
        }
        landlock::restrict(&rules)
            .map(|_| ())
            .map_err(std::io::Error::other)
    })
}

/// Forks the command (applying `restrict` in the child, just before exec), waits for it, and
/// kills it at the timeout. The child dies with us (PDEATHSIG), so killing this process
/// (the loop's timeout, Slurm's) ends the command too.
fn supervise(
    mut cmd: Command,
    timeout: Option<Duration>,
    restrict: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
) -> Result<i32> {
    let parent = std::process::id() as libc::pid_t;
    let mut restrict = restrict;
    // SAFETY: the closure runs in the forked child of this single-threaded process (the
    // sandbox-exec command starts no threads), so allocating there cannot deadlock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // In a new PID namespace our parent is outside it and shows as pid 0.
            let pp = libc::getppid();
            if pp != parent && pp != 0 {
                return Err(std::io::Error::other("the sandbox supervisor died"));
            }
            restrict()
        });
    }
    let mut child = cmd.spawn().context("starting the command")?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            use std::os::unix::process::ExitStatusExt;
            return Ok(status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(9)));
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            let _ = child.kill();
            let _ = child.wait();
            println!(
                "agentloop sandbox: killed after {}",
                humantime::format_duration(timeout.unwrap_or_default())
            );
            return Ok(TIMED_OUT);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the kernel gives here: Landlock's ABI and how the network would be cut. Runs a real
/// sandboxed `true`, so a refusal shows now rather than as crashed runs later.
pub fn probe(exe: &Path, dir: &Path) -> Result<(i64, NetMode)> {
    let abi = landlock::current_abi();
    if abi < 1 {
        bail!("Landlock is not available on this kernel (or not enabled at boot)");
    }
    std::fs::create_dir_all(dir)?;
    let policy = Policy {
        enforce: true,
        read: super::step_policy::system_read_paths(),
        write: Vec::new(),
        hide: None,
        env: env::EnvPolicy::default(),
    };
    let file = super::step_policy::write_policy(dir, &policy)?;
    let out = Command::new(exe)
        .args(["sandbox-exec", "--policy"])
        .arg(&file)
        .args(["--", "/bin/sh", "-c", "true"])
        .output()
        .context("running the sandbox probe")?;
    if !out.status.success() {
        bail!(
            "a sandboxed test command failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let net = if String::from_utf8_lossy(&out.stderr).contains("no network namespace") {
        NetMode::LandlockTcpOnly
    } else {
        NetMode::Namespace
    };
    Ok((abi, net))
}
