#!/bin/sh
# CPU throughput benchmark: the Rust trainer's default config vs the same model in PyTorch,
# in one invocation on the same machine. Run from anywhere:
#   trainer/bench/bench.sh [STEPS]
# BENCH_THREADS=N sets the CPU threads of both sides (default 1).
# Needs CARGO_TARGET_DIR (or ./target) and network access to PyPI on first use (CPU torch
# is installed into trainer/bench/.venv with plain `pip install torch`).
set -eu
STEPS=${1:-200}
# Both sides use the same number of CPU threads (the trainer's default is 1).
THREADS=${BENCH_THREADS:-1}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=$ROOT/trainer/bench/.venv
CONFIG=trainer/config/default.toml
DATA=trainer/data/shakespeare

cargo build --release -p agentloop-trainer >&2
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install torch >&2
fi

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
RAYON_NUM_THREADS=$THREADS "$TARGET/release/agentloop-trainer" train --seed 1 --split val --budget "${STEPS}steps" \
    --out "$OUT/rust" --config "$CONFIG" --data "$DATA" > /dev/null
"$VENV/bin/python" trainer/bench/torch_gpt.py --threads "$THREADS" --config "$CONFIG" --data "$DATA" --steps "$STEPS" > "$OUT/torch.json"

python3 - "$OUT/rust/metrics.json" "$OUT/torch.json" <<'PY'
import json, sys
rust = json.load(open(sys.argv[1]))
torch = json.load(open(sys.argv[2]))
print(json.dumps({
    "steps": rust["steps"],
    "rust_tokens_per_s": round(rust["tokens_per_s"]),
    "rust_peak_mem_mib": round(rust["peak_mem_bytes"] / 2**20, 1),
    "torch_tokens_per_s": round(torch["tokens_per_s"]),
    "torch_peak_mem_mib": round(torch["peak_mem_bytes"] / 2**20, 1),
    "ratio_rust_over_torch": round(rust["tokens_per_s"] / torch["tokens_per_s"], 3),
    "torch_version": torch["torch"],
    "torch_threads": torch["threads"],
}, indent=2))
PY
