//! `[decision] rule = "greedy"` in a real session (toy target, offline proposer): calibration is
//! one trunk run on the fixed seed, each change one run on that seed, kept if lower; the merged
//! change's run becomes the trunk's value; the decisions say "no statistical test" in the
//! ledger, `ledger show` and the report; `ledger verify` recomputes them and names a forged one.

use agentloop_guardrails::decision::GREEDY_SEED;
use agentloop_guardrails::process::Decision as ProcessRecord;
use agentloop_ledger::payload::Stage;
use agentloop_ledger::{EventKind, NewEvent};
use agentloop_tests::toy::ToyOptions;
use agentloop_tests::{offline_start, TargetRepo};

agentloop_tests::e2e_paths!();

fn run(repo: &TargetRepo, args: &[&str]) -> (i32, String, String) {
    repo.run_agentloop(BIN.as_ref(), &target_dir(), args)
        .unwrap()
}

/// A toy target's offline session of three changes under `rule`; it must end cleanly.
fn offline_session(rule: &str) -> TargetRepo {
    let repo = TargetRepo::toy(&ToyOptions {
        decision: format!("rule = \"{rule}\"\n"),
        ..ToyOptions::default()
    })
    .unwrap();
    let args = offline_start("3");
    let (code, _, err) = run(&repo, &args);
    assert_eq!(code, 0, "{err}");
    repo
}

#[test]
fn greedy_keeps_the_lower_run_on_its_fixed_seed_and_verify_recomputes_it() {
    // lr 0.1 -> 0.01 is the toy's optimum: kept; then 0.03 and 0.003 are higher: dropped.
    let repo = offline_session("greedy");
    let l = repo.ledger().unwrap();
    let events = l.events().unwrap();

    // Calibration: the trunk once, on the fixed seed; no replays.
    let calibration = events
        .iter()
        .find(|e| e.kind == EventKind::Calibration)
        .expect("calibrated");
    let baseline = calibration.payload["baseline"].as_array().unwrap();
    assert_eq!(baseline.len(), 1, "{}", calibration.payload);
    assert_eq!(baseline[0]["seed"], GREEDY_SEED);
    assert!(calibration.payload["replays"]
        .as_array()
        .is_none_or(|r| r.is_empty()));

    let decisions: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Decision)
        .collect();
    assert_eq!(decisions.len(), 3);
    let outcomes: Vec<&str> = decisions
        .iter()
        .map(|d| d.payload["outcome"].as_str().unwrap())
        .collect();
    // The first lr offered beats lr 0.1; the last (0.003 after 0.01) does not.
    assert_eq!(outcomes[0], "accepted", "{outcomes:?}");
    assert_eq!(outcomes[2], "rejected", "{outcomes:?}");
    let records: Vec<ProcessRecord> = decisions
        .iter()
        .map(|d| serde_json::from_value(d.payload["process"].clone()).unwrap())
        .collect();
    for (d, r) in decisions.iter().zip(&records) {
        assert_eq!(d.payload["rule_version"], "greedy/v1");
        assert_eq!(d.payload["statistical_test"], "no statistical test");
        assert_eq!(d.payload["test"], "keep_if_lower");
        assert!(d.payload.get("p_value").is_none() && d.payload.get("ci_low").is_none());
        // One run, on the fixed seed, per change (its smoke run aside).
        let change = d.change.as_deref().unwrap();
        let screens: Vec<_> = l
            .runs(Some(change))
            .unwrap()
            .into_iter()
            .filter(|r| r.stage == Stage::Screen.as_str())
            .collect();
        assert_eq!(screens.len(), 1, "{change}");
        assert_eq!(screens[0].seed, GREEDY_SEED as i64);
        assert_eq!(r.runs, 1);
    }
    // The last merged change's run is the trunk's value each next change was compared with.
    let mut trunk = records[0].common.as_ref().unwrap().cached.clone();
    assert_eq!(
        trunk,
        [(GREEDY_SEED, baseline[0]["value"].as_f64().unwrap())]
    );
    for (d, r) in decisions.iter().zip(&records) {
        assert_eq!(r.common.as_ref().unwrap().cached, trunk);
        let run = r.common_runs();
        assert_eq!(run.len(), 1);
        assert_eq!(d.payload["outcome"] == "accepted", run[0].1 < trunk[0].1);
        if d.payload["outcome"] == "accepted" {
            trunk = run;
        }
    }

    let accepted = decisions[0].change.clone().unwrap();
    let (code, out, err) = run(&repo, &["ledger", "show", &accepted]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no statistical test"), "{out}");
    let (code, out, err) = run(&repo, &["report"]);
    assert_eq!(code, 0, "{err}");
    let html_path = out
        .lines()
        .find_map(|l| l.strip_prefix("report: "))
        .expect("report path printed");
    let html = std::fs::read_to_string(html_path).unwrap();
    assert!(html.contains(">no statistical test<"), "the table marks it");
    assert!(
        html.contains("greedy: one run, no statistical test"),
        "the chart labels greedy points"
    );

    let (code, out, err) = run(&repo, &["ledger", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("recomputed       3"), "{out}");

    // A forged decision, appended through the API so the chain is intact: the rejected
    // change's recorded run lowered below the trunk, its outcome turned to accepted.
    let rejected = decisions[2];
    let mut forged = rejected.payload.clone();
    let trunk = records[2].common.as_ref().unwrap().cached[0].1;
    forged["process"]["observations"][0]["common"]["candidate"]["ok"] = (trunk - 0.5).into();
    let seq = l
        .append(NewEvent {
            kind: EventKind::Decision,
            session: rejected.session.clone(),
            change: rejected.change.clone(),
            payload: forged,
        })
        .unwrap()
        .seq;
    drop(l);
    let (code, out, _) = run(&repo, &["ledger", "verify", "--no-git"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("seq {seq}: decision does not reproduce")),
        "{out}"
    );
}

#[test]
fn greedy_fresh_runs_each_change_on_its_own_seed_against_the_trunks_last_value() {
    let repo = offline_session("greedy-fresh");
    let l = repo.ledger().unwrap();
    let decisions: Vec<_> = l
        .events()
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Decision)
        .collect();
    assert_eq!(decisions.len(), 3);
    let mut seeds = Vec::new();
    let mut trunk: Option<f64> = None;
    for d in &decisions {
        assert_eq!(d.payload["rule_version"], "greedy-fresh/v1");
        assert_eq!(d.payload["statistical_test"], "no statistical test");
        let r: ProcessRecord = serde_json::from_value(d.payload["process"].clone()).unwrap();
        let cached = r.common.as_ref().unwrap().cached.clone();
        assert_eq!(cached.len(), 1);
        assert_eq!(
            cached[0].0, GREEDY_SEED,
            "the trunk's value sits in the fixed seed's slot"
        );
        if let Some(t) = trunk {
            assert_eq!(cached[0].1, t, "compared with the last merged run");
        }
        let change = d.change.as_deref().unwrap();
        let screens: Vec<_> = l
            .runs(Some(change))
            .unwrap()
            .into_iter()
            .filter(|r| r.stage == Stage::Screen.as_str())
            .collect();
        assert_eq!(screens.len(), 1, "{change}");
        seeds.push(screens[0].seed);
        let kept = d.payload["outcome"] == "accepted";
        assert_eq!(kept, screens[0].metric_value.unwrap() < cached[0].1);
        if kept {
            trunk = screens[0].metric_value;
        }
    }
    seeds.push(GREEDY_SEED as i64);
    seeds.sort();
    seeds.dedup();
    assert_eq!(
        seeds.len(),
        4,
        "a fresh seed per change, none the fixed one"
    );
    drop(l);
    let (code, out, err) = run(&repo, &["ledger", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}
