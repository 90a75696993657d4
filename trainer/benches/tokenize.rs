//! Tokenization throughput (MB/s of UTF-8 text) of the trained BPE and of GPT-2's BPE, on every
//! core rayon is given (RAYON_NUM_THREADS), documents encoded in parallel as `prepare` does.
//! Run by `trainer/bench/tokenize.sh`, which prints the Python `tiktoken` figures beside these.
//!
//! Usage: cargo bench -p agentloop-trainer --bench tokenize -- CORPUS_DIR TOKENIZER_JSON

use agentloop_trainer::tokenizer::tiktoken::TiktokenTokenizer;
use agentloop_trainer::tokenizer::{bpe, Tokenizer};
use rayon::prelude::*;
use std::path::PathBuf;
use std::time::Instant;

const ROUNDS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [corpus, tokenizer_json] = args.as_slice() else {
        eprintln!("usage: tokenize CORPUS_DIR TOKENIZER_JSON");
        std::process::exit(2);
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus)
        .expect("the corpus directory is readable")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    let docs: Vec<String> = paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let bytes: usize = docs.iter().map(String::len).sum();
    let trained = bpe::load(tokenizer_json.as_ref()).expect("a trained tokenizer.json");
    let gpt2 = TiktokenTokenizer::gpt2().unwrap();
    let measure = |tok: &dyn Tokenizer| -> (f64, usize) {
        let mut best = f64::INFINITY;
        let mut tokens = 0;
        for _ in 0..ROUNDS {
            let started = Instant::now();
            tokens = docs
                .par_iter()
                .map(|d| tok.encode(d.as_bytes()).len())
                .sum();
            best = best.min(started.elapsed().as_secs_f64());
        }
        (bytes as f64 / 1e6 / best, tokens)
    };
    let (bpe_mb_s, bpe_tokens) = measure(&trained);
    let (gpt2_mb_s, gpt2_tokens) = measure(&gpt2);
    println!(
        "{}",
        serde_json::json!({
            "impl": "rust",
            "threads": rayon::current_num_threads(),
            "documents": docs.len(),
            "mb": bytes as f64 / 1e6,
            "bpe_vocab": trained.vocab_size(),
            "bpe_mb_s": bpe_mb_s,
            "bpe_tokens": bpe_tokens,
            "gpt2_mb_s": gpt2_mb_s,
            "gpt2_tokens": gpt2_tokens,
        })
    );
}
