//! The policy of each step (build, train, eval): what it may read and write, and its policy file.

use std::path::{Path, PathBuf};

use agentloop_guardrails::target::TargetSpec;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::env::EnvPolicy;
use super::policy::{Hide, Policy};

/// System paths every command may read: binaries, libraries, configuration, /proc, /sys, /dev.
pub fn system_read_paths() -> Vec<PathBuf> {
    [
        "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc", "/proc", "/sys",
        "/dev",
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

/// Device files a command may write (and GPUs).
fn device_write_paths() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/tty",
        "/dev/dri",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    if let Ok(entries) = std::fs::read_dir("/dev") {
        v.extend(
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("nvidia"))
                .map(|e| e.path()),
        );
    }
    v
}

fn home_dir(var: &str, default_under_home: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(default_under_home)))
}

/// The rustup and cargo homes (toolchains and crate sources).
fn toolchain_homes() -> (Option<PathBuf>, Option<PathBuf>) {
    (
        home_dir("CARGO_HOME", ".cargo"),
        home_dir("RUSTUP_HOME", ".rustup"),
    )
}

/// Which step a policy is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Build,
    Train,
    Eval,
}

/// The policy of one step. `worktree` is the checkout the command runs in; `out` the run dir
/// (for builds: the shared target dir).
pub fn policy_for(
    target: &TargetSpec,
    step: Step,
    worktree: &Path,
    out: &Path,
    enforce: bool,
    never_env: &[String],
) -> Policy {
    let (cargo_home, rustup_home) = toolchain_homes();
    let mut read = system_read_paths();
    read.extend(cargo_home.clone());
    read.extend(rustup_home);
    read.push(worktree.to_path_buf());
    read.extend(target.sandbox.read.iter().cloned());
    let mut write = device_write_paths();
    write.push(out.to_path_buf());
    write.extend(target.sandbox.write.iter().cloned());
    let tmp = match step {
        Step::Build => out.join(".agentloop-tmp"),
        Step::Train | Step::Eval => out.join(".tmp"),
    };
    if step != Step::Eval {
        // Shared memory (Python workers need it); never for the step that holds eval data.
        write.push(PathBuf::from("/dev/shm"));
    }
    if step == Step::Build {
        // The build worktree is the loop's own scratch checkout (cargo rewrites Cargo.lock,
        // other tools build in-tree); runs only ever see its `.agentloop-bin/`, via the cache.
        write.push(worktree.to_path_buf());
        // cargo locks its package cache and records downloads there.
        write.extend(cargo_home);
    }
    // The eval step reads everything; the others too when no separate eval step exists.
    let mut hidden = Vec::new();
    if step != Step::Eval && target.eval.is_some() {
        hidden.extend(target.eval_data.iter().cloned());
    }
    if step == Step::Build {
        // Declared unread by the build (its outputs are reused across changes to them): a
        // build that reads one anyway fails here instead of leaving stale outputs.
        hidden.extend(target.build.runtime_only.iter().cloned());
    }
    let hide = (!hidden.is_empty()).then(|| Hide {
        root: worktree.to_path_buf(),
        globs: hidden,
    });
    let mut set = std::collections::BTreeMap::new();
    set.insert("TMPDIR".to_string(), tmp.to_string_lossy().into_owned());
    set.insert(
        "AGENTLOOP_SANDBOX".to_string(),
        if enforce { "on" } else { "off" }.to_string(),
    );
    Policy {
        enforce,
        read,
        write,
        hide,
        env: EnvPolicy {
            allow: target.env.clone(),
            never: never_env.to_vec(),
            set,
        },
    }
}

/// Writes `policy` as `<dir>/<sha256>.json` (once: the same policy is the same file).
pub fn write_policy(dir: &Path, policy: &Policy) -> Result<PathBuf> {
    let text = serde_json::to_string_pretty(policy)?;
    let name = format!("{}.json", hex::encode(Sha256::digest(text.as_bytes())));
    let path = dir.join(name);
    if !path.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Several workers may write policies at once: each its own temporary file.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{}-{n}", std::process::id()));
        std::fs::write(&tmp, &text)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}
