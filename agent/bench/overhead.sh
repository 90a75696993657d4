#!/bin/sh
# Loop overhead by part, default target (offline proposer, release build, [executor] slots = 2):
# sessions one after the other on one clone of this repository, each with the given --workers,
# so runs of both setups alternate under the same machine load:
#   agent/bench/overhead.sh BUDGET WORKERS...      e.g.  agent/bench/overhead.sh 3m 1 2 1 2
# The clone is reused: between sessions its ledger and run directories are removed, and its
# build worktree and build cache kept, so no session pays a cold compile of the trainer (the
# Quick start's own `cargo build --release --workspace` is outside its budget too).
# TRAINER_PROFILE=dev builds the trainer as the e2e tests do (set CARGO_TARGET_DIR to their
# target/tmp/e2e-cargo-target to reuse its build). Each session's breakdown (agent/bench/overhead.py: slot time; run_costs.py: inside a run's
# wall time) and `uptime` are printed.
set -eu
budget=$1
shift
here=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}
bin=${AGENTLOOP_BIN:-$here/target/release/agentloop}
work=${OVERHEAD_WORK:-/tmp/agentloop-overhead}
if [ ! -d "$work/repo" ]; then
  mkdir -p "$work"
  git clone -q "$here" "$work/repo"
  git -C "$work/repo" config user.email bench@example.com
  git -C "$work/repo" config user.name bench
  if [ "${TRAINER_PROFILE:-release}" = dev ]; then
    # The e2e tests' trainer build (dev profile, dependencies at opt-level 3): for a machine
    # where only that build is warm. agentloop.toml is read from the working tree.
    sed -i 's|^command = "cargo build --release -p agentloop-trainer.*|command = "cargo build -p agentloop-trainer \&\& mkdir -p .agentloop-bin \&\& cp \\"$CARGO_TARGET_DIR/debug/agentloop-trainer\\" .agentloop-bin/"|' "$work/repo/agentloop.toml"
  fi
  # Warm-up, not measured: the trunk's first build in the clone's build worktree.
  (cd "$work/repo" && "$bin" start --budget 10m --max-changes 1 --agent offline >/dev/null 2>"$work/warmup.log")
fi
i=0
for w in "$@"; do
  i=$((i + 1))
  rm -rf "$work/repo/.agentloop/ledger.db"* "$work/repo/.agentloop/runs" "$work/repo/.agentloop/logs"
  echo "== session $i: --workers $w, budget $budget; before: $(uptime)"
  (cd "$work/repo" && "$bin" start --budget "$budget" --agent offline --workers "$w" >/dev/null 2>"$work/s$i.log")
  (cd "$work/repo" && "$bin" status --json) >"$work/s$i.json"
  (cd "$work/repo" && "$bin" ledger export --format jsonl) >"$work/s$i.jsonl"
  echo "after: $(uptime)"
  python3 "$here/agent/bench/overhead.py" "$work/s$i.jsonl" "$work/s$i.json" "$work/repo/.agentloop/runs"
  python3 "$here/agent/bench/run_costs.py" "$work/repo/.agentloop/runs" "$work/s$i.jsonl"
done
