//! The trunk's common control for rule v3, derived from the ledger alone (so a resumed session
//! and `ledger verify` see the same values): calibration's baseline seeds, and the trunk's
//! recorded run on each of them.
//!
//! Where a trunk's cached runs come from, in order:
//! 1. the calibration of that very commit (its baseline runs);
//! 2. otherwise, when the commit is a merge, the merged change's screening runs on those seeds
//!    (the merge commit has the candidate's tree: the same program on the same seeds);
//! 3. trunk runs any change made on that commit to fill a missing seed (stage `screen`, arm
//!    `baseline`); `exclude` leaves out one change's own fills, so a resumed decision asks for
//!    the same runs it asked for before the kill.

use agentloop_guardrails::decision::Calibration as NoiseCalibration;
use agentloop_guardrails::process::{CommonControl, Decision as ProcessRecord};
use agentloop_ledger::payload::{Arm, Stage};

use super::runs::value_of;
use agentloop_ledger::state::SessionState as SessionHistory;

pub fn for_trunk(
    history: &SessionHistory,
    commit: &str,
    noise: &NoiseCalibration,
    exclude: Option<&str>,
) -> CommonControl {
    let seeds: Vec<u64> = noise.baseline.iter().map(|(s, _)| *s).collect();
    let mut cached: Vec<(u64, f64)> = Vec::new();
    let mut add = |seed: u64, value: f64| {
        if seeds.contains(&seed) && !cached.iter().any(|(s, _)| *s == seed) && value.is_finite() {
            cached.push((seed, value));
        }
    };
    let calibrated_here = history
        .calibrations
        .iter()
        .rev()
        .find(|(_, c)| c.trunk_commit == commit);
    if let Some((_, c)) = calibrated_here {
        for sv in &c.baseline {
            add(sv.seed, sv.value);
        }
    } else if let Some(merged) = history
        .changes
        .iter()
        .rev()
        .find(|c| matches!(&c.merge, Some((_, m)) if m.commit == commit))
    {
        let record = merged
            .decision
            .as_ref()
            .and_then(|(_, d)| d.extra.get("process"))
            .and_then(|p| serde_json::from_value::<ProcessRecord>(p.clone()).ok());
        for (seed, value) in record.map(|d| d.common_runs()).unwrap_or_default() {
            add(seed, value);
        }
    }
    for change in history
        .changes
        .iter()
        .filter(|c| Some(c.id.as_str()) != exclude)
    {
        for r in change
            .runs
            .iter()
            .filter(|r| r.stage == Stage::Screen && r.arm == Arm::Baseline && r.commit == commit)
        {
            if let Some(v) = value_of(r) {
                add(r.seed, v);
            }
        }
    }
    // In the order of the seeds, so the record reads the way the screen uses them.
    cached.sort_by_key(|(s, _)| seeds.iter().position(|x| x == s));
    CommonControl { seeds, cached }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentloop_guardrails::decision::{DecisionRule, RULE_VERSION};
    use agentloop_guardrails::process::{DecisionProcess, Observation, RunValue, Verdict};
    use agentloop_ledger::{EventKind, Ledger, NewEvent};
    use serde_json::{json, Value};

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn rule() -> DecisionRule {
        DecisionRule {
            min_baseline_seeds: 3,
            min_replays: 1,
            ..DecisionRule::defaults_for(RULE_VERSION)
        }
    }

    fn noise() -> NoiseCalibration {
        NoiseCalibration::from_runs_for(
            &rule(),
            &[(11, 3.70), (12, 3.72), (13, 3.68)],
            &[(11, vec![3.70])],
        )
        .unwrap()
    }

    /// A v3 decision accepted after screening on seeds 11 and 12 (candidate 3.60 and 3.62).
    fn merged_decision() -> Value {
        let mut p = DecisionProcess::new(rule(), noise()).unwrap();
        for (seed, c) in [(11, 3.60), (12, 3.62)] {
            p.add_result(Observation::Common {
                seed,
                trunk: None,
                candidate: RunValue::Ok(c),
            })
            .unwrap();
        }
        while p.decision().is_none() {
            p.add_result(Observation::Pair {
                baseline: RunValue::Ok(3.7),
                candidate: RunValue::Ok(3.6),
            })
            .unwrap();
        }
        let d = p.decision().unwrap();
        assert_eq!(d.verdict, Verdict::Accept);
        serde_json::to_value(
            crate::orchestrator::change::decision_record::decision_payload(d).unwrap(),
        )
        .unwrap()
    }

    fn fill(commit: &str, seed: u64, value: f64) -> Value {
        json!({"arm": "baseline", "stage": "screen", "commit": commit, "seed": seed,
               "split": "val", "metrics": {"val_bpb": value}, "exit_status": "ok"})
    }

    fn history() -> (tempfile::TempDir, SessionHistory) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path().join("ledger.db")).unwrap();
        let n = noise();
        let events: Vec<(EventKind, Option<&str>, Value)> = vec![
            (
                EventKind::SessionStart,
                None,
                json!({"budget_s": 600.0, "repo": "/r", "trunk_branch": "agentloop/s1",
                       "base_commit": A, "agent": {"kind": "offline"}}),
            ),
            (
                EventKind::Calibration,
                None,
                json!({"trunk_commit": A, "run_sd": n.run_sd, "min_effect": 0.001,
                       "baseline": n.baseline.iter().map(|(s, v)| json!({"seed": s, "value": v})).collect::<Vec<_>>(),
                       "noise": n}),
            ),
            (
                EventKind::Propose,
                Some("c1a2b3c"),
                json!({"description": "d", "rationale": "r", "patch": "p", "patch_format": "search_replace"}),
            ),
            (EventKind::Decision, Some("c1a2b3c"), merged_decision()),
            (
                EventKind::Merge,
                Some("c1a2b3c"),
                json!({"commit": B, "trunk_branch": "agentloop/s1"}),
            ),
            (
                EventKind::Propose,
                Some("c2a2b3c"),
                json!({"description": "d", "rationale": "r", "patch": "p", "patch_format": "search_replace"}),
            ),
            // c2 filled seed 13 on the new trunk; a crashed fill and one on the old trunk
            // do not count.
            (EventKind::RunResult, Some("c2a2b3c"), fill(B, 13, 3.59)),
            (
                EventKind::RunResult,
                Some("c2a2b3c"),
                json!({"arm": "baseline", "stage": "screen", "commit": B, "seed": 13,
                       "split": "val", "exit_status": "crashed"}),
            ),
            (EventKind::RunResult, Some("c2a2b3c"), fill(A, 13, 9.0)),
            (
                EventKind::Propose,
                Some("c3a2b3c"),
                json!({"description": "d", "rationale": "r", "patch": "p", "patch_format": "search_replace"}),
            ),
        ];
        for (kind, change, payload) in events {
            ledger
                .append(NewEvent {
                    kind,
                    session: "s1".into(),
                    change: change.map(str::to_string),
                    payload,
                })
                .unwrap();
        }
        let h = SessionHistory::load(&ledger, "s1").unwrap();
        (dir, h)
    }

    #[test]
    fn a_calibrated_trunk_uses_its_calibration_runs() {
        let (_dir, h) = history();
        let c = for_trunk(&h, A, &noise(), None);
        assert_eq!(c.seeds, vec![11, 12, 13]);
        assert_eq!(c.cached, vec![(11, 3.70), (12, 3.72), (13, 3.68)]);
    }

    #[test]
    fn a_merge_takes_the_merged_changes_screening_runs_and_the_fills_made_on_it() {
        let (_dir, h) = history();
        let c = for_trunk(&h, B, &noise(), None);
        assert_eq!(c.cached, vec![(11, 3.60), (12, 3.62), (13, 3.59)]);
        // The deciding change's own fills are left out (a resume asks for them again).
        let c = for_trunk(&h, B, &noise(), Some("c2a2b3c"));
        assert_eq!(c.cached, vec![(11, 3.60), (12, 3.62)]);
        // A commit neither calibrated nor merged (a rollback's revert) starts empty.
        let c = for_trunk(
            &h,
            "cccccccccccccccccccccccccccccccccccccccc",
            &noise(),
            None,
        );
        assert!(c.cached.is_empty());
        assert_eq!(c.seeds, vec![11, 12, 13]);
    }
}
