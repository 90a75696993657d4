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
    /// Its weight decays (none: weight decay is left alone).
    pub offline_wd_values: Vec<f64>,
    /// Body of `[decision]`.
    pub decision: String,
    /// Body of `[decision.audit]` (empty: the default audit rule).
    pub audit: String,
}

impl Default for ToyOptions {
    fn default() -> Self {
        ToyOptions {
            offline_values: vec![0.01, 0.03, 0.003],
            offline_wd_values: Vec::new(),
            decision: "min_baseline_seeds = 3\nmin_replays = 1\nscreen_reject_below_sd = -3.0\nstages = [{ pairs = 3, p_threshold = 0.05 }]\nmin_effect_sd = 0.5\n".into(),
            audit: String::new(),
        }
    }
}

/// Writes the toy target into a fresh git repository at `root`.
pub fn create(root: &PathBuf, opts: &ToyOptions) -> Result<()> {
    std::fs::create_dir_all(root)?;
    std::fs::write(root.join("train.sh"), TRAIN_SH)?;
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
    let wd_space = if opts.offline_wd_values.is_empty() {
        String::new()
    } else {
        format!(
            "\n[[proposer.offline.space]]\nkey = \"optim.weight_decay\"\nvalues = [{}]\n",
            list(&opts.offline_wd_values)
        )
    };
    let toml = format!(
        r#"[target]
editable = ["config.toml"]
frozen = ["train.sh", "agentloop.toml", ".gitignore"]
metric = "val_bpb"

[build]
command = "mkdir -p .agentloop-bin && cp train.sh .agentloop-bin/train && chmod +x .agentloop-bin/train"
timeout = "1m"

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
{wd_space}"#,
        decision = opts.decision,
        values = list(&opts.offline_values)
    );
    std::fs::write(root.join("agentloop.toml"), toml)?;
    Ok(())
}
