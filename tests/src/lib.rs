//! Helpers of the end-to-end tests: a real target repository (a copy of this workspace's
//! trainer with a tiny config), the `agentloop` process, and reading its ledger.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use agentloop_ledger::{Event, EventKind, Ledger};

pub mod check;
pub mod replies;
pub mod slurm;
pub mod toy;
use anyhow::{bail, Context, Result};

/// The workspace this crate lives in (source of the trainer that targets are copied from).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Values of the tiny training config: a model small enough that a run takes well under a
/// second, with a deliberately bad learning rate that a good change can fix.
pub const TINY_VALUES: [(&str, &str); 7] = [
    ("depth", "1"),
    ("width", "32"),
    ("heads", "2"),
    ("seq_len", "32"),
    ("batch_size", "8"),
    ("lr", "0.0001"),
    ("embed_lr", "0.0001"),
];

/// The trainer's real config with `TINY_VALUES` written over its `key = value` lines (so the
/// layout, comments and every other key stay as the trainer expects).
pub fn tiny_config(real: &str) -> String {
    let mut out = String::new();
    for line in real.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        match TINY_VALUES
            .iter()
            .find(|(k, _)| *k == key && line.contains('='))
        {
            Some((k, v)) => out.push_str(&format!("{k} = {v}")),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Knobs of a test target.
#[derive(Debug, Clone)]
pub struct TargetOptions {
    /// One full run's budget.
    pub run_budget: String,
    pub smoke_budget: String,
    /// `[decision]` overrides (TOML body of the table).
    pub decision: String,
    /// `[proposer.offline]` and its space (TOML, whole tables), or empty.
    pub offline: String,
    pub train_timeout: String,
    /// Keep the trainer's real config and agentloop.toml (only the build switches to the dev
    /// profile and the shared target directory): the default configuration, as a user gets it.
    pub real: bool,
}

impl TargetOptions {
    pub fn real() -> TargetOptions {
        TargetOptions {
            real: true,
            ..TargetOptions::default()
        }
    }
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions {
            run_budget: "30steps".into(),
            smoke_budget: "2steps".into(),
            decision: "rule_version = \"sequential-screen/v2\"\nmin_baseline_seeds = 3\nmin_replays = 1\nstages = [{ pairs = 3, p_threshold = 0.05 }]\nmin_effect_sd = 0.5\n".into(),
            offline: String::new(),
            train_timeout: "2m".into(),
            real: false,
        }
    }
}

/// A temporary git repository holding a copy of the trainer as the optimization target.
pub struct TargetRepo {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl TargetRepo {
    /// A repository holding the toy target (see `toy`).
    pub fn toy(opts: &toy::ToyOptions) -> Result<TargetRepo> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("toy-repo");
        toy::create(&root, opts)?;
        init_repo(&root)?;
        Ok(TargetRepo { _dir: dir, root })
    }

    pub fn create(opts: &TargetOptions) -> Result<TargetRepo> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("target-repo");
        let ws = workspace_root();
        copy_dir(
            &ws.join("trainer"),
            &root.join("trainer"),
            &["target", "bench", "tests"],
        )?;
        std::fs::copy(ws.join("Cargo.lock"), root.join("Cargo.lock"))?;
        std::fs::write(root.join("Cargo.toml"), single_member_manifest(&ws)?)?;
        if !opts.real {
            let real = std::fs::read_to_string(ws.join("trainer/config/default.toml"))?;
            std::fs::write(root.join("trainer/config/default.toml"), tiny_config(&real))?;
        }
        std::fs::write(
            root.join(".gitignore"),
            "/target\n/.agentloop/\n.agentloop-bin/\n",
        )?;
        std::fs::write(root.join("agentloop.toml"), agentloop_toml(&ws, opts)?)?;
        settle_lockfile(&root)?;
        init_repo(&root)?;
        Ok(TargetRepo { _dir: dir, root })
    }

    /// A repository holding a committed copy of the folder `src` (an example target), minus
    /// its `data/` and `__pycache__/`.
    pub fn copy_of(src: &Path) -> Result<TargetRepo> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("target-repo");
        copy_dir(src, &root, &["data", "__pycache__", ".agentloop"])?;
        init_repo(&root)?;
        Ok(TargetRepo { _dir: dir, root })
    }

    pub fn ledger(&self) -> Result<Ledger> {
        Ok(Ledger::open(self.root.join(".agentloop/ledger.db"))?)
    }

    pub fn events(&self) -> Result<Vec<Event>> {
        if !self.root.join(".agentloop/ledger.db").exists() {
            return Ok(Vec::new());
        }
        Ok(self.ledger()?.events()?)
    }

    /// `agentloop` with this repo as `--repo` and the shared cargo target directory.
    pub fn agentloop(&self, bin: &Path, target_dir: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.arg("--repo")
            .arg(&self.root)
            .args(args)
            .env("CARGO_TARGET_DIR", target_dir)
            .env("AGENTLOOP_LOG", "info")
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .current_dir(&self.root);
        c
    }

    /// Runs `agentloop` on this repo to completion: exit code (-1 if killed), stdout, stderr.
    pub fn run_agentloop(
        &self,
        bin: &Path,
        target_dir: &Path,
        args: &[&str],
    ) -> Result<(i32, String, String)> {
        let out = output(self.agentloop(bin, target_dir, args))?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// One session driven by a scripted OpenAI-compatible server at `base_url`, with at most
    /// `max_changes` changes; its events, or an error with stderr and the whole timeline when
    /// `agentloop start` fails.
    pub fn start_scripted(
        &self,
        bin: &Path,
        target_dir: &Path,
        base_url: &str,
        max_changes: usize,
    ) -> Result<Vec<Event>> {
        let max = max_changes.to_string();
        let args = [
            "start",
            "--budget",
            "20m",
            "--max-changes",
            &max,
            "--agent",
            "openai",
            "--model",
            "scripted",
            "--base-url",
            base_url,
        ];
        let out = output(self.agentloop(bin, target_dir, &args))?;
        let events = self.events()?;
        if !out.status.success() {
            bail!(
                "agentloop failed:\n{}\nledger:\n{}",
                String::from_utf8_lossy(&out.stderr),
                timeline(&events)
            );
        }
        Ok(events)
    }

    /// `agentloop ledger verify` as a user runs it (chain, derived tables, git trailers, every
    /// decision recomputed); an error carrying its output when it fails.
    pub fn verify_with_cli(&self, bin: &Path, target_dir: &Path) -> Result<()> {
        let (code, out, err) = self.run_agentloop(bin, target_dir, &["ledger", "verify"])?;
        if code != 0 {
            bail!("ledger verify exited {code}:\n{out}{err}");
        }
        Ok(())
    }

    pub fn git(&self, args: &[&str]) -> Result<String> {
        git(&self.root, args)
    }

    /// A fresh `git clone` of this repository (as a user would start from).
    pub fn clone_fresh(&self) -> Result<TargetRepo> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("clone");
        let out = Command::new("git")
            .args(["clone", "-q"])
            .arg(&self.root)
            .arg(&root)
            .output()?;
        if !out.status.success() {
            bail!("git clone failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        git(&root, &["config", "user.email", "user@example.com"])?;
        git(&root, &["config", "user.name", "Test User"])?;
        Ok(TargetRepo { _dir: dir, root })
    }
}

/// Runs to completion, with the output kept for assertions.
/// The two paths every e2e test file needs, defined in the calling test crate (where cargo sets
/// `CARGO_BIN_EXE_*` and `CARGO_TARGET_TMPDIR`): `BIN`, the `agentloop-e2e` binary, and
/// `target_dir()`, the cargo target directory the tests' trainer builds share.
#[macro_export]
macro_rules! e2e_paths {
    () => {
        const BIN: &str = env!("CARGO_BIN_EXE_agentloop-e2e");

        fn target_dir() -> std::path::PathBuf {
            std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-cargo-target")
        }
    };
}

/// `agentloop start` as most toy tests run it: the offline proposer, a 5-minute budget (the
/// change limit ends the session first) and at most `max_changes` changes.
pub fn offline_start(max_changes: &str) -> [&str; 7] {
    [
        "start",
        "--budget",
        "5m",
        "--max-changes",
        max_changes,
        "--agent",
        "offline",
    ]
}

pub fn output(mut c: Command) -> Result<Output> {
    Ok(c.stdin(Stdio::null()).output()?)
}

/// Starts `c` in its own process group (so a kill reaches every child it started).
pub fn spawn_group(mut c: Command) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    Ok(c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?)
}

/// SIGKILL to the whole process group, as a power cut or OOM killer would do it.
pub fn kill_group(child: &mut Child) {
    let pid = child.id() as i32;
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status();
    let _ = child.wait();
}

/// Waits until the ledger holds at least `n` events (or the child exits, or `timeout`).
/// Returns the count seen.
pub fn wait_for_events(
    repo: &TargetRepo,
    child: &mut Child,
    n: usize,
    timeout: Duration,
) -> Result<usize> {
    let start = Instant::now();
    loop {
        let count = repo.events().map(|e| e.len()).unwrap_or(0);
        if count >= n {
            return Ok(count);
        }
        if child.try_wait()?.is_some() || start.elapsed() > timeout {
            return Ok(count);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn kinds(events: &[Event], kind: EventKind) -> Vec<&Event> {
    events.iter().filter(|e| e.kind == kind).collect()
}

/// Every event on one line (seq, kind, change, payload): what a failed assertion prints.
pub fn timeline(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| format!("{} {:?} {:?} {}", e.seq, e.kind, e.change, e.payload))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The changes in the order they first appear in the ledger.
pub fn change_order(events: &[Event]) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    for e in events {
        if let Some(c) = &e.change {
            if !order.contains(c) {
                order.push(c.clone());
            }
        }
    }
    order
}

fn init_repo(root: &Path) -> Result<()> {
    git(root, &["init", "-q", "-b", "main"])?;
    git(root, &["config", "user.email", "user@example.com"])?;
    git(root, &["config", "user.name", "Test User"])?;
    git(root, &["add", "-A"])?;
    git(root, &["commit", "-q", "-m", "target"])?;
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git").args(args).current_dir(dir).output()?;
    if !out.status.success() {
        bail!(
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The workspace manifest with the trainer's crates as its only members (profiles kept, so
/// dependencies build optimized even in the dev profile).
fn single_member_manifest(ws: &Path) -> Result<String> {
    let text = std::fs::read_to_string(ws.join("Cargo.toml"))?;
    let mut doc: toml::Table = text.parse().context("workspace Cargo.toml")?;
    let workspace = doc
        .get_mut("workspace")
        .and_then(|w| w.as_table_mut())
        .context("no [workspace] in Cargo.toml")?;
    // The trainer with its frozen api crate and the editable recipe crate it builds on.
    let members = toml::Value::Array(
        ["trainer", "trainer/core", "trainer/api", "trainer/recipe"]
            .map(|m| toml::Value::String(m.into()))
            .to_vec(),
    );
    workspace.insert("members".into(), members.clone());
    workspace.insert("default-members".into(), members);
    Ok(toml::to_string(&doc)?)
}

fn agentloop_toml(ws: &Path, opts: &TargetOptions) -> Result<String> {
    let text = std::fs::read_to_string(ws.join("agentloop.toml"))
        .context("agentloop.toml of the workspace")?;
    let mut doc: toml::Table = text.parse().context("agentloop.toml")?;
    let build = doc
        .get_mut("build")
        .and_then(|b| b.as_table_mut())
        .context("[build]")?;
    // Dev profile: the trainer crate compiles fast; its dependencies are optimized anyway.
    build.insert(
        "command".into(),
        "cargo build -p agentloop-trainer && mkdir -p .agentloop-bin && cp \"$CARGO_TARGET_DIR/debug/agentloop-trainer\" .agentloop-bin/".into(),
    );
    build.insert("timeout".into(), "15m".into());
    // No final verdict (its runs would lengthen every session test); tests that want it set it.
    let looped = doc
        .entry("loop")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(t) = looped.as_table_mut() {
        t.insert("verdict_pairs".into(), toml::Value::Integer(0));
    }
    if opts.real {
        return Ok(toml::to_string(&doc)?);
    }
    let train = doc
        .get_mut("train")
        .and_then(|b| b.as_table_mut())
        .context("[train]")?;
    train.insert("budget".into(), opts.run_budget.clone().into());
    train.insert("smoke_budget".into(), opts.smoke_budget.clone().into());
    train.insert("timeout".into(), opts.train_timeout.clone().into());
    // One change at a time (the default is one per slot): scripted replies are consumed in
    // the order the tests write them. A test that wants more passes --workers.
    if let Some(executor) = doc.get_mut("executor").and_then(|e| e.as_table_mut()) {
        executor.insert("workers".into(), 1.into());
    }
    doc.remove("proposer");
    doc.remove("decision");
    let mut out = toml::to_string(&doc)?;
    out.push_str("\n[decision]\n");
    out.push_str(&opts.decision);
    out.push('\n');
    out.push_str(&opts.offline);
    Ok(out)
}

fn copy_dir(from: &Path, to: &Path, skip: &[&str]) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target, &[])?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The copied Cargo.lock lists the whole agentloop workspace; cargo prunes it to the single
/// trainer member on first use. Prune it before the first commit, so that a build in the
/// repository (the user's own, or the test's warm-up) leaves the committed tree unchanged.
fn settle_lockfile(root: &Path) -> Result<()> {
    let out = std::process::Command::new("cargo")
        .args(["update", "--workspace", "--offline"])
        .current_dir(root)
        .stdout(std::process::Stdio::null())
        .output()
        .context("running cargo update --workspace")?;
    anyhow::ensure!(
        out.status.success(),
        "cargo update --workspace failed in {}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
