//! Bad input is refused with a clear error naming it (exit 2); divergence and timeouts get
//! their own exit codes and a metrics.json saying so.

mod common;

use agentloop_trainer::data::split_manifest;
use common::*;
use std::process::Command;

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn resume_without_a_checkpoint_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "tiny.toml", TINY_CONFIG);
    let out = dir.path().join("run");
    let output = run(train_command(&config, &out, 1, "4steps", &["--resume"]));
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        stderr(&output).contains("checkpoint.json"),
        "{}",
        stderr(&output)
    );
    assert!(!out.join("metrics.json").exists());
}

#[test]
fn a_corrupt_checkpoint_is_refused_naming_the_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "tiny.toml", TINY_CONFIG);
    let out = dir.path().join("run");
    let every = ["--checkpoint-every", "2"];
    let output = run(train_command(&config, &out, 1, "5steps", &every));
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let ckpt = out.join("checkpoint");
    let state = std::fs::read_dir(&ckpt)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .expect("a state file");

    // A flipped byte in the state file.
    let mut bytes = std::fs::read(&state).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&state, &bytes).unwrap();
    let resume = [&every[..], &["--resume"]].concat();
    let output = run(train_command(&config, &out, 1, "5steps", &resume));
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let name = state.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        stderr(&output).contains(&name) && stderr(&output).contains("corrupt"),
        "{}",
        stderr(&output)
    );

    // A truncated manifest.
    std::fs::write(ckpt.join("checkpoint.json"), "{\"version\": 1, \"se").unwrap();
    let output = run(train_command(&config, &out, 1, "5steps", &resume));
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        stderr(&output).contains("checkpoint.json"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn resuming_with_another_seed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "tiny.toml", TINY_CONFIG);
    let out = dir.path().join("run");
    let output = run(train_command(
        &config,
        &out,
        1,
        "3steps",
        &["--checkpoint-every", "1"],
    ));
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let output = run(train_command(&config, &out, 2, "3steps", &["--resume"]));
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(stderr(&output).contains("seed 1"), "{}", stderr(&output));
}

#[test]
fn a_corrupt_or_missing_data_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "tiny.toml", TINY_CONFIG);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    copy_dir(&corpus_dir(), &data);
    let victim = split_manifest(&data).unwrap().train[0].clone();
    std::fs::write(&victim, b"Enter HAMLET\n\xff\xfe\x00 binary garbage").unwrap();
    let out = dir.path().join("run");
    let data_arg = data.to_string_lossy().into_owned();
    let output = run(train_command(
        &config,
        &out,
        1,
        "2steps",
        &["--data", &data_arg],
    ));
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        stderr(&output).contains(&name) && stderr(&output).contains("UTF-8"),
        "{}",
        stderr(&output)
    );

    let missing = dir.path().join("no-such-corpus");
    let missing_arg = missing.to_string_lossy().into_owned();
    let output = run(train_command(
        &config,
        &out,
        1,
        "2steps",
        &["--data", &missing_arg],
    ));
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        stderr(&output).contains("no-such-corpus"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn bad_usage_and_bad_config_exit_2_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(binary())
        .args([
            "train", "--seed", "1", "--split", "test", "--budget", "5steps", "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(stderr(&output).contains("split"), "{}", stderr(&output));

    let output = Command::new(binary())
        .args([
            "train",
            "--seed",
            "1",
            "--split",
            "val",
            "--budget",
            "5 parsecs",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(stderr(&output).contains("budget"), "{}", stderr(&output));

    let config = write_config(
        dir.path(),
        "bad.toml",
        &TINY_CONFIG.replace("lr = 0.01\n", "lr = -1.0\n"),
    );
    let output = run(train_command(
        &config,
        &dir.path().join("run"),
        1,
        "2steps",
        &[],
    ));
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        stderr(&output).contains("bad.toml") && stderr(&output).contains("optim.lr"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_blow_up_stops_the_run_at_once_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let config = TINY_CONFIG
        .replace(
            "lr = 0.01\nembed_lr = 0.01",
            "lr = 1000.0\nembed_lr = 1000.0",
        )
        .replace("grad_clip = 1.0", "grad_clip = 0.0");
    let config = write_config(dir.path(), "hot.toml", &config);
    let out = dir.path().join("run");
    let output = run(train_command(&config, &out, 1, "500steps", &[]));
    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    let m = metrics(&out);
    assert_eq!(m["status"], "diverged");
    assert!(m["val_bpb"].is_null());
    assert!(
        m["steps"].as_u64().unwrap() < 50,
        "took {} steps to notice",
        m["steps"]
    );
}

#[test]
fn a_run_past_its_timeout_exits_4_with_a_timed_out_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "tiny.toml", TINY_CONFIG);
    let out = dir.path().join("run");
    let output = run(train_command(&config, &out, 1, "60s", &["--timeout", "2s"]));
    assert_eq!(output.status.code(), Some(4), "{}", describe(&output));
    let m = metrics(&out);
    assert_eq!(m["status"], "timed_out");
    assert!(m["wall_s"].as_f64().unwrap() < 10.0);
}

#[test]
fn bf16_on_the_cpu_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "tiny.toml", TINY_CONFIG);
    let out = dir.path().join("run");
    let output = run(train_command(
        &config,
        &out,
        1,
        "2steps",
        &["--dtype", "bf16"],
    ));
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        stderr(&output).contains("--dtype bf16 needs --device cuda"),
        "{}",
        stderr(&output)
    );
    assert!(!out.join("metrics.json").exists());
}
