//! The OS sandbox around every build, training run and eval step (issue 18's trust boundary).
//!
//! Every command the target contract names is started as
//! `agentloop sandbox-exec --policy FILE -- sh -c CMD` (see `exec`): the same wrapper locally and
//! inside Slurm jobs. A policy (`policy`) says what the process may read and write; `env` what
//! of the environment it keeps; `netns` cuts the network; `landlock` enforces the files.
//!
//! - build: reads the system and the toolchain homes; reads and writes the build worktree
//!   minus `eval_data`, the shared target dir and the cargo home.
//! - train: reads the system, the toolchain homes, the worktree minus `eval_data` (all of it
//!   when the target has no `[eval]`: the weaker boundary is recorded) and its run dir; writes
//!   its run dir only.
//! - eval: reads the worktree with `eval_data` and its run dir; writes its run dir only.
//!
//! Nothing under `.agentloop/` is reachable but the process's own worktree and run dir: not
//! the ledger, not other runs, not the build cache.

pub mod env;
pub mod exec;
pub mod landlock;
pub mod netns;
pub mod policy;

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use agentloop_guardrails::target::{shell_quote, TargetSpec};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use env::EnvPolicy;
use policy::{Hide, Policy};

/// Exit code of a run whose eval step failed (the reason is the log's last `agentloop:` line).
pub const EVAL_FAILED: i32 = 86;
/// Written to the log before `exit EVAL_FAILED`.
pub const EVAL_FAILED_PREFIX: &str = "agentloop: the eval step";

/// How this loop process sandboxes its commands; set once by `start` / `rollback`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// false with `--no-sandbox`: only the environment is scrubbed.
    pub enforce: bool,
    /// The `agentloop` binary that provides `sandbox-exec`.
    pub exe: PathBuf,
    /// Where policy files are written (`.agentloop/sandbox/`, content-addressed).
    pub policy_dir: PathBuf,
    /// Variables never passed on (the provider key's), whatever the allow-list says.
    pub never_env: Vec<String>,
}

static SETTINGS: RwLock<Option<Settings>> = RwLock::new(None);

pub fn install(settings: Settings) {
    *SETTINGS.write().unwrap_or_else(|e| e.into_inner()) = Some(settings);
}

fn settings() -> Result<Settings> {
    SETTINGS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .context("internal: the sandbox was not set up before running a command")
}

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
    let hide =
        (step != Step::Eval && target.eval.is_some() && !target.eval_data.is_empty()).then(|| {
            Hide {
                root: worktree.to_path_buf(),
                globs: target.eval_data.clone(),
            }
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

fn wrapped(s: &Settings, policy_file: &Path, timeout: Option<Duration>, command: &str) -> String {
    let mut w = format!(
        "{} sandbox-exec --policy {}",
        shell_quote(&s.exe.to_string_lossy()),
        shell_quote(&policy_file.to_string_lossy())
    );
    if let Some(t) = timeout {
        w.push_str(&format!(" --timeout {}", t.as_secs().max(1)));
    }
    w.push_str(&format!(" -- sh -c {}", shell_quote(command)));
    w
}

/// The build command, sandboxed.
pub fn build_command(target: &TargetSpec, worktree: &Path, target_dir: &Path) -> Result<String> {
    let s = settings()?;
    let mut policy = policy_for(
        target,
        Step::Build,
        worktree,
        target_dir,
        s.enforce,
        &s.never_env,
    );
    policy
        .read
        .extend(crate::inputs::prepare_worktree(target, worktree)?);
    let file = write_policy(&s.policy_dir, &policy)?;
    Ok(format!(
        "exec {}",
        wrapped(&s, &file, None, &target.build.command)
    ))
}

/// A training run's command (train, then eval when the target has one) and its time limit.
pub struct RunCommand {
    pub command: String,
    pub timeout: Duration,
}

/// The eval step's own output, in the run dir (where `metric_regex` looks when there is an
/// eval step: what training printed never counts). Also copied into the run's log.
pub const EVAL_OUTPUT: &str = "eval.out";

/// Time the eval step's sandbox and the shell between the steps get beyond both timeouts.
const STEP_SLACK: Duration = Duration::from_secs(30);

/// The sandboxed command of one run. `train` is the rendered train command.
pub fn run_command(
    target: &TargetSpec,
    worktree: &Path,
    out: &Path,
    train: &str,
    seed: u64,
    split: &str,
) -> Result<RunCommand> {
    let s = settings()?;
    let (train_policy, eval_policy) = run_policies(target, worktree, out, seed, split, &s)?;
    let train_file = write_policy(&s.policy_dir, &train_policy)?;
    let (Some(eval), Some(eval_policy)) = (&target.eval, eval_policy) else {
        return Ok(RunCommand {
            command: format!("exec {}", wrapped(&s, &train_file, None, train)),
            timeout: target.train.timeout,
        });
    };
    let eval_command = target
        .render_eval_command(seed, split, out)
        .context("internal: [eval] without a command")?;
    let eval_file = write_policy(&s.policy_dir, &eval_policy)?;
    let metrics = shell_quote(&out.join("metrics.json").to_string_lossy());
    let eval_out = shell_quote(&out.join(EVAL_OUTPUT).to_string_lossy());
    let train_limit = humantime::format_duration(target.train.timeout);
    let eval_limit = humantime::format_duration(eval.timeout);
    // The training step's metrics.json (if any) is removed: only the eval step's counts.
    let command = format!(
        "{train_step}\ncode=$?\n\
         if [ \"$code\" -eq {to} ]; then echo 'agentloop: the training step timed out after {train_limit}'; exit 4; fi\n\
         if [ \"$code\" -ne 0 ]; then exit \"$code\"; fi\n\
         rm -rf {metrics} {eval_out}\n\
         {eval_step} >{eval_out} 2>&1\n\
         code=$?\n\
         cat {eval_out}\n\
         if [ \"$code\" -eq 0 ]; then exit 0; fi\n\
         if [ \"$code\" -eq {to} ]; then echo '{prefix} timed out after {eval_limit}'; \
         else echo \"{prefix} failed (exit $code)\"; fi\n\
         exit {failed}\n",
        train_step = wrapped(&s, &train_file, Some(target.train.timeout), train),
        eval_step = wrapped(&s, &eval_file, Some(eval.timeout), &eval_command),
        to = exec::TIMED_OUT,
        prefix = EVAL_FAILED_PREFIX,
        failed = EVAL_FAILED,
    );
    Ok(RunCommand {
        command,
        timeout: target.train.timeout + eval.timeout + STEP_SLACK,
    })
}

/// The train step's policy and the eval step's (with `[eval]`), the inputs linked into the
/// worktree first.
fn run_policies(
    target: &TargetSpec,
    worktree: &Path,
    out: &Path,
    seed: u64,
    split: &str,
    s: &Settings,
) -> Result<(Policy, Option<Policy>)> {
    // Inputs are read through their real paths (read-only); the eval_data ones among them are
    // hidden from training by the same `hide` globs as tracked evaluation files.
    let inputs = crate::inputs::prepare_worktree(target, worktree)?;
    let mut train = policy_for(target, Step::Train, worktree, out, s.enforce, &s.never_env);
    train.read.extend(inputs.iter().cloned());
    // Training before a separate eval step is not told the split (it could train differently
    // for the holdout confirmation).
    let train_split = target.eval.is_none().then_some(split);
    train.env.set.extend(target.run_env(seed, train_split));
    let eval = target.eval.as_ref().map(|_| {
        let mut eval = policy_for(target, Step::Eval, worktree, out, s.enforce, &s.never_env);
        eval.read.extend(inputs);
        eval.env.set.extend(target.run_env(seed, Some(split)));
        eval
    });
    Ok((train, eval))
}

/// The sandbox as recorded in `session_start` (`extra.sandbox`) and shown by `status`.
pub fn describe(target: &TargetSpec, enforce: bool, probed: Option<(i64, &str)>) -> Value {
    let separated = target.eval.is_some();
    let mut v = json!({
        "enforced": enforce,
        "eval_separated": separated,
        "eval_data": target.eval_data,
        "env": "allow-list",
    });
    if let Some((abi, net)) = probed {
        v["landlock_abi"] = json!(abi);
        v["network"] = json!(net);
    }
    if !enforce {
        v["weaker"] =
            json!("--no-sandbox: builds and runs may read and write anything the user can");
    } else if !separated {
        v["weaker"] = json!("no [eval] step: the training run may read eval_data");
    } else if target.eval_data.is_empty() {
        v["weaker"] = json!("[eval] without [target] eval_data: nothing is hidden from training");
    }
    v
}

/// Checks that the sandbox works here; `Err` names `--no-sandbox`.
pub fn check_available(exe: &Path, dir: &Path) -> Result<(i64, netns::NetMode)> {
    exec::probe(exe, dir).map_err(|e| {
        anyhow::anyhow!(
            "the OS sandbox is not available here: {e:#}.\n\
             Builds and training runs would be able to read the evaluation data, the network and \
             the loop's files. Run on a kernel with Landlock (Linux 5.13+, `lsm=landlock`), or \
             pass --no-sandbox to run without it (recorded in the ledger and shown by `status`)."
        )
    })
}

/// The provider key's variable names (never passed to a command): `[agent] api_key_env` or
/// the provider's default, and the well-known ones.
pub fn provider_key_names(target: &TargetSpec, agent_flag: Option<&str>) -> Vec<String> {
    let mut names = vec![
        "OPENAI_API_KEY".to_string(),
        "ANTHROPIC_API_KEY".to_string(),
    ];
    let mut doc = toml::Table::new();
    if let Some(agent) = target.extra.get("agent") {
        doc.insert("agent".into(), agent.clone());
    }
    if let Ok(mut cfg) = toml::to_string(&doc)
        .ok()
        .and_then(|t| crate::proposer::AgentConfig::from_toml(&t).ok())
        .ok_or(())
    {
        if let Some(kind) = agent_flag.and_then(|k| k.parse().ok()) {
            cfg.provider = kind;
        }
        names.extend(cfg.key_env());
        names.extend(cfg.api_key_env.clone());
    }
    names.sort();
    names.dedup();
    names
}

/// Scrubs secrets (the provider key and its encoded forms, credential-shaped strings) from the
/// files a run or build left, before anyone reads them.
pub fn redact_files(paths: &[&Path]) {
    let keys: Vec<String> = settings()
        .map(|s| s.never_env)
        .unwrap_or_default()
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .collect();
    redact_files_with(paths, &keys);
}

/// [`redact_files`] with the provider key values given.
fn redact_files_with(paths: &[&Path], keys: &[String]) {
    let mut redactor = agentloop_ledger::redact::Redactor::from_env();
    for key in keys {
        redactor.add_literal(key);
    }
    for path in paths {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let clean = redactor.redact_text(&text);
        if clean != text {
            let _ = std::fs::write(path, clean);
        }
    }
}

/// Why a run failed in its eval step (`None`: it did not).
pub fn eval_failure(exit: &crate::executor::process::Exit, log_tail: &str) -> Option<String> {
    if *exit != crate::executor::process::Exit::Code(Some(EVAL_FAILED)) {
        return None;
    }
    Some(
        log_tail
            .lines()
            .rev()
            .find(|l| l.starts_with(EVAL_FAILED_PREFIX))
            .unwrap_or("agentloop: the eval step failed")
            .trim_start_matches("agentloop: ")
            .to_string(),
    )
}

/// Checks the sandbox (unless `no_sandbox`), installs it for this process and returns its
/// description for the ledger. Refuses to go on without it unless told `--no-sandbox`.
pub fn set_up(
    ws: &crate::orchestrator::workspace::Workspace,
    target: &TargetSpec,
    no_sandbox: bool,
    agent_flag: Option<&str>,
) -> Result<Value> {
    let exe = std::env::current_exe().context("finding the agentloop binary")?;
    let policy_dir = ws.state.join("sandbox");
    let probed = if no_sandbox {
        tracing::warn!(
            "--no-sandbox: builds and runs are not isolated (only the environment is scrubbed)"
        );
        None
    } else {
        Some(check_available(&exe, &policy_dir)?)
    };
    install(Settings {
        enforce: !no_sandbox,
        exe,
        policy_dir,
        never_env: provider_key_names(target, agent_flag),
    });
    let description = describe(
        target,
        !no_sandbox,
        probed.map(|(abi, net)| (abi, net.as_str())),
    );
    if let Some(weaker) = description.get("weaker").and_then(Value::as_str) {
        tracing::warn!("sandbox: {weaker}");
    }
    Ok(description)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_outputs_are_scrubbed_of_the_provider_key() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("run.log");
        let key = "zq7-provider-key-0123456789";
        std::fs::write(&log, format!("step 1\nerror: key {key} rejected\n")).unwrap();
        let untouched = dir.path().join("metrics.json");
        std::fs::write(&untouched, "{\"val_bpb\": 1.5}").unwrap();
        redact_files_with(
            &[&log, &untouched, &dir.path().join("absent")],
            &[key.to_string()],
        );
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains(key) && text.contains("rejected"), "{text}");
        assert_eq!(
            std::fs::read_to_string(&untouched).unwrap(),
            "{\"val_bpb\": 1.5}"
        );
    }

    /// The train step may read the untracked inputs through the worktree's links, never one
    /// that matches `eval_data`: not through the link, not by its real path in the repository.
    #[test]
    fn inputs_are_readable_by_training_except_eval_data_ones() {
        if landlock::current_abi() < 1 {
            eprintln!("skipped: no Landlock on this kernel");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for f in ["data/train.txt", "data/val.txt"] {
            std::fs::create_dir_all(root.join("data")).unwrap();
            std::fs::write(root.join(f), f).unwrap();
        }
        let text = r#"
[target]
editable = ["train.py"]
inputs = ["data/*.txt"]
eval_data = ["data/val.txt"]
[build]
command = "true"
timeout = "1m"
[train]
command = "python3 train.py --budget {budget} --out {out}"
budget = "1steps"
smoke_budget = "1steps"
timeout = "1m"
memory_limit = "1GiB"
[eval]
command = "python3 evaluate.py --out {out}"
timeout = "1m"
"#;
        let target = TargetSpec::parse(&root, &root.join("agentloop.toml"), text).unwrap();
        let wt = root.join(".agentloop/worktrees/c1");
        let out = root.join(".agentloop/runs/c1/r1");
        std::fs::create_dir_all(&wt).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        let s = Settings {
            enforce: true,
            exe: PathBuf::from("/bin/false"),
            policy_dir: root.join(".agentloop/sandbox"),
            never_env: vec![],
        };
        let (train, eval) = run_policies(&target, &wt, &out, 42, "holdout", &s).unwrap();
        assert_eq!(
            train.env.set.get("AGENTLOOP_SEED").map(String::as_str),
            Some("42")
        );
        assert_eq!(
            train.env.set.get("AGENTLOOP_SPLIT"),
            None,
            "training is not told the split"
        );
        let eval = eval.unwrap();
        assert_eq!(
            eval.env.set.get("AGENTLOOP_SPLIT").map(String::as_str),
            Some("holdout")
        );
        let readable = |policy: &Policy| {
            let hidden = policy
                .hide
                .as_ref()
                .map(|h| h.resolve().unwrap())
                .unwrap_or_default();
            let roots: Vec<(PathBuf, policy::Access)> = policy
                .read
                .iter()
                .map(|p| (p.clone(), policy::Access::Read))
                .collect();
            let rules = policy::rules(&roots, &hidden);
            let (wt, root) = (wt.clone(), root.clone());
            std::thread::spawn(move || {
                landlock::restrict(&rules).expect("landlock");
                let read = |p: PathBuf| std::fs::read(p).is_ok();
                [
                    read(wt.join("data/train.txt")),
                    read(wt.join("data/val.txt")),
                    read(root.join("data/val.txt")),
                ]
            })
            .join()
            .unwrap()
        };
        assert_eq!(readable(&train), [true, false, false], "train step");
        assert_eq!(readable(&eval), [true, true, true], "eval step");
    }

    #[test]
    fn an_unusable_sandbox_refuses_with_a_message_naming_no_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        // A binary that cannot apply the sandbox stands for a kernel that refuses it.
        let err = check_available(Path::new("/bin/false"), dir.path()).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("not available") && text.contains("--no-sandbox"),
            "{text}"
        );
    }
}
