//! End-to-end runs of the `agentloop-trainer` binary: learning, determinism, kill-and-resume,
//! output format and exit codes.

mod common;

use agentloop_trainer::data::{split_manifest, tokenize_documents};
use agentloop_trainer::eval::EVAL_TOKENS;
use agentloop_trainer::tokenizer::{ByteTokenizer, Tokenizer};
use common::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

/// bpb of a unigram (token-frequency, add-one smoothed) model fitted on the training split,
/// scored on the same validation targets as the trainer's evaluation.
fn unigram_val_bpb() -> f64 {
    let tok = ByteTokenizer;
    let manifest = split_manifest(&corpus_dir()).unwrap();
    let train = tokenize_documents(&manifest.train, &tok).unwrap();
    let val = tokenize_documents(&manifest.val, &tok).unwrap();
    let mut counts = vec![1.0f64; tok.vocab_size()];
    for &t in &train {
        counts[t as usize] += 1.0;
    }
    let total: f64 = counts.iter().sum();
    let (mut nats, mut bytes) = (0.0, 0u64);
    for &t in &val[1..=EVAL_TOKENS.min(val.len() - 1)] {
        if !tok.is_special(t) {
            nats -= (counts[t as usize] / total).ln();
            bytes += tok.bytes_of(t);
        }
    }
    nats / (std::f64::consts::LN_2 * bytes as f64)
}

#[test]
fn a_sixty_second_default_run_beats_the_unigram_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let output = run(train_command(&default_config(), &out, 1, "60s", &[]));
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let m = metrics(&out);
    let unigram = unigram_val_bpb();
    let bpb = m["val_bpb"].as_f64().unwrap();
    assert!((4.0..5.5).contains(&unigram), "unigram bpb {unigram}");
    assert!(
        bpb < unigram - 1.0,
        "val_bpb {bpb} is not well below unigram {unigram}"
    );
    assert!(m["wall_s"].as_f64().unwrap() >= 60.0);
}

#[test]
fn metrics_and_progress_lines_follow_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "tiny.toml", TINY_CONFIG);
    let out = dir.path().join("run");
    let output = run(train_command(&config, &out, 4, "8steps", &[]));
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let steps: Vec<_> = lines.iter().filter(|l| l["event"] == "step").collect();
    assert_eq!(steps.len(), 8);
    for key in ["step", "loss", "grad_norm", "lr", "tokens_per_s"] {
        assert!(
            steps[0][key].is_number(),
            "step event lacks {key}: {}",
            steps[0]
        );
    }
    assert_eq!(lines.last().unwrap()["event"], "done");
    let m = metrics(&out);
    for key in ["val_bpb", "train_loss", "wall_s", "tokens_per_s"] {
        assert!(
            m[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {}",
            m[key]
        );
    }
    for key in ["tokens", "steps", "peak_mem_bytes", "params", "seed"] {
        assert!(m[key].is_u64(), "{key}: {}", m[key]);
    }
    assert_eq!(m["steps"], 8);
    assert_eq!(m["tokens"], 8 * 4 * 32);
    assert_eq!(m["status"], "ok");
    assert_eq!(m["split"], "val");
    assert!(m["peak_mem_bytes"].as_u64().unwrap() > 1 << 20);

    // The holdout split is evaluated on request and gives a different number.
    let holdout_out = dir.path().join("holdout");
    let output = run(train_command_on(
        "holdout",
        &config,
        &holdout_out,
        4,
        "8steps",
        &[],
    ));
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let h = metrics(&holdout_out);
    assert_eq!(h["split"], "holdout");
    assert_ne!(h["val_bpb"], m["val_bpb"]);
}

#[test]
fn the_same_seed_gives_the_same_val_bpb_and_another_seed_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "tiny.toml", TINY_CONFIG);
    let bpb = |name: &str, seed: u64| {
        let out = dir.path().join(name);
        let output = run(train_command(&config, &out, seed, "2048tokens", &[]));
        assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
        val_bpb(&out)
    };
    let (a, b, c) = (bpb("a", 11), bpb("b", 11), bpb("c", 12));
    assert!(relative_diff(a, b) <= 1e-6, "same seed: {a} vs {b}");
    assert!(
        relative_diff(a, c) > 1e-6,
        "different seeds gave the same val_bpb {a}"
    );
}

#[test]
fn a_run_killed_mid_way_and_resumed_ends_like_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "tiny.toml", TINY_CONFIG);
    // Long enough that the kill lands mid-run, with a checkpoint interval that makes the
    // resumed run replay a few steps.
    let budget = "300steps";
    let every = ["--checkpoint-every", "7"];

    let straight = dir.path().join("straight");
    let output = run(train_command(&config, &straight, 21, budget, &every));
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));

    let killed = dir.path().join("killed");
    let mut child = train_command(&config, &killed, 21, budget, &every)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if event["step"].as_u64().is_some_and(|s| s >= 24) {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !killed.join("metrics.json").exists(),
        "the run finished before it was killed"
    );
    assert!(killed.join("checkpoint/checkpoint.json").exists());

    let output = run(train_command(
        &config,
        &killed,
        21,
        budget,
        &[&every[..], &["--resume"]].concat(),
    ));
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let first_step: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(
        first_step["step"].as_u64().unwrap() > 1,
        "resume restarted from scratch"
    );
    let (a, b) = (val_bpb(&straight), val_bpb(&killed));
    assert!(
        relative_diff(a, b) <= 1e-6,
        "uninterrupted {a} vs resumed {b}"
    );
    assert_eq!(metrics(&killed)["steps"], 300);
}
