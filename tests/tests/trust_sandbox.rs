//! The trust boundary, attacked through the real loop (issue 18): every training run of a toy
//! target tries to read the validation and holdout files, other runs' results, the ledger, the
//! user's checkout and git objects, to write its own worktree, to reach a TCP port on
//! 127.0.0.1, to leave a process behind that overwrites the eval step's metrics.json, and to find the provider's API key in its environment or in any process's
//! `/proc/PID/environ` (printing whatever it finds plain, hex, base64 and reversed). A proposed
//! change makes the run fail when it cannot steal the validation file. The provider key's
//! variable is named so that the allow-list's `RAYON_*` prefix would let it through.
//!
//! Asserted: every attempt is denied, the stealing change is recorded as crashed with the
//! reason, the separate eval step still reads val (its metric counts the file), the training
//! step's own metrics.json never counts, no form of the key is in any file under `.agentloop/`,
//! and the ledger and `status` record the sandbox (and `--no-sandbox`, and a target without an
//! `[eval]` step, as weaker boundaries).

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use agentloop::testing::{CannedReply, ScriptedServer};
use agentloop_ledger::payload::DecisionOutcome;
use agentloop_ledger::EventKind;
use agentloop_tests::toy::ToyOptions;
use agentloop_tests::{check, kinds, output, TargetRepo};

agentloop_tests::e2e_paths!();
const KEY_ENV: &str = "RAYON_PROVIDER_AUTH";
const KEY: &str = "zq7-test-provider-key-5f0c2e9a81";
const VAL_DOC: &str = "the validation document, which no training run may read\n";

/// Probes every way out it can think of, records each in `$out/attack.txt`, prints every
/// environment value it can see (its own and every visible process's) in four encodings, and,
/// when the config asks for lr 0.03 (the proposed change), fails unless it stole val.
const TRAIN_SH: &str = r#"#!/bin/sh
seed=$1; budget=$2; out=$3
mkdir -p "$out"
lr=$(awk -F= '/^lr *=/ { gsub(/[ \t]/, "", $2); print $2 }' config.toml)
a="$out/attack.txt"
probe() { if sh -c "$2" >/dev/null 2>&1; then echo "$1 REACHED" >> "$a"; else echo "$1 denied" >> "$a"; fi; }
probe val 'cat data/val/doc.txt'
probe holdout 'cat data/holdout/doc.txt'
probe other_runs 'ls ../../runs'
probe ledger 'cat ../../ledger.db'
probe build_cache 'ls ../../bin'
probe repo_git 'cat ../../../.git/HEAD'
probe user_checkout 'cat ../../../data/val/doc.txt'
probe write_worktree 'echo x >> config.toml'
probe tcp "bash -c 'echo x > /dev/tcp/127.0.0.1/$(cat net_port)'"
(env; for f in /proc/[0-9]*/environ; do tr '\0' '\n' < "$f"; echo; done) 2>/dev/null \
  | sed -n 's/^[A-Za-z_][A-Za-z0-9_]*=//p' | sort -u > "$out/values.txt"
while IFS= read -r v; do
  [ -n "$v" ] || continue
  printf 'found %s hex %s b64 %s rev %s\n' "$v" "$(printf %s "$v" | od -An -tx1 | tr -d ' \n')" \
    "$(printf %s "$v" | base64 -w0)" "$(printf %s "$v" | rev)" >> "$out/leak.txt"
done < "$out/values.txt"
cat "$out/leak.txt"
if [ -n "$RAYON_PROVIDER_AUTH" ]; then echo "KEY IN ENV $RAYON_PROVIDER_AUTH"; fi
# A training step may write a metrics.json of its own: it must never count.
echo '{"val_bpb": 0.0001, "status": "ok"}' > "$out/metrics.json"
# Nor may a process it leaves behind overwrite the eval step's metrics.json once it appears.
( while ! grep -q val_chars "$out/metrics.json" 2>/dev/null; do sleep 0.002; done
  echo '{"val_bpb": 0.0001, "status": "ok", "val_chars": 56}' > "$out/metrics.json" ) &
echo "$lr" > "$out/checkpoint"
if [ "$lr" = "0.03" ]; then
  cat data/val/doc.txt > "$out/stolen.txt" || { echo "attack: could not read data/val/doc.txt; env: $(tr '\n' ' ' < "$out/values.txt")" >&2; exit 1; }
fi
echo '{"event":"step","step":1,"loss":1.0}'
"#;

/// The evaluation: reads the checkpoint and the split's document (which it may), and writes the
/// metric; it also probes what it must not do.
const EVAL_SH: &str = r#"#!/bin/sh
split=$1; out=$2; seed=$3
a="$out/eval_attack.txt"
probe() { if sh -c "$2" >/dev/null 2>&1; then echo "$1 REACHED" >> "$a"; else echo "$1 denied" >> "$a"; fi; }
probe write_worktree 'echo x >> config.toml'
probe shared_memory "echo x > /dev/shm/agentloop-eval-leak-$(cat net_port)"
probe tcp "bash -c 'echo x > /dev/tcp/127.0.0.1/$(cat net_port)'"
lr=$(cat "$out/checkpoint") || exit 1
if [ "$lr" = "0.003" ]; then echo "eval: this checkpoint does not load" >&2; exit 1; fi
chars=$(wc -c < "data/$split/doc.txt") || exit 1
awk -v seed="$seed" -v lr="$lr" -v n="$chars" -v out="$out" -v sp="$split" 'BEGIN {
  srand(seed); noise = (rand() - 0.5) * 0.004
  l = log(lr / 0.01) / log(10)
  printf "{\"val_bpb\": %.9f, \"split\": \"%s\", \"status\": \"ok\", \"val_chars\": %d}\n", 1.0 + 0.5 * l * l + noise, sp, n > (out "/metrics.json")
}'
"#;

fn agentloop_toml() -> String {
    r#"[target]
editable = ["config.toml"]
frozen = ["train.sh", "eval.sh", "agentloop.toml", ".gitignore", "net_port", "data/**"]
metric = "val_bpb"
eval_data = ["data/val/**", "data/holdout/**"]

[build]
command = "mkdir -p .agentloop-bin && cp train.sh .agentloop-bin/train && cp eval.sh .agentloop-bin/eval"
timeout = "1m"

[train]
command = "sh .agentloop-bin/train {seed} {budget} {out}"
budget = "1steps"
smoke_budget = "1steps"
timeout = "1m"
memory_limit = "1GiB"

[eval]
command = "sh .agentloop-bin/eval {split} {out} {seed}"
timeout = "30s"

[decision]
rule_version = "sequential-screen/v2"
min_baseline_seeds = 3
min_replays = 1
stages = [{ pairs = 3, p_threshold = 0.05 }]
min_effect_sd = 0.5

[agent]
provider = "openai"
api_key_env = "RAYON_PROVIDER_AUTH"
"#
    .to_string()
}

/// The toy repository turned into the sandbox target (committed), with a TCP listener's port.
fn sandbox_target(port: u16) -> TargetRepo {
    let repo = TargetRepo::toy(&ToyOptions::default()).unwrap();
    let w = |p: &str, text: &str| {
        let path = repo.root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    w("train.sh", TRAIN_SH);
    w("eval.sh", EVAL_SH);
    w("agentloop.toml", &agentloop_toml());
    w("net_port", &port.to_string());
    w("data/train/doc.txt", "training text\n");
    w("data/val/doc.txt", VAL_DOC);
    w("data/holdout/doc.txt", "the holdout document\n");
    repo.git(&["add", "-A"]).unwrap();
    repo.git(&["commit", "-q", "-m", "sandbox target"]).unwrap();
    repo
}

/// Every file under `dir`, recursively (symlinks not followed).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
    }
    s
}

/// The key as plain text, hex, base64 (at each of the three byte alignments, so it is found
/// inside a longer encoded text too) and reversed.
fn key_forms() -> Vec<String> {
    let mut forms = vec![
        KEY.to_string(),
        hex_of(KEY.as_bytes()),
        KEY.chars().rev().collect(),
    ];
    for skip in 0..3 {
        // The stable middle of the base64 of the key preceded by `skip` other bytes.
        let mut prefixed = vec![b'x'; skip];
        prefixed.extend_from_slice(KEY.as_bytes());
        let b = base64(&prefixed);
        forms.push(b[4..b.len() - 4].to_string());
    }
    forms
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn runs_cannot_reach_eval_data_records_secrets_or_the_network_and_the_eval_step_still_works() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (accepted, stop) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Ok((mut s, _)) = listener.accept() {
                    let mut buf = Vec::new();
                    let _ = s.read_to_end(&mut buf);
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        })
    };
    let repo = sandbox_target(port);
    let lr_reply = |lr: &str| {
        CannedReply::openai_chat(
            &format!("DESCRIPTION: learning rate {lr}\nRATIONALE: Faster.\n\nconfig.toml\n<<<<<<< SEARCH\nlr = 0.1\n=======\nlr = {lr}\n>>>>>>> REPLACE\n"),
            500,
            60,
        )
    };
    // The first change steals val in training; the second one's eval step fails.
    let server = ScriptedServer::start([lr_reply("0.03"), lr_reply("0.003")]).unwrap();
    let mut cmd = repo.agentloop(
        BIN.as_ref(),
        &target_dir(),
        &[
            "start",
            "--budget",
            "5m",
            "--max-changes",
            "2",
            "--agent",
            "openai",
            "--model",
            "scripted",
            "--base-url",
            &server.openai_base_url(),
        ],
    );
    cmd.env(KEY_ENV, KEY)
        .env("UNLISTED_VARIABLE", "not-for-runs-1234");
    let out = output(cmd).unwrap();
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "agentloop failed:\n{stderr}");
    // The key was real and in use: the provider got it.
    let auth = server.requests()[0]
        .header("authorization")
        .unwrap_or_default()
        .to_string();
    assert_eq!(auth, format!("Bearer {KEY}"));

    // The stealing change crashed, with the reason recorded.
    let summary = check::consistent(&repo, "main").unwrap();
    let decisions: Vec<_> = summary.decisions.values().collect();
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    assert!(
        decisions
            .iter()
            .all(|d| d.outcome == DecisionOutcome::Crashed),
        "{decisions:?}"
    );
    let events = repo.events().unwrap();
    let runs = kinds(&events, EventKind::RunResult);
    let crashed: Vec<_> = runs
        .iter()
        .filter(|e| e.payload["exit_status"] == "crashed")
        .collect();
    assert_eq!(crashed.len(), 2, "the stealing run and the failed eval");
    let tail = crashed[0].payload["log_tail"].as_str().unwrap_or_default();
    assert!(
        tail.contains("could not read data/val/doc.txt") && tail.contains("Permission denied"),
        "{tail}"
    );
    assert!(crashed[0].payload.get("failed_step").is_none());
    // A failing eval step is a crashed run, with the step and the reason in the ledger.
    let failed = &crashed[1].payload;
    assert_eq!(failed["failed_step"], "eval", "{failed}");
    assert_eq!(
        failed["reason"], "the eval step failed (exit 1)",
        "{failed}"
    );
    assert!(
        failed["log_tail"]
            .as_str()
            .unwrap_or_default()
            .contains("this checkpoint does not load"),
        "{failed}"
    );

    // Every other run was evaluated by the eval step, which did read val; the training step's
    // own metrics.json (0.0001) never counted.
    let ok: Vec<_> = runs
        .iter()
        .filter(|e| e.payload["exit_status"] == "ok")
        .collect();
    assert!(ok.len() >= 4, "calibration runs: {}", ok.len());
    for e in &ok {
        let m = &e.payload["metrics"];
        assert_eq!(m["val_chars"].as_u64(), Some(VAL_DOC.len() as u64), "{m}");
        assert!(m["val_bpb"].as_f64().unwrap() > 0.5, "{m}");
    }

    // Every attempt of every run was denied.
    let run_dirs: Vec<PathBuf> = files_under(&repo.root.join(".agentloop/runs"))
        .into_iter()
        .filter(|p| p.ends_with("attack.txt"))
        .collect();
    assert_eq!(run_dirs.len(), runs.len(), "each run probed");
    for f in &run_dirs {
        let text = std::fs::read_to_string(f).unwrap();
        assert_eq!(text.lines().count(), 9, "{}: {text}", f.display());
        assert!(!text.contains("REACHED"), "{}: {text}", f.display());
    }
    let evals: Vec<PathBuf> = files_under(&repo.root.join(".agentloop/runs"))
        .into_iter()
        .filter(|p| p.ends_with("eval_attack.txt"))
        .collect();
    assert_eq!(evals.len(), ok.len() + 1);
    for f in &evals {
        let text = std::fs::read_to_string(f).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(!text.contains("REACHED"), "{}: {text}", f.display());
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "a run reached 127.0.0.1"
    );
    assert!(!Path::new(&format!("/dev/shm/agentloop-eval-leak-{port}")).exists());

    // The runs saw values (PATH...) but never the key nor an unlisted variable.
    let leak = std::fs::read_to_string(run_dirs[0].with_file_name("leak.txt")).unwrap();
    assert!(leak.contains("found /"), "{leak}");
    assert!(!leak.contains("not-for-runs-1234"), "{leak}");
    let forms = key_forms();
    let mut scanned = 0;
    for f in files_under(&repo.root.join(".agentloop")) {
        let bytes = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for form in &forms {
            assert!(
                !text.contains(form.as_str()),
                "{} holds the key as {form}",
                f.display()
            );
        }
        scanned += 1;
    }
    assert!(scanned > 20, "{scanned} files");

    // The ledger and `status` say how the runs were sandboxed.
    let start = &kinds(&events, EventKind::SessionStart)[0].payload["sandbox"];
    assert_eq!(start["enforced"], true, "{start}");
    assert_eq!(start["eval_separated"], true, "{start}");
    assert_eq!(start["network"], "netns", "{start}");
    assert!(start["landlock_abi"].as_i64().unwrap() >= 1, "{start}");
    assert!(start.get("weaker").is_none(), "{start}");
    let (code, status, _) = repo
        .run_agentloop(BIN.as_ref(), &target_dir(), &["status"])
        .unwrap();
    assert_eq!(code, 0);
    assert!(
        status.contains("sandbox   on (Landlock ABI") && status.contains("eval step separated"),
        "{status}"
    );
    repo.verify_with_cli(BIN.as_ref(), &target_dir()).unwrap();
}

/// Without `[eval]` the training run must read val itself (recorded as a weaker boundary);
/// `--no-sandbox` turns the OS sandbox off (recorded, shown), but never the env allow-list.
#[test]
fn a_missing_eval_step_and_no_sandbox_are_recorded_and_shown() {
    let repo = TargetRepo::toy(&ToyOptions {
        offline_values: vec![0.03],
        ..ToyOptions::default()
    })
    .unwrap();
    let session = |extra: &[&str]| {
        let mut args = vec![
            "start",
            "--budget",
            "2m",
            "--max-changes",
            "1",
            "--agent",
            "offline",
        ];
        args.extend_from_slice(extra);
        let (code, _, err) = repo
            .run_agentloop(BIN.as_ref(), &target_dir(), &args)
            .unwrap();
        assert_eq!(code, 0, "{err}");
        let (_, status, _) = repo
            .run_agentloop(BIN.as_ref(), &target_dir(), &["status", "--json"])
            .unwrap();
        let (_, text, _) = repo
            .run_agentloop(BIN.as_ref(), &target_dir(), &["status"])
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(&status).unwrap();
        (json["sandbox"].clone(), text)
    };
    let (sandbox, text) = session(&[]);
    assert_eq!(sandbox["enforced"], true, "{sandbox}");
    assert_eq!(sandbox["eval_separated"], false, "{sandbox}");
    assert!(
        text.contains("WEAKER: no [eval] step: the training run may read eval_data"),
        "{text}"
    );
    let (sandbox, text) = session(&["--no-sandbox"]);
    assert_eq!(sandbox["enforced"], false, "{sandbox}");
    assert!(text.contains("sandbox   OFF (--no-sandbox)"), "{text}");
    let starts: Vec<_> = repo
        .events()
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::SessionStart)
        .map(|e| e.payload["sandbox"]["enforced"].clone())
        .collect();
    assert_eq!(starts, [true, false]);
}
