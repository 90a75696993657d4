#!/bin/sh
# Head to head: the same session under `[decision] rule = "greedy"` (keep a change if its one
# run came out lower) and under agentloop's default rule, judged on holdout.
#   agent/bench/head_to_head.sh BUDGET
# Two fresh clones of the target (this repository, or $REPO), the same offline proposer and
# seed (so the same proposal stream), half of the proposals null changes (comments, notes:
# `[proposer.offline] null_fraction = 0.5`), the same wall budget and `[executor]` slots, no
# automatic verdict in either (this script measures instead), HEAD built before each session
# starts (a `compare HEAD HEAD` warm-up, outside the budget). Then, per session:
#   - `agentloop compare base trunk --split holdout --pairs 20` (the final holdout gain);
#   - for every merge, `compare parent merge --pairs 8` on holdout: its own holdout effect;
# and one table: merges, merges with holdout effect <= 0, final holdout gain [95% CI], runs,
# wall time. Environment: REPO (target repository, default this one), ARMS (default
# "greedy default"; an arm named `default...` sets no rule, any other name is the rule),
# FINAL_PAIRS (20), MERGE_PAIRS (8), NULL_FRACTION (0.5), AGENTLOOP (a built binary; default:
# build the release binary here), KEEP=1 keeps the clones.
set -eu
budget=${1:?usage: head_to_head.sh BUDGET (e.g. 30m)}
here=$(cd "$(dirname "$0")/../.." && pwd)
repo=${REPO:-$here}
arms=${ARMS:-greedy default}
final_pairs=${FINAL_PAIRS:-20}
merge_pairs=${MERGE_PAIRS:-8}
null_fraction=${NULL_FRACTION:-0.5}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}
if [ -z "${AGENTLOOP:-}" ]; then
  nice cargo build --release -q -p agentloop --manifest-path "$here/Cargo.toml"
  AGENTLOOP="$CARGO_TARGET_DIR/release/agentloop"
fi
work=$(mktemp -d)
if [ "${KEEP:-0}" = 1 ]; then echo "clones kept in $work" >&2; else trap 'rm -rf "$work"' EXIT; fi

# Sets the arm's rule, the null share and no automatic verdict in the clone's agentloop.toml.
configure() {
  python3 - "$1/agentloop.toml" "$2" "$null_fraction" <<'PY'
import re, sys
path, rule, nulls = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(path).read()
def put(text, table, line):
    # A key the file already sets is replaced where it is (the keys here are unique names).
    key = line.split("=")[0].strip()
    if re.search(rf"^{key}\s*=", text, re.M):
        return re.sub(rf"^{key}\s*=.*$", line, text, count=1, flags=re.M)
    header = f"[{table}]\n"
    if re.search(rf"^\[{re.escape(table)}\]\s*$", text, re.M):
        return re.sub(rf"^\[{re.escape(table)}\]\s*\n", header + line + "\n", text, count=1, flags=re.M)
    return text.rstrip("\n") + f"\n\n{header}{line}\n"
if not rule.startswith("default"):
    text = put(text, "decision", f'rule = "{rule}"')
text = put(text, "proposer.offline", f"null_fraction = {nulls}")
text = put(text, "loop", "verdict_pairs = 0")
open(path, "w").write(text)
PY
}

for arm in $arms; do
  dir="$work/$arm"
  git clone -q "$repo" "$dir"
  git -C "$dir" config user.email bench@example.com
  git -C "$dir" config user.name bench
  # agentloop.toml is read from the working tree: the arms' commits stay identical.
  configure "$dir" "$arm"
  # Warm-up outside the budget (as a user's earlier build would be): HEAD built where the
  # loop builds, and the build cached; a comparison of HEAD with itself (recorded; it must
  # find no difference).
  echo "== $arm: warm-up build (HEAD vs HEAD, 2 pairs on val)" >&2
  (cd "$dir" && "$AGENTLOOP" compare HEAD HEAD --split val --pairs 2 >"$work/$arm.warmup" 2>>"$work/$arm.log")
  echo "== $arm: session of $budget" >&2
  start=$(date +%s)
  (cd "$dir" && "$AGENTLOOP" start --budget "$budget" --agent offline >"$work/$arm.start" 2>"$work/$arm.log") ||
    { echo "$arm: the session failed; see $work/$arm.log" >&2; tail -5 "$work/$arm.log" >&2; exit 1; }
  echo $(( $(date +%s) - start )) >"$work/$arm.wall"
  (cd "$dir" && "$AGENTLOOP" status --json) >"$work/$arm.status.json"
  # The session's base, trunk and merges, from the ledger (merges rolled back included).
  python3 - "$dir/.agentloop/ledger.db" >"$work/$arm.session.json" <<'PY'
import json, sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
rows = db.execute("SELECT kind, session, change_id, payload FROM events ORDER BY seq").fetchall()
start = [(s, json.loads(p)) for k, s, c, p in rows if k == "session_start"][-1]
session, p = start
merges = [{"change": c, "commit": json.loads(pl)["commit"]}
          for k, s, c, pl in rows if k == "merge" and s == session]
print(json.dumps({"session": session, "base": p["base_commit"], "trunk": p["trunk_branch"],
                  "merges": merges}))
PY
  base=$(jq -r .base "$work/$arm.session.json")
  trunk=$(jq -r .trunk "$work/$arm.session.json")
  if [ "$(git -C "$dir" rev-parse "$trunk")" = "$base" ]; then
    echo '{"verdict": "no merges"}' >"$work/$arm.final.json"
  else
    echo "== $arm: base vs final trunk on holdout, $final_pairs pairs" >&2
    (cd "$dir" && "$AGENTLOOP" compare "$base" "$trunk" --split holdout --pairs "$final_pairs" --json) >"$work/$arm.final.json"
  fi
  : >"$work/$arm.merges.jsonl"
  for commit in $(jq -r '.merges[].commit' "$work/$arm.session.json"); do
    echo "== $arm: merge $commit vs its parent on holdout, $merge_pairs pairs" >&2
    (cd "$dir" && "$AGENTLOOP" compare "$commit^" "$commit" --split holdout --pairs "$merge_pairs" --json | jq -c .) >>"$work/$arm.merges.jsonl"
  done
done

python3 - "$work" $arms <<'PY'
import json, os, sys
work, arms = sys.argv[1], sys.argv[2:]
rows = []
for arm in arms:
    f = lambda ext: os.path.join(work, f"{arm}.{ext}")
    status = json.load(open(f("status.json")))
    final = json.load(open(f("final.json")))
    merges = [json.loads(l) for l in open(f("merges.jsonl")) if l.strip()]
    # Holdout effect of a merge = gain = parent - merge (the metric is minimized).
    null_or_harmful = sum(1 for m in merges if m["gain"] <= 0)
    if "gain" in final:
        lo, hi = final["gain_ci"]
        gain = f"{final['gain']:+.4f} [{lo:+.4f}, {hi:+.4f}] ({final['n']} pairs)"
    else:
        gain = "no merges"
    wall = int(open(f("wall")).read())
    rows.append((arm, len(merges), null_or_harmful, gain, status["runs"], wall))
head = ("rule", "merges", "holdout effect <= 0", "final holdout gain [95% CI]", "runs", "wall")
print("| " + " | ".join(head) + " |")
print("|" + "|".join("---" for _ in head) + "|")
for arm, m, bad, gain, runs, wall in rows:
    print(f"| {arm} | {m} | {bad} | {gain} | {runs} | {wall // 60}m{wall % 60:02d}s |")
PY
