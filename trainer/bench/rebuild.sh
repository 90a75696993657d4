#!/bin/bash
# Incremental release rebuild after a one-line patch to model.rs, in the single-crate layout
# (BEFORE: a checkout of commit b20d097, e.g. `git worktree add /tmp/before b20d097`) and in
# this checkout (the recipe crate), alternately, sharing one target directory.
# Usage: trainer/bench/rebuild.sh BEFORE [ROUNDS]   (CARGO_TARGET_DIR: the shared target dir)
set -u
B=$(realpath "$1"); A=$(realpath "$(dirname "$0")/../.."); ROUNDS=${2:-2}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$A/target}
(cd "$B" && cargo build --release -p agentloop-trainer -q) && (cd "$A" && cargo build --release -p agentloop-trainer -q)
one() { # dir file
  cd "$1"
  sed -i 's/^const NORM_EPS: f64 = 1e-6;/const NORM_EPS: f64 = 1e-5;/' "$2"
  s=$(date +%s.%N); cargo build --release -p agentloop-trainer -q; e=$(date +%s.%N)
  sed -i 's/^const NORM_EPS: f64 = 1e-5;/const NORM_EPS: f64 = 1e-6;/' "$2"
  echo "$1 $2: $(python3 -c "print(round($e-$s,1))") s (load $(cut -d' ' -f1 /proc/loadavg))"
  cargo build --release -p agentloop-trainer -q  # back to the unpatched state, untimed
}
for _ in $(seq "$ROUNDS"); do
  one "$B" trainer/src/model.rs
  one "$A" trainer/recipe/src/model.rs
done
