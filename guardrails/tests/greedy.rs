//! The greedy rules (the popular loop's "keep if lower", for comparison): what they ask for,
//! what they decide, that `recompute` catches a tampered run, and `[decision] rule = "greedy"`.

mod common;

use agentloop_guardrails::decision::{
    Calibration, DecisionRule, ScreenRule, GREEDY_SEED, RULE_VERSION_GREEDY,
    RULE_VERSION_GREEDY_FRESH,
};
use agentloop_guardrails::process::{
    recompute, Arm, CommonControl, DecisionProcess, Observation, Request, RunValue, Verdict,
};

fn calibration(rule: &DecisionRule, trunk: f64) -> Calibration {
    Calibration::from_runs_for(rule, &[(GREEDY_SEED, trunk)], &[]).unwrap()
}

/// One greedy decision with the trunk's cached value `trunk` and the candidate's run `cand`.
fn decide(fresh: bool, trunk: f64, cand: f64) -> agentloop_guardrails::process::Decision {
    let rule = DecisionRule::greedy(fresh);
    let mut p = DecisionProcess::new(rule.clone(), calibration(&rule, trunk)).unwrap();
    let obs = match p.next_request() {
        Request::NeedRuns {
            arm:
                Arm::Common {
                    seed,
                    with_trunk: false,
                },
            count: 1,
        } if !fresh => {
            assert_eq!(seed, GREEDY_SEED, "greedy runs on the trunk's fixed seed");
            Observation::Common {
                seed,
                trunk: None,
                candidate: RunValue::Ok(cand),
            }
        }
        Request::NeedRuns {
            arm: Arm::Candidate,
            count: 1,
        } if fresh => Observation::Candidate(RunValue::Ok(cand)),
        other => panic!("unexpected request {other:?} (fresh: {fresh})"),
    };
    p.add_result(obs).unwrap();
    p.decision().expect("one run decides").clone()
}

#[test]
fn greedy_keeps_a_strictly_lower_run_and_drops_the_rest_after_one_run() {
    for fresh in [false, true] {
        let kept = decide(fresh, 3.70, 3.6999);
        assert_eq!(kept.verdict, Verdict::Accept, "fresh {fresh}");
        assert_eq!(kept.runs, 1);
        assert!(
            kept.reason.starts_with("no statistical test"),
            "{}",
            kept.reason
        );
        for worse in [3.70, 3.71] {
            let d = decide(fresh, 3.70, worse);
            assert_eq!(d.verdict, Verdict::Reject, "fresh {fresh}, {worse}");
            assert_eq!(d.runs, 1);
        }
        // The merged run is the new trunk's value (on the fixed seed's slot).
        assert_eq!(kept.common_runs(), vec![(GREEDY_SEED, 3.6999)]);
    }
}

#[test]
fn greedy_fills_a_missing_trunk_run_on_the_fixed_seed_and_compares_with_it() {
    let rule = DecisionRule::greedy(false);
    let common = CommonControl {
        seeds: vec![GREEDY_SEED],
        cached: vec![],
    };
    let mut p = DecisionProcess::with_common_control(rule.clone(), calibration(&rule, 9.0), common)
        .unwrap();
    assert_eq!(
        p.next_request(),
        Request::NeedRuns {
            arm: Arm::Common {
                seed: GREEDY_SEED,
                with_trunk: true
            },
            count: 1
        }
    );
    p.add_result(Observation::Common {
        seed: GREEDY_SEED,
        trunk: Some(RunValue::Ok(3.50)),
        candidate: RunValue::Ok(3.55),
    })
    .unwrap();
    let d = p.decision().unwrap();
    // Against the fill (3.50), not calibration's 9.0.
    assert_eq!(d.verdict, Verdict::Reject);
    assert_eq!(d.runs, 2);
    assert_eq!(d.trunk_fills(), vec![(GREEDY_SEED, 3.50)]);
}

#[test]
fn greedy_fresh_refuses_a_trunk_without_a_recorded_value() {
    let rule = DecisionRule::greedy(true);
    let common = CommonControl {
        seeds: vec![GREEDY_SEED],
        cached: vec![],
    };
    let err = DecisionProcess::with_common_control(rule.clone(), calibration(&rule, 3.7), common)
        .unwrap_err();
    assert!(err.to_string().contains("last recorded value"), "{err}");
}

#[test]
fn a_crashed_greedy_run_is_a_crash_not_a_reject() {
    let rule = DecisionRule::greedy(false);
    let mut p = DecisionProcess::new(rule.clone(), calibration(&rule, 3.7)).unwrap();
    p.add_result(Observation::Common {
        seed: GREEDY_SEED,
        trunk: None,
        candidate: RunValue::Crashed,
    })
    .unwrap();
    assert_eq!(p.decision().unwrap().verdict, Verdict::Crash);
}

#[test]
fn recompute_accepts_a_greedy_record_and_catches_a_tampered_run() {
    for fresh in [false, true] {
        let d = decide(fresh, 3.70, 3.65);
        let json = serde_json::to_value(&d).unwrap();
        recompute(&json).unwrap();
        // The candidate's recorded run changed (the verdict would flip, the statistics too).
        let mut tampered = json.clone();
        let obs = &mut tampered["observations"][0];
        let slot = if fresh {
            &mut obs["candidate"]["ok"]
        } else {
            &mut obs["common"]["candidate"]["ok"]
        };
        *slot = serde_json::json!(3.75);
        let err = recompute(&tampered).unwrap_err();
        assert!(err.contains("differs"), "{err}");
        // The trunk's value changed, so the same run would have been dropped.
        let mut tampered = json.clone();
        tampered["common"]["cached"][0][1] = serde_json::json!(3.60);
        assert!(recompute(&tampered).is_err());
        // A greedy record may not lose its trunk value.
        let mut tampered = json;
        tampered.as_object_mut().unwrap().remove("common");
        assert!(recompute(&tampered).is_err());
    }
}

#[test]
fn calibration_takes_one_seed_only_for_the_greedy_rules() {
    let greedy = DecisionRule::greedy(false);
    greedy.validate().unwrap();
    assert!(Calibration::from_runs_for(&greedy, &[(GREEDY_SEED, 3.7)], &[]).is_ok());
    let v3 = DecisionRule::default();
    assert!(Calibration::from_runs_for(&v3, &[(1, 3.7)], &[(1, vec![3.7])]).is_err());
    // A greedy rule without its seed, or with the v3 screen, is refused.
    let no_seed = DecisionRule {
        fixed_seed: None,
        ..DecisionRule::greedy(true)
    };
    assert!(no_seed.validate().is_err());
    let wrong_screen = DecisionRule {
        screen: ScreenRule::paired_default(),
        ..DecisionRule::greedy(false)
    };
    assert!(wrong_screen.validate().is_err());
}

#[test]
fn decision_rule_greedy_in_agentloop_toml() {
    for (name, version) in [
        ("greedy", RULE_VERSION_GREEDY),
        ("greedy-fresh", RULE_VERSION_GREEDY_FRESH),
    ] {
        let text = format!("{}\n[decision]\nrule = \"{name}\"\n", common::TARGET_TOML);
        let (_dir, t) = common::target_from(&text);
        assert_eq!(t.decision.rule_version, version);
        assert_eq!(t.decision.fixed_seed, Some(GREEDY_SEED));
        assert_eq!(t.decision.min_baseline_seeds, 1);
    }
    let text = format!(
        "{}\n[decision]\nrule = \"greedy\"\nfixed_seed = 7\n",
        common::TARGET_TOML
    );
    let (_dir, t) = common::target_from(&text);
    assert_eq!(t.decision.fixed_seed, Some(7));
    for bad in [
        "rule = \"keep-if-lower\"",
        "rule = \"greedy\"\nrule_version = \"greedy/v1\"",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{}\n[decision]\n{bad}\n", common::TARGET_TOML);
        std::fs::write(dir.path().join("agentloop.toml"), text).unwrap();
        let err = agentloop_guardrails::target::TargetSpec::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("decision.rule"), "{err}");
    }
}
