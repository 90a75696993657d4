//! Helpers for the end-to-end tests: they run the real `agentloop-trainer` binary on the real
//! corpus and read the files it writes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_agentloop-trainer")
}

pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn corpus_dir() -> PathBuf {
    crate_dir().join("data/shakespeare")
}

/// Copies a folder recursively (a corpus with its `val/` and `holdout/` folders).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

pub fn default_config() -> PathBuf {
    crate_dir().join("config/default.toml")
}

/// A very small model so that runs in tests take a second or two.
pub const TINY_CONFIG: &str = r#"
[model]
depth = 1
width = 32
heads = 2
seq_len = 32
vocab_size = 257
softcap = 15.0

[optim]
optimizer = "adamw"
lr = 0.01
embed_lr = 0.01
weight_decay = 0.0
beta1 = 0.9
beta2 = 0.95
warmup_frac = 0.0
warmdown_frac = 0.4
grad_clip = 1.0

[train]
batch_size = 4
"#;

pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `train` with the given extra arguments; `--data` defaults to the real corpus.
pub fn train_command(
    config: &Path,
    out: &Path,
    seed: u64,
    budget: &str,
    extra: &[&str],
) -> Command {
    train_command_on("val", config, out, seed, budget, extra)
}

pub fn train_command_on(
    split: &str,
    config: &Path,
    out: &Path,
    seed: u64,
    budget: &str,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args([
        "train",
        "--seed",
        &seed.to_string(),
        "--split",
        split,
        "--budget",
        budget,
    ])
    .arg("--out")
    .arg(out)
    .arg("--config")
    .arg(config);
    if !extra.contains(&"--data") {
        cmd.arg("--data").arg(corpus_dir());
    }
    cmd.args(extra);
    cmd
}

pub fn run(mut cmd: Command) -> Output {
    cmd.output().expect("the trainer binary starts")
}

pub fn metrics(out: &Path) -> serde_json::Value {
    let path = out.join("metrics.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn val_bpb(out: &Path) -> f64 {
    metrics(out)["val_bpb"]
        .as_f64()
        .expect("val_bpb is a number")
}

pub fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stderr\n{}\n--- stdout (tail)\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    )
}

pub fn relative_diff(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}
