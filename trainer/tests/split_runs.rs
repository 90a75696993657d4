//! Training apart from evaluation: `train` without `--split` never opens the validation or
//! holdout documents, `eval` scores its checkpoint exactly as the one-process `train --split`
//! does, and the evaluation refuses a model that changes while it is scored.

mod common;

use agentloop_trainer::contract::{BatchSource, LanguageModel, StepStats, TrainState, Training};
use agentloop_trainer::eval::{self, EvalError};
use agentloop_trainer::stateless;
use agentloop_trainer::tokenizer::ByteTokenizer;
use candle_core::{DType, Device, Tensor, Var};
use common::*;
use std::cell::Cell;
use std::path::Path;
use std::process::Command;

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn eval_command(split: &str, out: &Path, config: &Path, data: &Path) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(["eval", "--split", split])
        .arg("--out")
        .arg(out)
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data);
    cmd
}

/// A copy of the corpus whose `val` and `holdout` entries lead nowhere: any attempt to list or
/// open them fails (dangling symbolic links, so this holds for root too).
fn corpus_without_eval_data(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("train-only-corpus");
    copy_dir(&corpus_dir(), &data);
    for split in ["val", "holdout"] {
        std::fs::remove_dir_all(data.join(split)).unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere").join(split), data.join(split)).unwrap();
    }
    data
}

#[test]
fn train_alone_never_reads_eval_data_and_eval_scores_it_like_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "tiny.toml", TINY_CONFIG);
    let hidden = corpus_without_eval_data(dir.path());
    let hidden_arg = hidden.to_string_lossy().into_owned();

    // The hiding is real: a run that evaluates cannot load its split from this corpus.
    let refused = dir.path().join("refused");
    let output = run(train_command(
        &config,
        &refused,
        3,
        "6steps",
        &["--data", &hidden_arg],
    ));
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(stderr(&output).contains("val"), "{}", stderr(&output));

    // Training alone succeeds without them and leaves a checkpoint, no metrics.json.
    let split_out = dir.path().join("split");
    let mut train = Command::new(binary());
    train
        .args(["train", "--seed", "3", "--budget", "6steps", "--out"])
        .arg(&split_out)
        .arg("--config")
        .arg(&config)
        .arg("--data")
        .arg(&hidden);
    let output = run(train);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(split_out.join("checkpoint/checkpoint.json").exists());
    assert!(split_out.join("train_metrics.json").exists());
    assert!(!split_out.join("metrics.json").exists());

    // `eval` cannot score it without the evaluation data either...
    let output = run(eval_command("val", &split_out, &config, &hidden));
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(!split_out.join("metrics.json").exists());
    // ...and with it, gives exactly the one-process figure and record.
    let output = run(eval_command("val", &split_out, &config, &corpus_dir()));
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let one = dir.path().join("one");
    let output = run(train_command(&config, &one, 3, "6steps", &[]));
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let (a, b) = (metrics(&one), metrics(&split_out));
    assert_eq!(
        a["val_bpb"].as_f64().unwrap().to_bits(),
        b["val_bpb"].as_f64().unwrap().to_bits(),
        "one process {a}\nsplit {b}"
    );
    let keys =
        |m: &serde_json::Value| -> Vec<String> { m.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&a), keys(&b));
    for key in [
        "split",
        "train_loss",
        "tokens",
        "steps",
        "params",
        "seed",
        "status",
        "device",
    ] {
        assert_eq!(a[key], b[key], "{key}");
    }

    // Holdout from the same checkpoint, and a missing training record is bad input.
    let output = run(eval_command("holdout", &split_out, &config, &corpus_dir()));
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(metrics(&split_out)["split"], "holdout");
    let output = run(eval_command(
        "val",
        &dir.path().join("empty"),
        &config,
        &corpus_dir(),
    ));
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        stderr(&output).contains("train_metrics.json"),
        "{}",
        stderr(&output)
    );
}

/// A bigram table as the model: logits of token `t` are row `t`.
struct TableModel {
    table: Var,
    /// Test-time training: each scoring pass moves the parameters.
    adapts_parameters: bool,
    /// Hidden state outside the parameters: scales the logits by the number of scoring passes.
    calls: Option<Cell<u32>>,
}

impl LanguageModel for TableModel {
    fn logits(&self, tokens: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let mut logits = self
            .table
            .as_tensor()
            .embedding(&tokens.flatten_all()?)?
            .reshape((b, t, 257))?;
        // Only on full evaluation batches: the causal check's one- and two-row passes see a
        // model that never changes (an attacker would aim past that check).
        let scoring = b > 2;
        if self.adapts_parameters && scoring {
            self.table.set(&(self.table.as_tensor() * 1.001)?)?;
        }
        if let (Some(calls), true) = (&self.calls, scoring) {
            calls.set(calls.get() + 1);
            logits = (logits * (1.0 + f64::from(calls.get()) * 1e-3))?;
        }
        Ok(logits)
    }
    fn max_seq_len(&self) -> usize {
        16
    }
}

impl Training for TableModel {
    fn step(&mut self, _: &mut dyn BatchSource, _: f64) -> candle_core::Result<StepStats> {
        unreachable!("only evaluated")
    }
    fn model(&self) -> &dyn LanguageModel {
        self
    }
    fn param_count(&self) -> usize {
        self.table.elem_count()
    }
    fn state(&self) -> candle_core::Result<TrainState> {
        Ok(TrainState {
            tensors: vec![("param.table".into(), self.table.as_detached_tensor())],
            meta: serde_json::json!({}),
        })
    }
    fn restore(&mut self, _: TrainState) -> candle_core::Result<()> {
        Ok(())
    }
}

fn table_model(adapts_parameters: bool, hidden_state: bool) -> TableModel {
    let table = Tensor::randn(0f32, 1.0, (257, 257), &Device::Cpu).unwrap();
    TableModel {
        table: Var::from_tensor(&table.to_dtype(DType::F32).unwrap()).unwrap(),
        adapts_parameters,
        calls: hidden_state.then(|| Cell::new(0)),
    }
}

#[test]
fn the_evaluation_refuses_a_model_that_changes_while_it_is_scored() {
    let stream: Vec<u32> = b"the quick brown fox jumps over the lazy dog, again and again. "
        .iter()
        .cycle()
        .take(2000)
        .map(|&b| u32::from(b))
        .collect();
    let (tok, cpu) = (ByteTokenizer, Device::Cpu);

    let honest = table_model(false, false);
    let guarded = stateless::evaluate(&honest, &stream, 600, &tok, &cpu).unwrap();
    let plain = eval::bits_per_byte(&honest, &stream, 600, &tok, &cpu).unwrap();
    assert_eq!(guarded.bpb.to_bits(), plain.bpb.to_bits());

    for (name, model) in [
        ("parameters", table_model(true, false)),
        ("hidden state", table_model(false, true)),
    ] {
        let err = stateless::evaluate(&model, &stream, 600, &tok, &cpu).unwrap_err();
        assert!(matches!(err, EvalError::StateChanged(_)), "{name}: {err}");
        let message = err.to_string();
        assert!(
            message.starts_with("model state changed during evaluation") && !message.contains('\n'),
            "{name}: {message}"
        );
    }
}
