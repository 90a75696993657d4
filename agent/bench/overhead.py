#!/usr/bin/env python3
"""Where a session's slot time goes, from its ledger alone (`agentloop ledger export --format
jsonl`) and `agentloop status --json`; used by agent/bench/overhead.sh.

`status`'s loop overhead is 1 - training_s / (spent_s x slots), training_s being the sum of the
runs' wall_s (a run's wall time covers its train and eval processes, start-up and data loading
included). This script splits the same non-training slot time by what the loop was doing,
sweeping the session in 10 ms steps: at each instant the slots not running a training run are
idle, and the idle slot-time is charged to
  - "build":        a build is running (its `build` event's duration_s),
  - "beside a run": one run goes and no build: the other slot has nothing to do (v3's
                    one-run-at-a-time screen, the smoke run, an odd calibration run), by the
                    stage of the run going,
  - "between runs": no run and no build: the loop's own work (proposer, policy, git, ledger,
                    the decision), by the kind of the next event recorded ("before budget":
                    the runs the end of the budget killed, which are not recorded).
A run's end is its event's time, except when RUNS_DIR is given: then the mtime of its
run.log (matched by log_sha256), because the two arms of a pair are recorded together when
both have ended, so the faster arm's event comes late; without RUNS_DIR such runs are placed
late and the parts add up to more than the total (the total, from the runs' wall_s, is exact).
Usage: overhead.py EXPORT.jsonl STATUS.json [RUNS_DIR]
"""
import hashlib
import os
import json
import sys
from collections import defaultdict
from datetime import datetime


def ts(e):
    return datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp()


def log_ends(runs_dir):
    """log_sha256 -> mtime of that run.log, for the run directories still on disk."""
    ends = {}
    for root, _, files in os.walk(runs_dir or "/nonexistent"):
        if "run.log" in files:
            path = os.path.join(root, "run.log")
            sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
            ends[sha] = os.stat(path).st_mtime
    return ends


def main(export, status_path, runs_dir=None):
    events = [json.loads(line) for line in open(export) if line.strip()]
    status = json.load(open(status_path))
    slots = status["slots"]
    session = status["session"]
    events = [e for e in events if e["session"] == session]
    start = ts(events[0])
    end = ts(events[-1])
    runs, builds, marks = [], [], []
    ends = log_ends(runs_dir)
    for e in events:
        p, t = e["payload"], ts(e)
        if e["kind"] == "run_result" and p.get("wall_s") is not None:
            end = min(ends.get(p.get("log_sha256"), t), t)
            runs.append((end - p["wall_s"], end, p.get("stage", "?")))
        elif e["kind"] == "build" and p.get("duration_s") is not None:
            builds.append((t - p["duration_s"], t))
        marks.append((t, e["kind"]))
    step = 0.01
    idle = defaultdict(float)
    n_steps = int((end - start) / step)
    ri = sorted(runs)
    mi = 0
    for i in range(n_steps):
        t = start + (i + 0.5) * step
        going = [r for r in ri if r[0] <= t < r[1]]
        free = max(slots - len(going), 0)
        if not free:
            continue
        while mi < len(marks) and marks[mi][0] < t:
            mi += 1
        if any(b[0] <= t < b[1] for b in builds):
            what = "build"
        elif going:
            what = "beside a run: " + going[0][2]
        else:
            what = "between runs, before " + (marks[mi][1] if mi < len(marks) else "end")
        idle[what] += free * step
    wall = end - start
    slot_s = wall * slots
    training = sum(r[1] - r[0] for r in runs)
    decided = status["proposed"] - status["in_flight"] - status.get("superseded", 0)
    print(f"session {session}: workers {status['workers']}, slots {slots}, "
          f"spent {status['spent_s']:.0f} s (events span {wall:.0f} s), {decided} decided, "
          f"{len(runs)} runs, {60 * decided / max(status['spent_s'], 1):.2f} decisions/min, "
          f"{60 * len(runs) / max(status['spent_s'], 1):.1f} runs/min")
    print(f"status: loop overhead {100 * (status.get('overhead_share') or 0):.1f} % of slot time")
    print(f"sweep:  training {training:.0f} slot-s of {slot_s:.0f} "
          f"({100 * (1 - training / slot_s):.1f} % not training)")
    print(f"parts below add up to {100 * sum(idle.values()) / slot_s:.1f} % "
          f"({len([r for r in runs])} runs, {len(ends)} placed by their run.log)")
    for what, s in sorted(idle.items(), key=lambda kv: -kv[1]):
        if s < 0.05:
            continue
        print(f"  {100 * s / slot_s:5.1f} %  {s:7.1f} slot-s  {what}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
