"""Evaluation wrapper (frozen): scores the trained weights on one held-out split.

    python3 evaluate.py --out DIR [--split val|holdout]

Loads DIR/model.npz (plain arrays, no pickles), checks their shapes, runs the frozen forward
pass of model.py over data/<split>.txt and prints `val_bpb: X` (bits per byte; the key is
val_bpb for both splits). It imports nothing the agent can edit: the score cannot be changed
by editing the training code, only by training a better model.
The split comes from --split or AGENTLOOP_SPLIT (set by agentloop). Exit 0 ok, 1 crashed,
2 bad input.
"""

import argparse
import math
import os
import sys

# Small matrices: one BLAS thread is fastest, and runs side by side do not fight for cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import model

VOCAB = 256
MAX_EVAL_BYTES = 20000


def fail(code, message):
    print(f"evaluate.py: {message}", file=sys.stderr)
    sys.exit(code)


def load_weights(path):
    try:
        with np.load(path, allow_pickle=False) as f:
            params = {name: np.asarray(f[name], dtype=np.float64) for name in model.NAMES}
    except (OSError, KeyError, ValueError) as e:
        fail(1, f"cannot load the trained weights {path}: {e}")
    emb, w1, b1, w2, b2 = (params[n] for n in model.NAMES)
    n_embd, n_hidden = emb.shape[1], w1.shape[1]
    ok = (
        emb.ndim == 2 and emb.shape[0] == VOCAB and w1.ndim == 2
        and w1.shape[0] % n_embd == 0 and b1.shape == (n_hidden,)
        and w2.shape == (n_hidden, VOCAB) and b2.shape == (VOCAB,)
    )
    if not ok:
        fail(1, f"{path}: weights of unexpected shapes")
    if not all(np.isfinite(p).all() for p in params.values()):
        fail(1, f"{path}: weights are not finite")
    return params, w1.shape[0] // n_embd


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--split", default=os.environ.get("AGENTLOOP_SPLIT"))
    args = p.parse_args()
    if args.split not in ("val", "holdout"):
        fail(2, f"split {args.split!r}: expected val or holdout (--split or AGENTLOOP_SPLIT)")
    params, context = load_weights(os.path.join(args.out, "model.npz"))
    path = f"data/{args.split}.txt"
    try:
        with open(path, "rb") as f:
            text = np.frombuffer(f.read(MAX_EVAL_BYTES), dtype=np.uint8).astype(np.int64)
    except OSError as e:
        fail(2, f"cannot read {path}: {e}")
    idx = np.arange(context, len(text))
    x = np.stack([text[idx - context + k] for k in range(context)], axis=1)
    logp = model.forward(params, x)
    nats = -logp[np.arange(len(idx)), text[idx]].mean()
    print(f"val_bpb: {nats / math.log(2):.6f}")


if __name__ == "__main__":
    main()
