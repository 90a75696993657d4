//! The sandbox module's unit tests: policies, scrubbing and the refusal without Landlock.

use std::path::{Path, PathBuf};

use agentloop_guardrails::target::TargetSpec;

use super::commands::run_policies;
use super::policy::{self, Policy};
use super::secrets::redact_files_with;
use super::{check_available, landlock, Settings};

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
