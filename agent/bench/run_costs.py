#!/usr/bin/env python3
"""Where a training run's own wall time goes (all of it counts as training in `status`'s loop
overhead), from the run directories of a session (`.agentloop/runs/*/*/run.log`) and its
ledger export: the loop's wall_s of each run against the trainer's own JSON lines:
  - training steps:   the last `step` line's tokens / tokens_per_s (the training loop itself),
  - train set-up:     the `trained` line's wall_s minus the steps (data, tokenizer, model init),
  - eval process:     the `done` line's wall_s minus the `trained` line's (the [eval] step:
                      a second process that loads the checkpoint and the split and scores it),
  - start and sandbox: the loop's wall_s minus the `done` line's wall_s (two process starts
                      under `agentloop sandbox-exec`, the checkpoint write, the shell between).
Usage: run_costs.py RUNS_DIR EXPORT.jsonl
"""
import json
import os
import sys


def lines(path):
    out = []
    for raw in open(path, errors="replace"):
        raw = raw.strip()
        if raw.startswith("{"):
            try:
                out.append(json.loads(raw))
            except ValueError:
                pass
    return out


def main(runs_dir, export):
    walls = {}
    for raw in open(export):
        e = json.loads(raw)
        p = e["payload"]
        if e["kind"] == "run_result" and p.get("wall_s") and p.get("exit_status") == "ok":
            walls[p.get("log_sha256")] = (p["wall_s"], p.get("stage"))
    import hashlib
    parts = {"training steps": 0.0, "train set-up": 0.0, "eval process": 0.0,
             "start and sandbox": 0.0}
    n, total = 0, 0.0
    for root, _, files in os.walk(runs_dir):
        if "run.log" not in files:
            continue
        path = os.path.join(root, "run.log")
        sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
        if sha not in walls:
            continue
        wall, stage = walls[sha]
        if stage == "smoke":
            continue
        ls = lines(path)
        steps = [l for l in ls if l.get("event") == "step" and l.get("tokens_per_s")]
        trained = next((l for l in ls if l.get("event") == "trained"), None)
        done = next((l for l in ls if l.get("event") == "done"), None)
        if not (steps and trained and done):
            continue
        step_s = steps[-1]["tokens"] / steps[-1]["tokens_per_s"]
        parts["training steps"] += step_s
        parts["train set-up"] += trained["wall_s"] - step_s
        parts["eval process"] += done["wall_s"] - trained["wall_s"]
        parts["start and sandbox"] += wall - done["wall_s"]
        n += 1
        total += wall
    if not n:
        print("no run logs matched the ledger's runs")
        return
    print(f"{n} runs (smoke left out), mean wall {total / n:.2f} s per run:")
    for k, v in parts.items():
        print(f"  {100 * v / total:5.1f} %  {v / n:5.2f} s/run  {k}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
