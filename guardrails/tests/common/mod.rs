// Shared fixtures (included with `mod common;`).
#![allow(dead_code)]

use agentloop_guardrails::target::TargetSpec;

pub const TARGET_TOML: &str = r#"
[target]
editable = ["trainer/src/model.rs", "trainer/src/optim.rs", "trainer/src/train.rs", "trainer/config/*.toml"]
frozen   = ["trainer/src/eval.rs", "trainer/src/data.rs", "trainer/src/tokenizer.rs", "trainer/data/**"]
metric   = "val_bpb"

[build]
command  = "cargo build --release -p agentloop-trainer"
timeout  = "20m"

[train]
command  = ".agentloop-bin/agentloop-trainer train --seed {seed} --split {split} --budget {budget} --out {out}"
budget   = "60000tokens"
smoke_budget = "3steps"
timeout  = "10m"
memory_limit = "8GiB"

[proposer.offline]
moves = ["lr", "warmup"]
"#;

/// Writes `agentloop.toml` into a fresh directory and loads it the way the loop does.
pub fn target() -> (tempfile::TempDir, TargetSpec) {
    target_from(TARGET_TOML)
}

pub fn target_from(text: &str) -> (tempfile::TempDir, TargetSpec) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agentloop.toml"), text).unwrap();
    let spec = TargetSpec::load(dir.path()).unwrap();
    (dir, spec)
}

pub fn load_err(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agentloop.toml"), text).unwrap();
    TargetSpec::load(dir.path()).unwrap_err().to_string()
}
