#!/bin/sh
# Tokenization throughput: the trained BPE and GPT-2's BPE in Rust (tiktoken-rs, documents in
# parallel as `prepare` encodes them) vs Python's tiktoken (encode_ordinary_batch), same corpus,
# same thread count, one invocation. Run from anywhere:
#   trainer/bench/tokenize.sh [COPIES] [VOCAB]
# COPIES: how many copies of the Shakespeare corpus (5.3 MB each) to encode (default 4).
# VOCAB: vocabulary of the trained BPE (default 8192). BENCH_THREADS: threads (default 2).
# Needs CARGO_TARGET_DIR (or ./target) and PyPI on first use (tiktoken into trainer/bench/.venv).
set -eu
COPIES=${1:-4}
VOCAB=${2:-8192}
THREADS=${BENCH_THREADS:-2}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=$ROOT/trainer/bench/.venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import tiktoken' 2>/dev/null; then
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install -q tiktoken >&2
fi
cargo build --release -p agentloop-trainer >&2

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/corpus"
i=0
while [ "$i" -lt "$COPIES" ]; do
    for f in trainer/data/shakespeare/*.txt trainer/data/shakespeare/*/*.txt; do
        cp "$f" "$WORK/corpus/$i-$(basename "$f")"
    done
    i=$((i + 1))
done
# The trained BPE: `prepare` trains it on the training split of the corpus.
"$TARGET/release/agentloop-trainer" prepare --quiet --input trainer/data/shakespeare \
    --tokenizer "bpe:$VOCAB" --out "$WORK/bpe" --val-docs 2 --holdout-docs 2 >&2
RAYON_NUM_THREADS=$THREADS cargo bench -q -p agentloop-trainer --bench tokenize -- \
    "$WORK/corpus" "$WORK/bpe/tokenizer.json"
# GPT-2's rank file as tiktoken-rs embeds it (Python tiktoken would download it).
R50K=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/tiktoken-rs-*/assets/r50k_base.tiktoken | tail -1)
"$VENV/bin/python" trainer/bench/tokenize_tiktoken.py "$WORK/corpus" "$WORK/bpe/tokenizer.json" "$R50K" "$THREADS"
