#!/bin/sh
# CPU throughput benchmark: the Rust trainer's default config vs the same model in PyTorch,
# in one invocation on the same machine. Run from anywhere:
#   trainer/bench/bench.sh [STEPS]
# BENCH_THREADS=N sets the CPU threads of both sides (default 1).
# BENCH_PAIRS=N runs N back-to-back Rust/PyTorch pairs (default 1), one JSON object each.
# Needs CARGO_TARGET_DIR (or ./target) and network access to PyPI on first use (torch is
# installed into trainer/bench/.venv with plain `pip install torch`, which on Linux also pulls
# several GB of CUDA wheels: BENCH_VENV=DIR puts the venv elsewhere, e.g. outside the tree).
set -eu
STEPS=${1:-200}
# Both sides use the same number of CPU threads (the trainer's default is 1).
THREADS=${BENCH_THREADS:-1}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=${BENCH_VENV:-$ROOT/trainer/bench/.venv}
PAIRS=${BENCH_PAIRS:-1}
CONFIG=trainer/config/default.toml
DATA=trainer/data/shakespeare

cargo build --release -p agentloop-trainer >&2
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install torch >&2
fi

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
pair=1
while [ "$pair" -le "$PAIRS" ]; do
RAYON_NUM_THREADS=$THREADS "$TARGET/release/agentloop-trainer" train --seed 1 --split val --budget "${STEPS}steps" \
    --out "$OUT/rust" --config "$CONFIG" --data "$DATA" > /dev/null
"$VENV/bin/python" trainer/bench/torch_gpt.py --threads "$THREADS" --config "$CONFIG" --data "$DATA" --steps "$STEPS" > "$OUT/torch.json"

python3 - "$OUT/rust/metrics.json" "$OUT/torch.json" "$pair" <<'PY'
import json, sys
rust = json.load(open(sys.argv[1]))
torch = json.load(open(sys.argv[2]))
print(json.dumps({
    "pair": int(sys.argv[3]),
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
rm -rf "$OUT/rust"
pair=$((pair + 1))
done
