#!/bin/sh
# Decisions per hour with 1 vs 2 local slots on the default CPU config (offline proposer,
# release build): three fresh clones of this repository, one session each, one after the other:
#   s1w1: [executor] slots = 1, one change at a time (runs strictly one after another)
#   s2w1: slots = 2 (the default), one change at a time (pairs and calibration side by side)
#   s2w2: slots = 2, --workers 2 (two changes in flight)
#   agent/bench/slots.sh [BUDGET]      (default 4m)
set -eu
budget=${1:-4m}
here=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}
nice cargo build --release -q -p agentloop -p agentloop-trainer --manifest-path "$here/Cargo.toml"
bin="$CARGO_TARGET_DIR/release/agentloop"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for run in s1w1 s2w1 s2w2; do
  slots=${run#s}; slots=${slots%w*}; w=${run#*w}
  git clone -q "$here" "$work/$run"
  git -C "$work/$run" config user.email bench@example.com
  git -C "$work/$run" config user.name bench
  # agentloop.toml is read from the working tree: no commit needed for the slot count.
  sed -i "s/^slots = [0-9]*/slots = $slots/" "$work/$run/agentloop.toml"
  (cd "$work/$run" && "$bin" start --budget "$budget" --agent offline --workers "$w" >/dev/null 2>"$work/$run.log")
  (cd "$work/$run" && "$bin" status --json) >"$work/$run.json"
done
python3 - "$work" <<'PY'
import json, sys, os
work = sys.argv[1]
rate = {}
for w in ("s1w1", "s2w1", "s2w2"):
    s = json.load(open(os.path.join(work, f"{w}.json")))
    rate[w] = s.get("decisions_per_hour") or 0.0
    decided = s["proposed"] - s["in_flight"] - s.get("superseded", 0)
    print(f"workers={w}: decided={decided} (accepted {s['accepted']}, rejected {s['rejected']}, "
          f"crashed {s['crashed']}, superseded {s.get('superseded', 0)}) runs={s['runs']} "
          f"decisions/hour={rate[w]:.1f} overhead_share={s.get('overhead_share') or 0:.3f} "
          f"spent_s={s['spent_s']:.0f}")
if rate["s1w1"]:
    print(f"ratio 2 slots / 1 slot: {rate['s2w1'] / rate['s1w1']:.2f} (one change at a time), "
          f"{rate['s2w2'] / rate['s1w1']:.2f} (two changes in flight)")
PY
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
