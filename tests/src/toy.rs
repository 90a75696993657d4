//! A toy target: a config file and a shell-and-awk "trainer" whose metric depends on the
//! config's learning rate and weight decay, with seeded noise shared by same-seed runs.
//! On the holdout split weight decay has the opposite optimum (0.9 instead of 0.1), so
//! lowering it helps validation and hurts holdout: a gain that audits must catch. A learning
//! rate from 5 to 10 streams a NaN loss and then hangs (only the loop's watch can stop it).
//! It honours the whole target contract (build command, train command with placeholders,
//! metrics.json, exit codes: 3 when it diverges), and a run takes milliseconds, so the
//! crash-injection and rollback tests can afford dozens of sessions.

use std::path::PathBuf;

use anyhow::Result;

pub const TRAIN_SH: &str = r#"#!/bin/sh
# usage: train SEED SPLIT BUDGET OUT
seed=$1; split=$2; budget=$3; out=$4
mkdir -p "$out"
lr=$(awk -F= '/^lr *=/ { gsub(/[ \t]/, "", $2); print $2 }' config.toml)
wd=$(awk -F= '/^weight_decay *=/ { gsub(/[ \t]/, "", $2); print $2 }' config.toml)
sleep 0.02
awk -v seed="$seed" -v lr="$lr" -v wd="$wd" -v out="$out" -v sp="$split" 'BEGIN {
  if (lr + 0 > 10) { print "{\"event\":\"done\",\"status\":\"diverged\"}"; exit 3 }
  if (lr + 0 >= 5) { print "{\"event\":\"step\",\"step\":1,\"loss\":null}"; fflush(); system("sleep 120"); exit 0 }
  srand(seed); noise = (rand() - 0.5) * 0.004
  l = log(lr / 0.01) / log(10)
  best_wd = (sp == "holdout") ? 0.9 : 0.1
  v = 1.0 + 0.5 * l * l + (wd - best_wd) * (wd - best_wd) + noise
  print "{\"event\":\"step\",\"step\":1,\"loss\":" v "}"
  printf "{\"val_bpb\": %.9f, \"split\": \"%s\", \"status\": \"ok\", \"seed\": %d, \"steps\": 1}\n", v, sp, seed > (out "/metrics.json")
  print "{\"event\":\"done\",\"status\":\"ok\"}"
}'
"#;

pub const CONFIG: &str = "[optim]\nlr = 0.1\n\n\n\n# spacer lines keep the two keys' patches independent\n\n\n\nweight_decay = 0.5\n";

pub struct ToyOptions {
    /// The offline proposer's learning rates.
    pub offline_values: Vec<f64>,
    /// Offered weight-decay values (empty: only `lr` is searched).
    pub offline_weight_decay: Vec<f64>,
    pub decision: String,
    /// Seconds each training run sleeps (so runs of parallel workers overlap measurably).
    pub run_sleep_s: f64,
    /// Noise keyed on the run's role and index (its directory name, commit ids left out)
    /// instead of its seed: two sessions then get the same value for the same config and run,
    /// so their decisions can be compared.
    pub noise_by_run: bool,
    /// Extra tables appended to agentloop.toml as they are (e.g. an `[executor]` table).
    pub executor: String,
    /// Body of `[decision.audit]` (empty: the default audit rule).
    pub audit: String,
    /// `[loop] verdict_pairs`: the final verdict's pairs (0, the toy's default: none).
    pub verdict_pairs: u32,
    /// Body of `[build]` (the default copies train.sh into `.agentloop-bin/`).
    pub build: String,
}

/// The toy's build: the train script copied to where runs start it.
pub const BUILD: &str = "command = \"mkdir -p .agentloop-bin && cp train.sh .agentloop-bin/train && chmod +x .agentloop-bin/train\"\ntimeout = \"1m\"\n";

impl Default for ToyOptions {
    fn default() -> Self {
        ToyOptions {
            offline_values: vec![0.01, 0.03, 0.003],
            offline_weight_decay: Vec::new(),
            run_sleep_s: 0.02,
            noise_by_run: false,
            decision: "rule_version = \"sequential-screen/v2\"\nmin_baseline_seeds = 3\nmin_replays = 1\nstages = [{ pairs = 3, p_threshold = 0.05 }]\nmin_effect_sd = 0.5\n".into(),
            executor: String::new(),
            audit: String::new(),
            verdict_pairs: 0,
            build: BUILD.into(),
        }
    }
}

/// Seeds the noise from a hash of the run directory's name, hex runs (commit ids) removed.
const NOISE_BY_RUN: &str = r#"n = split(out, parts, "/"); key = parts[n]; gsub(/[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]+/, "", key)
  h = 7; for (i = 1; i <= length(key); i++) h = (h * 31 + index("abcdefghijklmnopqrstuvwxyz0123456789-_", substr(key, i, 1))) % 1000003
  srand(h); noise = (rand() - 0.5) * 0.004"#;

/// The train script for these options.
pub fn train_sh(opts: &ToyOptions) -> String {
    let mut sh = TRAIN_SH.replace("sleep 0.02", &format!("sleep {}", opts.run_sleep_s));
    if opts.noise_by_run {
        sh = sh.replace("srand(seed); noise = (rand() - 0.5) * 0.004", NOISE_BY_RUN);
    }
    sh
}

/// Writes the toy target into a fresh git repository at `root`.
pub fn create(root: &PathBuf, opts: &ToyOptions) -> Result<()> {
    std::fs::create_dir_all(root)?;
    std::fs::write(root.join("train.sh"), train_sh(opts))?;
    std::fs::write(root.join("config.toml"), CONFIG)?;
    std::fs::write(root.join(".gitignore"), ".agentloop-bin/\n")?;
    let list = |values: &[f64]| {
        let v: Vec<String> = values.iter().map(|v| format!("{v}")).collect();
        v.join(", ")
    };
    let audit = if opts.audit.is_empty() {
        String::new()
    } else {
        format!("[decision.audit]\n{}\n", opts.audit)
    };
    let wd_space = if opts.offline_weight_decay.is_empty() {
        String::new()
    } else {
        format!(
            "\n[[proposer.offline.space]]\nkey = \"optim.weight_decay\"\nvalues = [{}]\n",
            list(&opts.offline_weight_decay)
        )
    };
    // One `[loop]` table: the verdict's key joins one the options already hold.
    let verdict = format!("verdict_pairs = {}\n", opts.verdict_pairs);
    let executor = if opts.executor.contains("[loop]\n") {
        opts.executor
            .replacen("[loop]\n", &format!("[loop]\n{verdict}"), 1)
    } else {
        format!("{}\n[loop]\n{verdict}", opts.executor)
    };
    let toml = format!(
        r#"[target]
editable = ["config.toml"]
frozen = ["train.sh", "agentloop.toml", ".gitignore"]
metric = "val_bpb"

[build]
{build}

[train]
command = "sh .agentloop-bin/train {{seed}} {{split}} {{budget}} {{out}}"
budget = "1steps"
smoke_budget = "1steps"
timeout = "1m"
memory_limit = "1GiB"

[decision]
{decision}
{audit}
[proposer.offline]
file = "config.toml"

[[proposer.offline.space]]
key = "optim.lr"
values = [{values}]
{wd_space}
{executor}
"#,
        decision = opts.decision,
        values = list(&opts.offline_values),
        executor = executor,
        build = opts.build,
    );
    std::fs::write(root.join("agentloop.toml"), toml)?;
    Ok(())
}
