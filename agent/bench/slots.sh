#!/bin/sh
# Decisions per hour with 1 vs 2 local slots on the default CPU config (offline proposer,
# release build): two fresh clones of this repository, one session each.
#   agent/bench/slots.sh [BUDGET]      (default 4m)
set -eu
budget=${1:-4m}
here=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}
nice cargo build --release -q -p agentloop -p agentloop-trainer --manifest-path "$here/Cargo.toml"
bin="$CARGO_TARGET_DIR/release/agentloop"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for w in 1 2; do
  git clone -q "$here" "$work/w$w"
  git -C "$work/w$w" config user.email bench@example.com
  git -C "$work/w$w" config user.name bench
  (cd "$work/w$w" && "$bin" start --budget "$budget" --agent offline --workers "$w" >/dev/null 2>"$work/w$w.log")
  (cd "$work/w$w" && "$bin" status --json) >"$work/w$w.json"
done
python3 - "$work" <<'PY'
import json, sys, os
work = sys.argv[1]
rate = {}
for w in (1, 2):
    s = json.load(open(os.path.join(work, f"w{w}.json")))
    rate[w] = s.get("decisions_per_hour") or 0.0
    print(f"workers={w}: decided={s.get('decided', s.get('counts'))} decisions/hour={rate[w]:.1f} spent_s={s.get('spent_s')}")
print(f"ratio 2/1: {rate[2] / rate[1]:.2f}" if rate[1] else "ratio: n/a")
PY
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
