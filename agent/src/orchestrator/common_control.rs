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
    // The first source of a seed wins (the order of the module's list).
    for (seed, value) in sources(history, commit, &seeds, exclude) {
        if !cached.iter().any(|(s, _)| *s == seed) {
            cached.push((seed, value));
        }
    }
    // In the order of the seeds, so the record reads the way the screen uses them.
    cached.sort_by_key(|(s, _)| seeds.iter().position(|x| x == s));
    CommonControl { seeds, cached }
}

/// Every recorded trunk run of `commit` on one of `seeds`, (seed, value), in the order of
/// the module's list (a seed may appear more than once: two workers may both fill it).
fn sources(
    history: &SessionHistory,
    commit: &str,
    seeds: &[u64],
    exclude: Option<&str>,
) -> Vec<(u64, f64)> {
    let mut found: Vec<(u64, f64)> = Vec::new();
    let calibrated_here = history
        .calibrations
        .iter()
        .rev()
        .find(|(_, c)| c.trunk_commit == commit);
    if let Some((_, c)) = calibrated_here {
        found.extend(c.baseline.iter().map(|sv| (sv.seed, sv.value)));
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
        found.extend(record.map(|d| d.common_runs()).unwrap_or_default());
    }
    for change in history
        .changes
        .iter()
        .filter(|c| Some(c.id.as_str()) != exclude)
    {
        let fills = change
            .runs
            .iter()
            .filter(|r| r.stage == Stage::Screen && r.arm == Arm::Baseline && r.commit == commit);
        found.extend(fills.filter_map(|r| value_of(r).map(|v| (r.seed, v))));
    }
    found.retain(|(seed, value)| seeds.contains(seed) && value.is_finite());
    found
}

/// `ledger verify`: every cached trunk value a v3 decision of `change` started from is the
/// value of a trunk run recorded in `history` (the session as it stood just before the
/// decision) for the trunk the change was tested on, on that seed: the calibration of that
/// commit, the merged change's screening run, or another change's fill. A value carried into
/// the decision by any other way (edited, or taken from another trunk) fails, naming the seed.
pub fn check_cached(
    history: &SessionHistory,
    change: &str,
    decision: &ProcessRecord,
) -> Result<(), String> {
    let Some(common) = &decision.common else {
        return Ok(());
    };
    let commit = history
        .change(change)
        .and_then(|c| c.base_commit())
        .ok_or_else(|| format!("change {change}: no proposal names the trunk it was tested on"))?;
    let recorded = sources(history, commit, &common.seeds, Some(change));
    for &(seed, value) in &common.cached {
        let same = |v: f64| (v - value).abs() <= 1e-12 * value.abs().max(1.0);
        if !recorded.iter().any(|&(s, v)| s == seed && same(v)) {
            let short = &commit[..commit.len().min(10)];
            let was: Vec<String> = recorded
                .iter()
                .filter(|(s, _)| *s == seed)
                .map(|(_, v)| v.to_string())
                .collect();
            return Err(format!(
                "change {change}: the trunk's cached value {value} on seed {seed} is not a run recorded for trunk {short} on that seed ({})",
                if was.is_empty() {
                    "none is recorded".to_string()
                } else {
                    format!("recorded: {}", was.join(", "))
                }
            ));
        }
    }
    Ok(())
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
        history_declaring(None)
    }

    /// The fixture; its session start declares `guards` when given (sessions before guards
    /// were recorded there declare none).
    fn history_declaring(guards: Option<Value>) -> (tempfile::TempDir, SessionHistory) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path().join("ledger.db")).unwrap();
        let n = noise();
        let mut start = json!({"budget_s": 600.0, "repo": "/r", "trunk_branch": "agentloop/s1",
                               "base_commit": A, "agent": {"kind": "offline"}});
        if let Some(g) = guards {
            start["guards"] = g;
        }
        let events: Vec<(EventKind, Option<&str>, Value)> = vec![
            (EventKind::SessionStart, None, start),
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
                json!({"description": "d", "rationale": "r", "patch": "p", "patch_format": "search_replace",
                       "parent_commit": A}),
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

    /// A null change's v3 decision made from `common` (every run 3.7: dropped at the screen).
    fn null_decision(common: CommonControl) -> Value {
        use agentloop_guardrails::process::{Arm as NeedArm, Request};
        let mut p = DecisionProcess::with_common_control(rule(), noise(), common).unwrap();
        loop {
            let (arm, count) = match p.next_request() {
                Request::Done(_) => break,
                Request::NeedRuns { arm, count } => (arm, count),
            };
            for _ in 0..count {
                let o = match arm {
                    NeedArm::Common { seed, with_trunk } => Observation::Common {
                        seed,
                        trunk: with_trunk.then_some(RunValue::Ok(3.7)),
                        candidate: RunValue::Ok(3.7),
                    },
                    NeedArm::Candidate => Observation::Candidate(RunValue::Ok(3.7)),
                    NeedArm::Paired => Observation::Pair {
                        baseline: RunValue::Ok(3.7),
                        candidate: RunValue::Ok(3.7),
                    },
                };
                p.add_result(o).unwrap();
            }
        }
        serde_json::to_value(
            crate::orchestrator::change::decision_record::decision_payload(p.decision().unwrap())
                .unwrap(),
        )
        .unwrap()
    }

    /// `ledger verify` (chain, views, recompute) on the fixture plus a change c4 proposed on
    /// trunk B and decided from `common`; the problems it reports.
    fn verify_with_decision(common: CommonControl) -> Vec<String> {
        let (dir, _) = history();
        let ledger = Ledger::open(dir.path().join("ledger.db")).unwrap();
        for (kind, payload) in [
            (
                EventKind::Propose,
                json!({"description": "a comment", "rationale": "r", "patch": "p",
                       "patch_format": "search_replace", "parent_commit": B}),
            ),
            (EventKind::Decision, null_decision(common)),
        ] {
            ledger
                .append(NewEvent {
                    kind,
                    session: "s1".into(),
                    change: Some("c4a2b3c".into()),
                    payload,
                })
                .unwrap();
        }
        verify_problems(&ledger)
    }

    /// `ledger verify`'s problems (chain, views, recompute), as messages.
    fn verify_problems(ledger: &Ledger) -> Vec<String> {
        let recomputer = crate::orchestrator::decision_check::Recomputer::default();
        let hook = |e: &agentloop_ledger::Event| recomputer.recompute(e);
        let options = agentloop_ledger::VerifyOptions {
            repo: None,
            check_views: true,
            recompute: Some(&hook),
        };
        let report = ledger.verify_with(&options).unwrap();
        assert_eq!(report.ok, report.problems.is_empty());
        report.problems.iter().map(|p| p.message.clone()).collect()
    }

    #[test]
    fn verify_fails_a_decision_whose_cached_trunk_values_are_not_the_recorded_runs() {
        let (_dir, h) = history();
        let honest = for_trunk(&h, B, &noise(), Some("c4a2b3c"));
        assert_eq!(verify_with_decision(honest.clone()), Vec::<String>::new());

        // One value made better for the trunk (so the candidate looks worse), as an edit of
        // the ledger or of the loop that carries it would do; the decision itself recomputes.
        let mut edited = honest.clone();
        edited.cached[1].1 = 3.50;
        let problems = verify_with_decision(edited);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("change c4a2b3c")
                && problems[0].contains("seed 12")
                && problems[0].contains("recorded: 3.62"),
            "{problems:?}"
        );

        // The old trunk's values (calibration of A), for a change tested on B.
        let stale = for_trunk(&h, A, &noise(), Some("c4a2b3c"));
        let problems = verify_with_decision(stale);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("change c4a2b3c") && p.contains("seed 11")),
            "{problems:?}"
        );

        // A value no run recorded at all (seed 13 has only c2's fill, 3.59).
        let mut invented = honest;
        invented.cached[2].1 = 3.0;
        let problems = verify_with_decision(invented);
        assert!(problems[0].contains("seed 13"), "{problems:?}");
    }

    #[test]
    fn verify_fails_an_accept_that_records_no_result_for_a_guard_the_session_declared() {
        use agentloop_guardrails::guards::{Guard, GuardBound};
        let declared = vec![Guard {
            metric: "peak_mem_bytes".into(),
            bound: GuardBound::MaxRatio(1.10),
        }];
        // c1 was accepted by the rule and merged, with no guards recorded: fine while the
        // session declared none...
        let (dir, _) = history_declaring(None);
        let ledger = Ledger::open(dir.path().join("ledger.db")).unwrap();
        assert_eq!(verify_problems(&ledger), Vec::<String>::new());
        // ...but a loop that drops a declared guard (or records it with a looser bound) is
        // caught, though every result it did record recomputes.
        let (dir, _) = history_declaring(Some(serde_json::to_value(&declared).unwrap()));
        let ledger = Ledger::open(dir.path().join("ledger.db")).unwrap();
        let problems = verify_problems(&ledger);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("change c1a2b3c")
                && problems[0].contains("peak_mem_bytes MaxRatio(1.1)"),
            "{problems:?}"
        );
    }
}
