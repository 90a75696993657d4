"""Training harness (frozen): reads the training text, runs optim.step, saves the weights.

    python3 train.py --budget 300steps --out DIR [--seed N]

The seed comes from --seed or from AGENTLOOP_SEED (set by agentloop on every run). Only the
training text is opened; the weights go to DIR/model.npz for evaluate.py to score. stdout gets
one JSON line per logged step (agentloop watches the loss for divergence).
Exit codes: 0 ok, 1 crashed, 2 bad input, 3 diverged.
"""

import argparse
import json
import os
import sys

# Small matrices: one BLAS thread is fastest, and runs side by side do not fight for cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import optim

VOCAB = 256  # bytes: the vocabulary never depends on which text was read
TRAIN_TEXT = "data/train.txt"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", required=True, help="training steps, e.g. 300steps")
    p.add_argument("--out", required=True, help="run directory for model.npz")
    p.add_argument("--seed", type=int, default=None)
    return p.parse_args()


def bad_input(message):
    print(f"train.py: {message}", file=sys.stderr)
    sys.exit(2)


def main():
    args = parse_args()
    seed = args.seed
    if seed is None:
        if "AGENTLOOP_SEED" not in os.environ:
            bad_input("no seed: pass --seed N or set AGENTLOOP_SEED")
        seed = int(os.environ["AGENTLOOP_SEED"])
    if not args.budget.endswith("steps") or not args.budget[:-5].isdigit():
        bad_input(f"--budget {args.budget!r}: expected a number of steps, e.g. 300steps")
    steps = int(args.budget[:-5])
    try:
        with open(TRAIN_TEXT, "rb") as f:
            data = np.frombuffer(f.read(), dtype=np.uint8).astype(np.int64)
    except OSError as e:
        bad_input(f"cannot read the training text {TRAIN_TEXT}: {e} (run prepare.py)")

    rng = np.random.default_rng(seed)
    params = optim.init(rng, VOCAB)
    context = params["w1"].shape[0] // params["emb"].shape[1]
    batch = optim.config.batch_size
    loss = float("nan")
    for i in range(steps):
        starts = rng.integers(0, len(data) - context - 1, size=batch)
        x = np.stack([data[s : s + context] for s in starts])
        y = data[starts + context]
        loss = optim.step(params, x, y, i, steps)
        if i % 20 == 0 or i == steps - 1:
            print(json.dumps({"event": "step", "step": i, "loss": loss}), flush=True)
        if not np.isfinite(loss):
            print(f"train.py: the loss diverged at step {i}", file=sys.stderr)
            sys.exit(3)
    os.makedirs(args.out, exist_ok=True)
    np.savez(os.path.join(args.out, "model.npz"), **params)
    print(json.dumps({"event": "done", "steps": steps, "train_loss": loss, "seed": seed}))


if __name__ == "__main__":
    main()
