#!/bin/sh
# GPU throughput benchmark: the Rust trainer (candle + fused kernels, bf16 with f32 master
# weights) against its PyTorch twin (torch_gpt.py: bf16 autocast, flash attention via SDPA,
# fused AdamW) on the same GPU, in one invocation, for two configs:
#   a  the default config scaled up: depth 6, width 512, 4 heads, seq 1024, vocab 257, batch 32
#   b  autoresearch-like: depth 8, width 512, 4 heads of 128, seq 2048, vocab 8192, batch 16
# Both read the byte-level corpus (a larger vocab_size than the tokenizer is allowed: the model
# and its FLOPs are those of the config). Prints one table: tokens/s, MFU, peak memory, ratio.
#
# Usage (from anywhere):
#   trainer/bench/gpu_bench.sh [--steps N] [--warmup N] [--configs a,b] [--compile]
#                              [--binary PATH] [--python PATH] [--device cuda|cpu]
# --device cpu is a smoke test of the script itself (tiny configs, f32, a few steps).
# MFU = tokens/s * FLOPs per token / peak, FLOPs per token = 6 * (params - embedding)
#   + 12 * depth * width * seq_len (nanochat's formula, no causal discount); peak = 989 TFLOP/s
#   (H100 SXM dense bf16), AGENTLOOP_PEAK_TFLOPS=... for another GPU.
# Peak memory: Rust = device memory in use (total - free, CUDA context included), sampled
#   after each forward pass and step; PyTorch = torch.cuda.max_memory_reserved() (context
#   excluded, about 0.5 GiB less for the same use).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STEPS=30
WARMUP=5
CONFIGS=a,b
DEVICE=cuda
COMPILE=
BIN=${AGENTLOOP_TRAINER:-${CARGO_TARGET_DIR:-$ROOT/target}/release/agentloop-trainer}
PYTHON=${PYTHON:-python3}
while [ $# -gt 0 ]; do
    case $1 in
        --steps) STEPS=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --configs) CONFIGS=$2; shift 2 ;;
        --compile) COMPILE=--compile; shift ;;
        --binary) BIN=$2; shift 2 ;;
        --python) PYTHON=$2; shift 2 ;;
        --device) DEVICE=$2; shift 2 ;;
        *) echo "gpu_bench.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -x "$BIN" ] || { echo "gpu_bench.sh: no trainer binary at $BIN (build it, or pass --binary)" >&2; exit 2; }
"$PYTHON" -c 'import torch' 2>/dev/null || { echo "gpu_bench.sh: $PYTHON cannot import torch (pass --python)" >&2; exit 2; }
export AGENTLOOP_PEAK_TFLOPS=${AGENTLOOP_PEAK_TFLOPS:-989}
DATA=$ROOT/trainer/data/shakespeare
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# name depth width heads seq_len vocab batch
config_line() {
    if [ "$DEVICE" = cpu ]; then
        case $1 in a) echo "1 32 2 32 257 2" ;; b) echo "1 32 2 64 1024 2" ;; esac
    else
        case $1 in a) echo "6 512 4 1024 257 32" ;; b) echo "8 512 4 2048 8192 16" ;; esac
    fi
}

if [ "$DEVICE" = cpu ]; then DTYPE=f32; else DTYPE=bf16; fi
for name in $(echo "$CONFIGS" | tr , ' '); do
    set -- $(config_line "$name")
    [ $# -eq 6 ] || { echo "gpu_bench.sh: unknown config $name (a or b)" >&2; exit 2; }
    sed -e "s/^depth = .*/depth = $1/" -e "s/^width = .*/width = $2/" -e "s/^heads = .*/heads = $3/" \
        -e "s/^seq_len = .*/seq_len = $4/" -e "s/^vocab_size = .*/vocab_size = $5/" \
        -e "s/^batch_size = .*/batch_size = $6/" "$ROOT/trainer/config/default.toml" > "$OUT/$name.toml"
    echo "config $name: depth $1, width $2, heads $3, seq $4, vocab $5, batch $6; rust..." >&2
    "$BIN" train --seed 1 --split val --budget "$((STEPS + WARMUP))steps" --device "$DEVICE" \
        --dtype "$DTYPE" --out "$OUT/rust-$name" --config "$OUT/$name.toml" --data "$DATA" \
        > "$OUT/rust-$name.jsonl" || { echo "gpu_bench.sh: the Rust trainer failed on $name" >&2; exit 1; }
    echo "config $name: pytorch..." >&2
    "$PYTHON" "$ROOT/trainer/bench/torch_gpt.py" --config "$OUT/$name.toml" --data "$DATA" \
        --steps "$STEPS" --warmup "$WARMUP" --device "$DEVICE" --dtype "$DTYPE" $COMPILE \
        > "$OUT/torch-$name.json" || { echo "gpu_bench.sh: PyTorch failed on $name" >&2; exit 1; }
done

"$PYTHON" - "$OUT" "$CONFIGS" "$WARMUP" "$AGENTLOOP_PEAK_TFLOPS" <<'PY'
import json, pathlib, sys
out, configs, warmup, peak = pathlib.Path(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3]), float(sys.argv[4]) * 1e12

def rust_figures(name):
    metrics = json.loads((out / f"rust-{name}" / "metrics.json").read_text())
    steps = [json.loads(l) for l in (out / f"rust-{name}.jsonl").read_text().splitlines()]
    steps = [e for e in steps if e.get("event") == "step"]
    # Steady state: the elapsed time of step i is tokens_i / tokens_per_s_i (cumulative).
    first, last = steps[warmup - 1] if warmup > 0 else None, steps[-1]
    elapsed = lambda e: e["tokens"] / e["tokens_per_s"]
    if first is None:
        tps = last["tokens_per_s"]
    else:
        tps = (last["tokens"] - first["tokens"]) / (elapsed(last) - elapsed(first))
    return tps, metrics["peak_mem_bytes"], metrics["flops_per_token"], last["loss"]

rows = []
for name in configs:
    tps, mem, flops, loss = rust_figures(name)
    torch = json.loads((out / f"torch-{name}.json").read_text())
    assert abs(torch["flops_per_token"] - flops) < 1e-6 * flops, "FLOP formulas differ"
    rows.append((name, "rust", tps, tps * flops / peak, mem, loss, ""))
    t = torch["tokens_per_s"]
    rows.append((name, "pytorch", t, t * flops / peak, torch["peak_mem_bytes"], torch["final_loss"],
                 f"{torch['torch']} {torch['attention']}{' compiled' if torch['compile'] else ''}"))
    rows.append((name, "rust/pytorch", tps / t, None, None, None, ""))
print(f"{'config':<7}{'side':<14}{'tokens/s':>12}{'MFU':>8}{'peak GiB':>10}{'loss':>8}  note")
for name, side, tps, mfu, mem, loss, note in rows:
    if side == "rust/pytorch":
        print(f"{name:<7}{side:<14}{tps:>12.3f}")
        continue
    print(f"{name:<7}{side:<14}{tps:>12,.0f}{mfu:>8.1%}{mem / 2**30:>10.2f}{loss:>8.3f}  {note}")
print(f"MFU against {peak / 1e12:.0f} TFLOP/s; FLOPs/token = 6*(params - embedding) + 12*depth*width*seq_len")
PY
