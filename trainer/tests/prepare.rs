//! `prepare` end to end: real files in (text, JSONL, Parquet written here), real shards out,
//! read back by the trainer; the real binary where a process must be killed.

mod common;

use agentloop_trainer::prepare::{self, input::Format, PrepareArgs, PrepareError};
use agentloop_trainer::shards::{Shard, ShardSet};
use agentloop_trainer::tokenizer::spec::{self, TokenizerSpec};
use agentloop_trainer::tokenizer::{bpe, tiktoken::TiktokenTokenizer, ByteTokenizer, Tokenizer};
use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Non-ASCII on purpose: accents, CJK, Greek, emoji, a combining mark, CRLF.
const SAMPLES: &[&str] = &[
    "To be, or not to be: that is the question.",
    "naïve café — déjà vu, 1234567 numbers and    spaces\r\n",
    "日本語のテキスト、そして中文。",
    "Ελληνικά κείμενα με τόνους.",
    "emoji 🙂🚀 and e\u{301} combining, tabs\tand\nnewlines\n\n",
    "'s 't 're 've 'm 'll 'd CAPS'LL",
];

/// Small documents with shared words, so a BPE has merges to learn.
fn documents(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "Document {i}. {} {} The quick brown fox jumps over the lazy dog {i} times.\n",
                SAMPLES[i % SAMPLES.len()],
                SAMPLES[(i * 7 + 3) % SAMPLES.len()]
            )
        })
        .collect()
}

fn write_text_dir(dir: &Path, docs: &[String]) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, doc) in docs.iter().enumerate() {
        std::fs::write(dir.join(format!("doc_{i:04}.txt")), doc).unwrap();
    }
}

fn write_jsonl(path: &Path, field: &str, docs: &[String]) {
    let lines: Vec<String> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| serde_json::json!({ "id": i, field: d }).to_string())
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// A zstd-compressed Parquet file with one string column, several row groups.
fn write_parquet(path: &Path, column: &str, docs: &[String]) {
    let schema = Arc::new(
        parse_message_type(&format!(
            "message doc {{ REQUIRED BYTE_ARRAY {column} (UTF8); }}"
        ))
        .unwrap(),
    );
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build(),
    );
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
    for chunk in docs.chunks(7) {
        let mut group = writer.next_row_group().unwrap();
        while let Some(mut col) = group.next_column().unwrap() {
            let values: Vec<ByteArray> = chunk
                .iter()
                .map(|d| ByteArray::from(d.as_bytes().to_vec()))
                .collect();
            col.typed::<ByteArrayType>()
                .write_batch(&values, None, None)
                .unwrap();
            col.close().unwrap();
        }
        group.close().unwrap();
    }
    writer.close().unwrap();
}

fn args(inputs: &[&Path], tokenizer: &str, out: &Path) -> PrepareArgs {
    let mut a = PrepareArgs::new(
        inputs.iter().map(|p| p.to_path_buf()).collect(),
        tokenizer.parse().unwrap(),
        out.to_path_buf(),
    );
    a.val_docs = 3;
    a.holdout_docs = 2;
    a.split_seed = 11;
    a.shard_tokens = 2_000;
    a
}

/// Every file `prepare` leaves, name -> bytes (the run key file aside).
fn output_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != ".prepare-key")
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn shard_names(dir: &Path) -> Vec<String> {
    if !dir.exists() {
        return Vec::new();
    }
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".bin") || n.ends_with(".tmp"))
        .collect()
}

fn trained_bpe(dir: &Path) -> TiktokenTokenizer {
    let mut texts: Vec<String> = documents(120);
    texts.extend(SAMPLES.iter().map(|s| s.to_string()));
    bpe::train(texts.into_iter(), 400, &dir.join("tokenizer.json")).unwrap()
}

#[test]
fn every_tokenizer_round_trips_text_exactly_including_non_ascii() {
    let dir = tempfile::tempdir().unwrap();
    let trained = trained_bpe(dir.path());
    let reloaded = bpe::load(&dir.path().join("tokenizer.json")).unwrap();
    let gpt2 = TiktokenTokenizer::gpt2().unwrap();
    let unseen = "Unseen: Ωμέγα ∑ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ﷽ \u{feff}zero-width\u{200b}joiner";
    let tokenizers: [(&str, &dyn Tokenizer); 3] =
        [("byte", &ByteTokenizer), ("bpe", &trained), ("gpt2", &gpt2)];
    for (name, tok) in tokenizers {
        for text in SAMPLES.iter().copied().chain([unseen, ""]) {
            let mut tokens = vec![tok.bos()];
            tokens.extend(tok.encode(text.as_bytes()));
            assert_eq!(
                String::from_utf8(tok.decode(&tokens)).unwrap(),
                text,
                "{name} does not round-trip {text:?}"
            );
            assert!(tokens[1..].iter().all(|&t| !tok.is_special(t)), "{name}");
        }
    }
    // The trained BPE learned merges, and reloading it from disk encodes identically.
    let text = documents(3).concat();
    let tokens = trained.encode(text.as_bytes());
    assert!(tokens.len() * 2 < text.len(), "{} tokens", tokens.len());
    assert_eq!(reloaded.encode(text.as_bytes()), tokens);
    assert_eq!(trained.vocab_size(), 400);
    assert_eq!(trained.bos(), 399);
    // GPT-2 ids are the published ones.
    assert_eq!(gpt2.encode(b"Hello world"), [15496, 995]);
    assert_eq!((gpt2.vocab_size(), gpt2.bos()), (50_257, 50_256));
}

#[test]
fn the_bytes_per_token_table_matches_the_tokenizer_on_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let trained = trained_bpe(dir.path());
    let gpt2 = TiktokenTokenizer::gpt2().unwrap();
    let tokenizers: [(&str, &dyn Tokenizer); 3] =
        [("byte", &ByteTokenizer), ("bpe", &trained), ("gpt2", &gpt2)];
    for (name, tok) in tokenizers {
        let table = spec::token_bytes(tok);
        assert_eq!(table.len(), tok.vocab_size(), "{name}");
        for id in 0..tok.vocab_size() as u32 {
            let decoded = tok.decode(&[id]).len() as u32;
            assert_eq!(table[id as usize], decoded, "{name} token {id}");
            assert_eq!(tok.is_special(id), id == tok.bos(), "{name} token {id}");
            assert_eq!(decoded == 0, tok.is_special(id), "{name} token {id}");
        }
        let out = dir.path().join(name);
        std::fs::create_dir_all(&out).unwrap();
        spec::save_token_bytes(&out, tok).unwrap();
        spec::check_token_bytes(&out, tok).unwrap();
    }
    // A table that disagrees with the tokenizer is refused.
    let out = dir.path().join("byte");
    let mut table = spec::token_bytes(&ByteTokenizer);
    table[65] = 2;
    std::fs::write(
        out.join(spec::TOKEN_BYTES_FILE),
        serde_json::to_vec(&table).unwrap(),
    )
    .unwrap();
    let err = spec::check_token_bytes(&out, &ByteTokenizer).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn parquet_and_jsonl_inputs_give_the_same_shards_as_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let docs = documents(40);
    let text_dir = dir.path().join("text");
    write_text_dir(&text_dir, &docs);
    let jsonl = dir.path().join("docs.jsonl");
    write_jsonl(&jsonl, "body", &docs);
    let parquet = dir.path().join("docs.parquet");
    write_parquet(&parquet, "text", &docs);
    for tokenizer in ["byte", "bpe:300"] {
        let out = |name: &str| dir.path().join(format!("{name}-{tokenizer}"));
        let from_text = prepare::prepare(&args(&[&text_dir], tokenizer, &out("text"))).unwrap();
        let mut jsonl_args = args(&[&jsonl], tokenizer, &out("jsonl"));
        jsonl_args.field = "body".into();
        prepare::prepare(&jsonl_args).unwrap();
        prepare::prepare(&args(&[&parquet], tokenizer, &out("parquet"))).unwrap();

        let m = &from_text.manifest;
        assert_eq!(
            (m.train.documents, m.val.documents, m.holdout.documents),
            (35, 3, 2)
        );
        assert!(m.train.shards.len() > 1, "{tokenizer}: several shards");
        let text_files = output_files(&out("text"));
        // Same shards, tokenizer and tables; the manifests differ only in the run key.
        for other in ["jsonl", "parquet"] {
            let files = output_files(&out(other));
            assert_eq!(files.len(), text_files.len(), "{tokenizer} {other}");
            for ((name, bytes), (other_name, other_bytes)) in text_files.iter().zip(&files) {
                assert_eq!(name, other_name);
                if name != "manifest.json" {
                    assert!(bytes == other_bytes, "{tokenizer}: {other} {name} differs");
                }
            }
        }
        // The shards hold exactly the documents, each after BOS, in order within a split.
        let tok = TokenizerSpec::load(m.tokenizer, &out("text")).unwrap();
        let shards = ShardSet::open(&prepare::manifest::Manifest::shard_paths(
            &out("text"),
            &m.val,
        ))
        .unwrap();
        let val_tokens = shards.read(0, shards.len());
        let decoded = String::from_utf8(tok.decode(&val_tokens)).unwrap();
        let starts = val_tokens.iter().filter(|&&t| t == tok.bos()).count();
        assert_eq!(starts, 3);
        assert_eq!(val_tokens[0], tok.bos());
        assert!(docs.iter().filter(|d| decoded.contains(d.as_str())).count() == 3);
    }
}

#[test]
fn shards_are_u16_up_to_65536_tokens_and_the_manifest_has_the_real_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let text_dir = dir.path().join("text");
    write_text_dir(&text_dir, &documents(8));
    // (u32 shards are covered by the shard round-trip unit test: no corpus this small can
    // train more than 65 536 tokens.) A BPE asked for more tokens than the corpus has pairs
    // stops early; the manifest records the vocabulary it got.
    for (tokenizer, width, vocab) in [("byte", 2, 257), ("gpt2", 2, 50_257), ("bpe:70000", 2, 0)] {
        let out = dir.path().join(tokenizer);
        let mut a = args(&[&text_dir], tokenizer, &out);
        a.val_docs = 1;
        a.holdout_docs = 1;
        let summary = prepare::prepare(&a).unwrap();
        assert_eq!(summary.manifest.token_width, width, "{tokenizer}");
        let real = summary.manifest.vocab_size;
        if vocab > 0 {
            assert_eq!(real, vocab);
        } else {
            assert!(real > 300 && real < 70_000, "{real}");
            let tok = TokenizerSpec::load(summary.manifest.tokenizer, &out).unwrap();
            assert_eq!((tok.vocab_size(), tok.bos() as usize), (real, real - 1));
        }
        let shard = Shard::open(&out.join(&summary.manifest.train.shards[0])).unwrap();
        assert_eq!(shard.header().width.bytes() as u32, width);
        let len = std::fs::metadata(out.join(&summary.manifest.train.shards[0]))
            .unwrap()
            .len();
        assert_eq!(len, 1024 + shard.len() as u64 * u64::from(width));
    }
}

fn assert_refused(result: Result<prepare::Summary, PrepareError>, out: &Path, expected: &[&str]) {
    let err = result.expect_err("bad input must be refused").to_string();
    for part in expected {
        assert!(err.contains(part), "error {err:?} lacks {part:?}");
    }
    assert_eq!(
        shard_names(out),
        Vec::<String>::new(),
        "a shard was left behind"
    );
    assert!(!out.join("manifest.json").exists());
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_leaves_no_shard() {
    let dir = tempfile::tempdir().unwrap();
    let docs = documents(10);
    let out = dir.path().join("out");

    let empty_dir = dir.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    std::fs::write(empty_dir.join("blank.txt"), "").unwrap();
    assert_refused(
        prepare::prepare(&args(&[&empty_dir], "byte", &out)),
        &out,
        &["no documents"],
    );
    let empty_jsonl = dir.path().join("empty.jsonl");
    std::fs::write(&empty_jsonl, "").unwrap();
    assert_refused(
        prepare::prepare(&args(&[&empty_jsonl], "bpe:300", &out)),
        &out,
        &["no documents"],
    );

    let no_text = dir.path().join("no_text.parquet");
    write_parquet(&no_text, "content", &docs);
    assert_refused(
        prepare::prepare(&args(&[&no_text], "byte", &out)),
        &out,
        &["no_text.parquet", "no column `text`", "content", "--field"],
    );

    // Invalid UTF-8 in the last of several inputs: nothing is written for the valid ones.
    let good = dir.path().join("good");
    write_text_dir(&good, &docs);
    let bad_text = dir.path().join("bad.txt");
    std::fs::write(&bad_text, b"fine start \xff\xfe broken").unwrap();
    assert_refused(
        prepare::prepare(&args(&[&good, &bad_text], "byte", &out)),
        &out,
        &["bad.txt", "not valid UTF-8", "byte 11"],
    );
    let bad_jsonl = dir.path().join("bad.jsonl");
    write_jsonl(&bad_jsonl, "text", &docs);
    let mut bytes = std::fs::read(&bad_jsonl).unwrap();
    bytes.extend_from_slice(b"{\"text\": \"\xc3\x28\"}\n");
    std::fs::write(&bad_jsonl, bytes).unwrap();
    assert_refused(
        prepare::prepare(&args(&[&bad_jsonl], "byte", &out)),
        &out,
        &["bad.jsonl", "not valid UTF-8", "line 11"],
    );

    let missing = dir.path().join("does-not-exist");
    assert_refused(
        prepare::prepare(&args(&[&good, &missing], "byte", &out)),
        &out,
        &["does-not-exist", "cannot be read"],
    );
    let mut wrong_format = args(&[&bad_jsonl], "byte", &out);
    wrong_format.format = Format::Jsonl;
    wrong_format.field = "title".into();
    assert_refused(
        prepare::prepare(&wrong_format),
        &out,
        &["line 1", "no field `title`"],
    );

    // Through the binary: exit 2, the reason on stderr, nothing written.
    let output = std::process::Command::new(common::binary())
        .args(["prepare", "--quiet", "--input"])
        .arg(&no_text)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no column `text`"), "{stderr}");
    assert_eq!(shard_names(&out), Vec::<String>::new());
}

#[test]
fn a_directory_of_another_dataset_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let text_dir = dir.path().join("text");
    write_text_dir(&text_dir, &documents(10));
    let out = dir.path().join("out");
    prepare::prepare(&args(&[&text_dir], "byte", &out)).unwrap();
    let before = output_files(&out);
    let err = prepare::prepare(&args(&[&text_dir], "gpt2", &out))
        .unwrap_err()
        .to_string();
    assert!(err.contains("other inputs or settings"), "{err}");
    assert_eq!(output_files(&out), before);
    let user_dir = dir.path().join("mine");
    std::fs::create_dir(&user_dir).unwrap();
    std::fs::write(user_dir.join("notes.txt"), "keep me").unwrap();
    let err = prepare::prepare(&args(&[&text_dir], "byte", &user_dir))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not empty"), "{err}");
    // The same run again is a no-op that reuses everything.
    let again = prepare::prepare(&args(&[&text_dir], "byte", &out)).unwrap();
    assert_eq!(again.shards_written, 0);
    assert!(again.shards_reused > 0);
}

/// About 12 MB of JSONL: a few tokenizer batches, so a kill lands between shards.
fn big_jsonl(path: &Path) {
    let corpus: Vec<String> = common_corpus();
    let docs: Vec<String> = (0..3)
        .flat_map(|round| {
            corpus
                .iter()
                .enumerate()
                .map(move |(i, d)| format!("Copy {round} of document {i}.\n{d}"))
        })
        .collect();
    write_jsonl(path, "text", &docs);
}

fn common_corpus() -> Vec<String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(common::corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

fn prepare_command(input: &Path, out: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(common::binary());
    cmd.args(["prepare", "--quiet", "--tokenizer", "gpt2", "--input"])
        .arg(input)
        .arg("--out")
        .arg(out)
        .args([
            "--val-docs",
            "4",
            "--holdout-docs",
            "4",
            "--split-seed",
            "5",
            "--shard-tokens",
            "100000",
        ]);
    cmd
}

#[test]
fn an_interrupted_prepare_rerun_gives_byte_identical_shards() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.jsonl");
    big_jsonl(&input);

    let whole = dir.path().join("whole");
    let status = prepare_command(&input, &whole).output().unwrap().status;
    assert!(status.success());

    let killed = dir.path().join("killed");
    let mut child = prepare_command(&input, &killed).spawn().unwrap();
    let first_shard = killed.join("train_000000.bin");
    while !first_shard.exists() {
        assert!(child.try_wait().unwrap().is_none(), "prepare ended early");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !killed.join("manifest.json").exists(),
        "the run finished before the kill; the corpus is too small for this test"
    );
    let finished_before = shard_names(&killed)
        .iter()
        .filter(|n| n.ends_with(".bin"))
        .count();
    assert!(finished_before >= 1);
    // What a kill during a write leaves: a temporary file, never a shard's name.
    std::fs::write(killed.join(".train_000099.bin.tmp"), b"half a shard").unwrap();

    let output = prepare_command(&input, &killed).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["shards_reused"], finished_before as u64);
    assert_eq!(output_files(&killed), output_files(&whole));
}

#[test]
fn the_trainer_reads_prepared_shards_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let text_dir = dir.path().join("text");
    let corpus = common_corpus();
    write_text_dir(&text_dir, &corpus[..6]);
    let data = dir.path().join("data");
    let mut a = args(&[&text_dir], "bpe:512", &data);
    a.val_docs = 1;
    a.holdout_docs = 1;
    a.shard_tokens = 20_000;
    let summary = prepare::prepare(&a).unwrap();
    assert!(summary.manifest.train.shards.len() > 2);

    let data_arg = data.to_string_lossy().into_owned();
    let config_text = common::TINY_CONFIG.replace("vocab_size = 257", "vocab_size = 512");
    let config = common::write_config(dir.path(), "bpe.toml", &config_text);
    let run = |name: &str, seed: u64| -> f64 {
        let out = dir.path().join(name);
        let output = common::train_command(&config, &out, seed, "4steps", &["--data", &data_arg])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let metrics: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
        metrics["val_bpb"].as_f64().unwrap()
    };
    let (a1, a2, b) = (run("a1", 3), run("a2", 3), run("b", 4));
    assert_eq!(a1, a2, "same seed, same shards, same val_bpb");
    assert_ne!(a1, b);
    assert!(a1.is_finite() && a1 > 0.0);

    // The byte-sized default config is refused for a 512-token vocabulary, naming both.
    let out = dir.path().join("refused");
    let output = common::train_command(
        &common::default_config(),
        &out,
        1,
        "1steps",
        &["--data", &data_arg],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("vocab_size") && stderr.contains("512"),
        "{stderr}"
    );
}
