//! The decision engine on fixed inputs, checked against values computed by hand and
//! against a Student t table (NIST/SEMATECH e-Handbook of Statistical Methods, table 1.3.6.7.2,
//! upper critical values of the t distribution).

use agentloop_guardrails::decision::{
    confirm_stage, screen, screen_runs, Calibration, DecisionError, DecisionRule, ScreenRule,
    ScreenVerdict, StageRule, StageVerdict, RULE_VERSION, RULE_VERSION_V1, RULE_VERSION_V2,
};
use agentloop_guardrails::process::{
    recompute, Arm, DecidedAt, DecisionProcess, Observation, ProcessError, Request, RunValue,
    Verdict,
};

/// Ten seeds: mean 1.50 and sd exactly 0.02 (squared deviations sum to 36e-4, / 9 = 4e-4).
fn baseline() -> Vec<(u64, f64)> {
    [1.50, 1.52, 1.48, 1.51, 1.49, 1.53, 1.47, 1.50, 1.52, 1.48]
        .into_iter()
        .enumerate()
        .map(|(i, v)| (i as u64 + 1, v))
        .collect()
}

/// Seed 1 replayed twice (1.50, 1.50, 1.50: ss 0), seed 2 once (1.52, 1.53: ss 5e-5):
/// pooled within-seed sd = sqrt(5e-5 / 3) = 0.00408248.
fn replays() -> Vec<(u64, Vec<f64>)> {
    vec![(1, vec![1.50, 1.50]), (2, vec![1.53])]
}

/// The example rule: 3 pairs at p < 0.2, then 6 pairs at p < 0.05, min effect 1 run sd,
/// with v1's single screening run (v1 decisions must stay recomputable).
fn rule() -> DecisionRule {
    DecisionRule {
        rule_version: RULE_VERSION_V1.into(),
        screen: ScreenRule::Single,
        stages: vec![
            StageRule {
                pairs: 3,
                p_threshold: 0.2,
            },
            StageRule {
                pairs: 6,
                p_threshold: 0.05,
            },
        ],
        ..DecisionRule::v2_default()
    }
}

fn calibration() -> Calibration {
    Calibration::from_runs(&baseline(), &replays()).unwrap()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn calibration_gives_run_sd_floor_and_paired_sd() {
    let c = calibration();
    assert_eq!(c.n_seeds, 10);
    assert!(close(c.baseline_mean, 1.50, 1e-12));
    assert!(close(c.run_sd, 0.02, 1e-12), "{}", c.run_sd);
    assert!(close(c.nondeterminism_sd, 0.004_082_483, 1e-9));
    assert!(close(c.paired_null_sd, 0.004_082_483 * 2f64.sqrt(), 1e-9));
}

#[test]
fn calibration_refuses_too_little_or_bad_data() {
    let few = &baseline()[..9];
    assert_eq!(
        Calibration::from_runs(few, &replays()).unwrap_err(),
        DecisionError::TooFewBaselineSeeds { needed: 10, got: 9 }
    );
    assert!(matches!(
        Calibration::from_runs(&baseline(), &[(1, vec![1.5])]).unwrap_err(),
        DecisionError::TooFewReplays { needed: 3, .. }
    ));
    let mut dup = baseline();
    dup[1].0 = 1;
    assert_eq!(
        Calibration::from_runs(&dup, &replays()).unwrap_err(),
        DecisionError::DuplicateSeed(1)
    );
    let mut nan = baseline();
    nan[3].1 = f64::NAN;
    assert!(matches!(
        Calibration::from_runs(&nan, &replays()).unwrap_err(),
        DecisionError::NonFiniteValue { seed: 4, .. }
    ));
}

#[test]
fn screen_rejects_clearly_worse_candidates_only() {
    let rule = DecisionRule {
        screen_reject_below_sd: -0.5,
        ..rule()
    };
    // 1.515: gain -0.015 = -0.75 run sd < -0.5 -> reject.
    let worse = screen(&calibration(), &rule, 1.515);
    assert_eq!(worse.verdict, ScreenVerdict::Reject);
    assert!(close(worse.z, -0.75, 1e-9));
    // 1.505: -0.25 run sd -> pass; an improvement passes too.
    assert_eq!(
        screen(&calibration(), &rule, 1.505).verdict,
        ScreenVerdict::Pass
    );
    assert_eq!(
        screen(&calibration(), &rule, 1.40).verdict,
        ScreenVerdict::Pass
    );
}

#[test]
fn stage_one_continues_on_a_small_p() {
    // Gains 0.02, 0.01, 0.03: mean 0.02, sd 0.01, se 0.005774, t = 3.4641, df 2.
    // t-table df 2: t_0.95 = 2.920, t_0.975 = 4.303 -> 0.025 < p < 0.05;
    // closed form for df 2: p = (1 - t / sqrt(t^2 + 2)) / 2 = 0.037090.
    let pairs = [(1.50, 1.48), (1.52, 1.51), (1.49, 1.46)];
    let s = confirm_stage(&rule(), &calibration(), 0, &pairs).unwrap();
    assert_eq!(s.verdict, StageVerdict::Continue);
    assert!(close(s.test.mean, 0.02, 1e-12));
    assert!(close(s.test.sd, 0.01, 1e-12));
    assert!(close(s.test.t, 3.464_101_6, 1e-6));
    assert_eq!(s.test.df, 2.0);
    assert!(s.test.p > 0.025 && s.test.p < 0.05);
    assert!(close(s.test.p, 0.037_090, 1e-5), "{}", s.test.p);
    assert!(
        close(s.mean_baseline, 1.503_333_3, 1e-6) && close(s.mean_candidate, 1.483_333_3, 1e-6)
    );
}

#[test]
fn stage_one_rejects_without_evidence() {
    // Gains 0.01, -0.01, 0: mean 0, t = 0, p = 0.5 >= 0.2.
    let pairs = [(1.50, 1.49), (1.50, 1.51), (1.50, 1.50)];
    let s = confirm_stage(&rule(), &calibration(), 0, &pairs).unwrap();
    assert_eq!(s.verdict, StageVerdict::Reject);
    assert!(close(s.test.p, 0.5, 1e-12));
}

#[test]
fn final_stage_accepts_a_large_significant_gain() {
    // Gains 0.03 0.02 0.04 0.03 0.025 0.035: mean 0.03, sd sqrt(2.5e-4 / 5) = 0.0070711,
    // t = 10.392 with df 5; t-table t_0.999,5 = 5.893 -> p < 0.001. Min effect 1 run sd = 0.02.
    let gains = [0.03, 0.02, 0.04, 0.03, 0.025, 0.035];
    let pairs: Vec<(f64, f64)> = gains.iter().map(|g| (1.5, 1.5 - g)).collect();
    let s = confirm_stage(&rule(), &calibration(), 1, &pairs).unwrap();
    assert_eq!(s.verdict, StageVerdict::Accept, "{}", s.reason);
    assert!(close(s.test.t, 10.392_305, 1e-5));
    assert!(s.test.p < 0.001);
    assert!(close(s.min_effect, 0.02, 1e-12));
}

#[test]
fn final_stage_rejects_a_significant_gain_below_the_minimum_effect() {
    // Mean 0.015 < 0.02 although t = 5.196 (t_0.995,5 = 4.032 < t < t_0.999,5 = 5.893).
    let gains = [0.015, 0.005, 0.025, 0.015, 0.010, 0.020];
    let pairs: Vec<(f64, f64)> = gains.iter().map(|g| (1.5, 1.5 - g)).collect();
    let s = confirm_stage(&rule(), &calibration(), 1, &pairs).unwrap();
    assert_eq!(s.verdict, StageVerdict::Reject);
    assert!(s.test.p > 0.001 && s.test.p < 0.005, "{}", s.test.p);
    assert!(s.reason.contains("minimum effect"), "{}", s.reason);
}

#[test]
fn final_stage_at_the_table_critical_value() {
    // t-table: t_0.95,5 = 2.015. Gains built so t = 2.0 (just below: p > 0.05, reject) and
    // t = 2.1 (just above: p < 0.05, accept with no minimum effect).
    let base = [-1.0, -0.5, 0.0, 0.5, 1.0, 0.0];
    let sd = (2.5f64 / 5.0).sqrt() * 0.05; // sd of base * 0.05
    for (t, verdict) in [(2.0, StageVerdict::Reject), (2.1, StageVerdict::Accept)] {
        let shift = t * sd / 6f64.sqrt();
        let pairs: Vec<(f64, f64)> = base
            .iter()
            .map(|b| (1.5, 1.5 - (b * 0.05 + shift)))
            .collect();
        let rule = DecisionRule {
            min_effect_sd: 0.0,
            ..rule()
        };
        let s = confirm_stage(&rule, &calibration(), 1, &pairs).unwrap();
        assert!(close(s.test.t, t, 1e-9));
        assert_eq!(s.verdict, verdict, "t = {t}, p = {}", s.test.p);
    }
}

#[test]
fn zero_variance_differences() {
    let rule = rule();
    let same = [(1.5, 1.5); 3];
    let s = confirm_stage(&rule, &calibration(), 0, &same).unwrap();
    assert_eq!((s.verdict, s.test.p), (StageVerdict::Reject, 0.5));
    let better = [(1.5, 1.47); 6];
    let s = confirm_stage(&rule, &calibration(), 1, &better).unwrap();
    assert_eq!(s.verdict, StageVerdict::Accept);
    assert_eq!(s.test.t, f64::INFINITY);
    // Serializes (JSON has no infinity) and recomputes.
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["test"]["t"], "inf");
}

#[test]
fn stage_inputs_are_validated() {
    let rule = rule();
    let c = calibration();
    assert!(matches!(
        confirm_stage(&rule, &c, 0, &[(1.0, 1.0)]),
        Err(DecisionError::WrongPairCount { .. })
    ));
    assert!(matches!(
        confirm_stage(&rule, &c, 5, &[]),
        Err(DecisionError::NoSuchStage { .. })
    ));
    let nan = [(1.0, f64::NAN), (1.0, 1.0), (1.0, 1.0)];
    assert!(matches!(
        confirm_stage(&rule, &c, 0, &nan),
        Err(DecisionError::NonFinitePair { index: 0, .. })
    ));
    let bad = DecisionRule {
        stages: vec![],
        ..DecisionRule::v2_default()
    };
    assert!(bad.validate().is_err());
}

fn drive(process: &mut DecisionProcess, candidate_screen: f64, gains: &[f64]) {
    assert_eq!(
        process.next_request(),
        Request::NeedRuns {
            arm: Arm::Candidate,
            count: 1
        }
    );
    process
        .add_result(Observation::Candidate(RunValue::Ok(candidate_screen)))
        .unwrap();
    for g in gains {
        if process.decision().is_some() {
            break;
        }
        process
            .add_result(Observation::Pair {
                baseline: RunValue::Ok(1.5),
                candidate: RunValue::Ok(1.5 - g),
            })
            .unwrap();
    }
}

#[test]
fn the_process_runs_screen_then_stages_and_accepts() {
    let mut p = DecisionProcess::new(rule(), calibration()).unwrap();
    let gains = [0.02, 0.01, 0.03, 0.03, 0.02, 0.04, 0.03, 0.025, 0.035];
    assert_eq!(
        p.next_request(),
        Request::NeedRuns {
            arm: Arm::Candidate,
            count: 1
        }
    );
    p.add_result(Observation::Candidate(RunValue::Ok(1.49)))
        .unwrap();
    assert_eq!(
        p.next_request(),
        Request::NeedRuns {
            arm: Arm::Paired,
            count: 3
        }
    );
    drive_pairs(&mut p, &gains[..1]);
    assert_eq!(
        p.next_request(),
        Request::NeedRuns {
            arm: Arm::Paired,
            count: 2
        }
    );
    drive_pairs(&mut p, &gains[1..3]);
    assert_eq!(
        p.next_request(),
        Request::NeedRuns {
            arm: Arm::Paired,
            count: 6
        }
    );
    drive_pairs(&mut p, &gains[3..]);
    let d = p.decision().unwrap();
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(d.decided_at, DecidedAt::Stage(1));
    assert_eq!(d.runs, 1 + 2 * 9);
    assert_eq!(d.stages.len(), 2);
    recompute(&serde_json::to_value(d).unwrap()).unwrap();
}

fn drive_pairs(p: &mut DecisionProcess, gains: &[f64]) {
    for g in gains {
        p.add_result(Observation::Pair {
            baseline: RunValue::Ok(1.5),
            candidate: RunValue::Ok(1.5 - g),
        })
        .unwrap();
    }
}

#[test]
fn a_bad_screen_run_ends_the_decision_after_one_run() {
    let mut p = DecisionProcess::new(rule(), calibration()).unwrap();
    drive(&mut p, 1.60, &[]);
    let d = p.decision().unwrap();
    assert_eq!(
        (d.verdict, d.decided_at, d.runs),
        (Verdict::Reject, DecidedAt::Screen, 1)
    );
    assert!(matches!(
        p.add_result(Observation::Candidate(RunValue::Ok(1.0))),
        Err(ProcessError::AlreadyDone)
    ));
}

#[test]
fn crashes_candidate_ends_baseline_is_retried() {
    let mut p = DecisionProcess::new(rule(), calibration()).unwrap();
    p.add_result(Observation::Candidate(RunValue::Ok(1.49)))
        .unwrap();
    // A crashed baseline is refused and changes nothing: the loop retries it.
    let before = serde_json::to_value(&p).unwrap();
    let err = p.add_result(Observation::Pair {
        baseline: RunValue::Crashed,
        candidate: RunValue::Ok(1.4),
    });
    assert_eq!(err, Err(ProcessError::BaselineCrashed));
    assert_eq!(serde_json::to_value(&p).unwrap(), before);
    // A crashed candidate is a crash decision.
    p.add_result(Observation::Pair {
        baseline: RunValue::Ok(1.5),
        candidate: RunValue::Crashed,
    })
    .unwrap();
    let d = p.decision().unwrap();
    assert_eq!(
        (d.verdict, d.decided_at, d.runs),
        (Verdict::Crash, DecidedAt::Stage(0), 3)
    );
    recompute(&serde_json::to_value(d).unwrap()).unwrap();
    // A crashed screening run too.
    let mut p = DecisionProcess::new(rule(), calibration()).unwrap();
    p.add_result(Observation::Candidate(RunValue::Crashed))
        .unwrap();
    assert_eq!(p.decision().unwrap().verdict, Verdict::Crash);
}

#[test]
fn wrong_observations_are_refused() {
    let mut p = DecisionProcess::new(rule(), calibration()).unwrap();
    let pair = Observation::Pair {
        baseline: RunValue::Ok(1.5),
        candidate: RunValue::Ok(1.4),
    };
    assert!(matches!(
        p.add_result(pair),
        Err(ProcessError::WrongObservation { .. })
    ));
}

#[test]
fn the_process_state_survives_a_restart() {
    let mut p = DecisionProcess::new(rule(), calibration()).unwrap();
    drive(&mut p, 1.49, &[0.02, 0.01]);
    let saved = serde_json::to_string(&p).unwrap();
    let mut resumed: DecisionProcess = serde_json::from_str(&saved).unwrap();
    assert_eq!(
        resumed.next_request(),
        Request::NeedRuns {
            arm: Arm::Paired,
            count: 1
        }
    );
    drive_pairs(&mut resumed, &[0.03]);
    assert_eq!(
        resumed.next_request(),
        Request::NeedRuns {
            arm: Arm::Paired,
            count: 6
        }
    );
}

#[test]
fn recompute_detects_a_tampered_decision() {
    let mut p = DecisionProcess::new(rule(), calibration()).unwrap();
    drive(
        &mut p,
        1.49,
        &[0.02, 0.01, 0.03, 0.03, 0.02, 0.04, 0.03, 0.025, 0.035],
    );
    let good = serde_json::to_value(p.decision().unwrap()).unwrap();
    recompute(&good).unwrap();
    let mut flipped = good.clone();
    flipped["verdict"] = "reject".into();
    assert!(recompute(&flipped).unwrap_err().contains("/verdict"));
    let mut edited = good.clone();
    edited["observations"][3]["pair"]["candidate"]["ok"] = 1.6.into();
    assert!(recompute(&edited).is_err());
    let mut p_value = good.clone();
    p_value["stages"][1]["test"]["p"] = 0.01.into();
    assert!(recompute(&p_value)
        .unwrap_err()
        .contains("/stages/1/test/p"));
    let mut version = good;
    version["rule"]["rule_version"] = "other/v9".into();
    version["rule_version"] = "other/v9".into();
    assert!(recompute(&version).is_err());
}

#[test]
fn screening_can_be_disabled() {
    let rule = DecisionRule {
        screen_enabled: false,
        ..rule()
    };
    let p = DecisionProcess::new(rule, calibration()).unwrap();
    assert_eq!(
        p.next_request(),
        Request::NeedRuns {
            arm: Arm::Paired,
            count: 3
        }
    );
}

#[test]
fn a_non_finite_metric_is_refused_and_changes_nothing() {
    let mut p = DecisionProcess::new(rule(), calibration()).unwrap();
    let err = p
        .add_result(Observation::Candidate(RunValue::Ok(f64::NAN)))
        .unwrap_err();
    assert!(err.to_string().contains("crashed"), "{err}");
    assert_eq!(
        p.next_request(),
        Request::NeedRuns {
            arm: Arm::Candidate,
            count: 1
        }
    );
}

#[test]
fn recalibration_is_due_every_25_merges_by_default() {
    let rule = DecisionRule::default();
    assert!(!rule.needs_recalibration(24));
    assert!(rule.needs_recalibration(25));
}

// ---- the sequential screen (v2) -----------------------------------------------------------
// Calibration: mean 1.50, run sd 0.02. H1 = 1.5 run sd, alpha 0.05, beta 0.1, at most 8 runs:
// each run adds 1.5 z - 1.125 to the log LR; pass at ln(0.9 / 0.05) = ln 18 = 2.890372,
// reject at ln(0.1 / 0.95) = -2.251292.

fn sequential_rule() -> DecisionRule {
    DecisionRule {
        screen: ScreenRule::Sequential {
            effect_sd: 1.5,
            alpha: 0.05,
            beta: 0.1,
            max_runs: 8,
        },
        ..rule()
    }
    .with_version(RULE_VERSION_V2)
}

trait WithVersion {
    fn with_version(self, v: &str) -> Self;
}

impl WithVersion for DecisionRule {
    fn with_version(mut self, v: &str) -> Self {
        self.rule_version = v.into();
        self
    }
}

#[test]
fn sequential_screen_passes_on_strong_evidence_by_hand() {
    let (c, r) = (calibration(), sequential_rule());
    // 1.45: z = 2.5, log LR 2.625 < 2.890: not yet.
    assert_eq!(screen_runs(&c, &r, &[1.45]), None);
    // 1.46: z = 2.0, log LR 2.625 + 1.875 = 4.5 >= 2.890: pass after 2 runs.
    let s = screen_runs(&c, &r, &[1.45, 1.46]).unwrap();
    assert_eq!(s.verdict, ScreenVerdict::Pass);
    let seq = s.sequential.as_ref().unwrap();
    assert!(close(seq.log_lr, 4.5, 1e-9), "{}", seq.log_lr);
    assert!(close(seq.pass_at, 18f64.ln(), 1e-12));
    assert!(close(seq.reject_at, (0.1f64 / 0.95).ln(), 1e-12));
    assert!(close(s.candidate, 1.455, 1e-12) && close(s.z, 2.25, 1e-9));
}

#[test]
fn sequential_screen_rejects_no_gain_after_three_runs_and_worse_after_one() {
    let (c, r) = (calibration(), sequential_rule());
    // No gain: -1.125 per run; -2.25 after 2 is still above -2.2513, -3.375 after 3 is below.
    assert_eq!(screen_runs(&c, &r, &[1.50, 1.50]), None);
    let s = screen_runs(&c, &r, &[1.50, 1.50, 1.50]).unwrap();
    assert_eq!(s.verdict, ScreenVerdict::Reject);
    // One run sd worse: -1.5 - 1.125 = -2.625: rejected at once.
    let s = screen_runs(&c, &r, &[1.52]).unwrap();
    assert_eq!(s.verdict, ScreenVerdict::Reject);
}

#[test]
fn sequential_screen_truncates_at_max_runs_by_the_sign_of_the_evidence() {
    let (c, r) = (calibration(), sequential_rule());
    // z = 0.8: +0.075 per run, never reaching a bound; after 8 runs +0.6 >= 0: pass.
    let leaning_good = [1.484; 8];
    assert_eq!(screen_runs(&c, &r, &leaning_good[..7]), None);
    let s = screen_runs(&c, &r, &leaning_good).unwrap();
    assert_eq!(s.verdict, ScreenVerdict::Pass);
    assert!(close(s.sequential.unwrap().log_lr, 0.6, 1e-9));
    // z = 0.7: -0.075 per run; after 8 runs -0.6 < 0: reject.
    let s = screen_runs(&c, &r, &[1.486; 8]).unwrap();
    assert_eq!(s.verdict, ScreenVerdict::Reject);
}

#[test]
fn the_process_asks_for_screening_runs_one_at_a_time_then_pairs() {
    let mut p = DecisionProcess::new(sequential_rule(), calibration()).unwrap();
    for v in [1.49, 1.48] {
        assert_eq!(
            p.next_request(),
            Request::NeedRuns {
                arm: Arm::Candidate,
                count: 1
            }
        );
        p.add_result(Observation::Candidate(RunValue::Ok(v)))
            .unwrap();
    }
    // 1.49: z 0.5 -> -0.375; 1.48: z 1.0 -> +0.375; log LR 0: between the bounds.
    assert!(p.decision().is_none());
    p.add_result(Observation::Candidate(RunValue::Ok(1.44)))
        .unwrap(); // z 3.0 -> +3.375: pass
    assert_eq!(
        p.next_request(),
        Request::NeedRuns {
            arm: Arm::Paired,
            count: 3
        }
    );
    drive_pairs(
        &mut p,
        &[0.02, 0.01, 0.03, 0.03, 0.02, 0.04, 0.03, 0.025, 0.035],
    );
    let d = p.decision().unwrap();
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(d.runs, 3 + 2 * 9);
    let good = serde_json::to_value(d).unwrap();
    recompute(&good).unwrap();
    // Tampering with a screening run is caught.
    let mut edited = good;
    edited["observations"][1]["candidate"]["ok"] = 1.60.into();
    assert!(recompute(&edited).is_err());
}

#[test]
fn v1_rules_cannot_take_the_sequential_screen_and_unknown_versions_are_refused() {
    let v1_sequential = sequential_rule().with_version(RULE_VERSION_V1);
    assert!(v1_sequential.validate().is_err());
    assert!(
        rule().validate().is_ok(),
        "v1 with the single screen stays valid"
    );
    let unknown = DecisionRule::default().with_version("other/v9");
    assert!(unknown
        .validate()
        .unwrap_err()
        .to_string()
        .contains("other/v9"));
}

#[test]
fn a_decision_recorded_before_v2_has_no_screen_field_and_still_recomputes() {
    let mut p = DecisionProcess::new(rule(), calibration()).unwrap();
    drive(
        &mut p,
        1.49,
        &[0.02, 0.01, 0.03, 0.03, 0.02, 0.04, 0.03, 0.025, 0.035],
    );
    let mut old = serde_json::to_value(p.decision().unwrap()).unwrap();
    // What a v1 build wrote: no `screen` in the rule, no `sequential` in the screen outcome.
    old["rule"].as_object_mut().unwrap().remove("screen");
    assert!(old["screen"].get("sequential").is_none());
    recompute(&old).unwrap();
}

// ---- rule v3: paired screen on the trunk's common seeds, group-sequential confirmation ----
// calibration(): paired null sd = sqrt(2) * 0.00408248 = 0.0057735 (= 0.01 / sqrt 3), which
// floors the screen's sd (above the minimum effect 0.001). Screen H1 = 1.2 paired sd,
// alpha 0.1, beta 0.05: each pair adds 1.2 z - 0.72; pass at ln(9.5) = 2.2513, reject at
// ln(0.05 / 0.9) = -2.8904.

use agentloop_guardrails::decision::{confirm_look, screen_paired, ConfirmRule, Look, MinEffect};
use agentloop_guardrails::process::CommonControl;

fn v3() -> DecisionRule {
    DecisionRule {
        confirm: Some(ConfirmRule {
            looks: vec![
                Look {
                    pairs: 3,
                    alpha: 0.002,
                },
                Look {
                    pairs: 6,
                    alpha: 0.005,
                },
                Look {
                    pairs: 12,
                    alpha: 0.018,
                },
            ],
            futility_t: 0.0,
        }),
        ..DecisionRule::v3_default()
    }
}

/// Seeds 1..=10 with the trunk's values from `baseline()`, except seeds 3 and 4 (missing).
fn common() -> CommonControl {
    CommonControl {
        seeds: (1..=10).collect(),
        cached: baseline()
            .into_iter()
            .filter(|(s, _)| *s != 3 && *s != 4)
            .collect(),
    }
}

#[test]
fn v3_is_the_default_with_alpha_the_sum_of_the_looks() {
    let r = DecisionRule::default();
    assert_eq!(r.rule_version, RULE_VERSION);
    assert!(r.validate().is_ok());
    assert!((r.false_accept_bound() - 0.025).abs() < 1e-12);
    assert!((v3().false_accept_bound() - 0.025).abs() < 1e-12);
    assert_eq!(r.min_effect, Some(MinEffect::Absolute(0.001)));
    // A v2 rule cannot carry v3's fields, and v3 needs them.
    let mixed = DecisionRule {
        min_effect: Some(MinEffect::Absolute(0.001)),
        ..DecisionRule::v2_default()
    };
    assert!(mixed.validate().is_err());
    let no_confirm = DecisionRule {
        confirm: None,
        ..v3()
    };
    assert!(no_confirm.validate().is_err());
}

#[test]
fn paired_screen_by_hand_waits_for_a_second_pair_then_passes() {
    let (c, r) = (calibration(), v3());
    // One pair, gain 0.012: z = 0.012 / 0.0057735 = 2.0785, log LR 1.774 < 2.251: not yet
    // (one pair could never pass anyway: it says nothing about its own spread).
    assert_eq!(screen_paired(&c, &r, 0.001, 6, &[(1, 1.50, 1.488)]), None);
    // Gains 0.012, 0.010: sample sd 0.0014142 < floor, z = 0.011 / 0.0057735 = 1.90526,
    // log LR = 2 (1.2 * 1.90526 - 0.72) = 3.1326 >= 2.2513: pass.
    let s = screen_paired(&c, &r, 0.001, 6, &[(1, 1.50, 1.488), (2, 1.52, 1.51)]).unwrap();
    assert_eq!(s.verdict, ScreenVerdict::Pass, "{}", s.reason);
    let e = s.paired.as_ref().unwrap();
    assert!(close(e.sd_floor, 0.01 / 3f64.sqrt(), 1e-9));
    assert!(close(e.sd_used, e.sd_floor, 0.0));
    assert!(close(e.log_lr, 3.132_6, 1e-3), "{}", e.log_lr);
    assert!(close(e.pass_at, 9.5f64.ln(), 1e-12));
    assert!(close(s.gain, 0.011, 1e-12) && close(s.baseline_mean, 1.51, 1e-12));
}

#[test]
fn paired_screen_uses_the_sample_sd_when_it_exceeds_the_floor_and_rejects_worse_at_once() {
    let (c, r) = (calibration(), v3());
    // Gains 0.03, -0.01: mean 0.01, sd 0.028284 > floor: z = 0.35355, log LR -0.5915: go on.
    assert_eq!(
        screen_paired(&c, &r, 0.001, 6, &[(1, 1.5, 1.47), (2, 1.5, 1.51)]),
        None
    );
    // One pair 0.012 worse: z = -2.0785, log LR -3.214 <= -2.890: rejected after one run.
    let s = screen_paired(&c, &r, 0.001, 6, &[(1, 1.5, 1.512)]).unwrap();
    assert_eq!(s.verdict, ScreenVerdict::Reject);
    // The minimum effect floors the sd when the replays showed none (a deterministic trainer).
    let det = Calibration::from_runs(&baseline(), &[(1, vec![1.5, 1.5]), (2, vec![1.52])]).unwrap();
    assert_eq!(det.paired_null_sd, 0.0);
    let s = screen_paired(&det, &r, 0.001, 6, &[(1, 1.5, 1.5025)]).unwrap();
    assert_eq!(s.paired.as_ref().unwrap().sd_used, 0.001);
    assert_eq!(s.verdict, ScreenVerdict::Reject, "z = -2.5: {}", s.reason);
    // Bit-identical metrics (a comment on a deterministic trainer): dropped after one run.
    let s = screen_paired(&det, &r, 0.001, 6, &[(1, 1.5, 1.5)]).unwrap();
    assert_eq!(s.verdict, ScreenVerdict::Reject);
    assert!(s.reason.contains("does not alter training"), "{}", s.reason);
    // At the run limit: pass iff the evidence leans to H1 (z >= 0.6).
    let lean = [(1, 1.5, 1.4962), (2, 1.5, 1.4962)]; // z = 0.658 each
    let s = screen_paired(&c, &r, 0.001, 2, &lean).unwrap();
    assert_eq!(s.verdict, ScreenVerdict::Pass, "{}", s.reason);
}

#[test]
fn confirm_looks_are_cumulative_with_futility_and_the_minimum_effect() {
    let r = v3();
    // A huge, clean gain accepts at the first look: gains 0.1, 0.11, 0.09 -> t = 17.3,
    // df 2: p = 0.00166 < 0.002.
    let big = [(1.6, 1.5), (1.61, 1.5), (1.59, 1.5)];
    let s = confirm_look(&r, 0.001, 0, &big).unwrap();
    assert_eq!(s.verdict, StageVerdict::Accept, "{}", s.reason);
    assert!(s.test.p < 0.002 && s.test.p > 0.0015, "{}", s.test.p);
    // No sign of a gain at the first look: futility (t <= 0).
    let none = [(1.5, 1.5), (1.5, 1.51), (1.5, 1.495)];
    let s = confirm_look(&r, 0.001, 0, &none).unwrap();
    assert_eq!(s.verdict, StageVerdict::Reject);
    assert!(s.reason.contains("futility"), "{}", s.reason);
    // Promising but not yet significant: continue.
    let some = [(1.5, 1.49), (1.5, 1.5), (1.5, 1.495)];
    let s = confirm_look(&r, 0.001, 0, &some).unwrap();
    assert_eq!(s.verdict, StageVerdict::Continue, "{}", s.reason);
    // Surely below the minimum effect (95% CI ends under it): futility before the last look.
    let tiny: Vec<(f64, f64)> = [0.0003, 0.0002, 0.0004, 0.0003, 0.0002, 0.0004]
        .iter()
        .map(|g| (1.5, 1.5 - g))
        .collect();
    let s = confirm_look(&r, 0.001, 1, &tiny).unwrap();
    assert_eq!(s.verdict, StageVerdict::Reject);
    assert!(
        s.reason.contains("below the minimum effect"),
        "{}",
        s.reason
    );
    // The last look rejects a significant gain below the minimum effect.
    let small: Vec<(f64, f64)> = (0..12)
        .map(|i| (1.5, 1.5 - 0.0005 - 0.0001 * (i % 3) as f64))
        .collect();
    let s = confirm_look(&r, 0.001, 2, &small).unwrap();
    assert_eq!(s.verdict, StageVerdict::Reject);
    assert!(
        s.reason.contains("below the minimum effect"),
        "{}",
        s.reason
    );
    assert!(matches!(
        confirm_look(&r, 0.001, 1, &big),
        Err(DecisionError::WrongPairCount { needed: 6, .. })
    ));
}

#[test]
fn v3_process_screens_on_common_seeds_fills_missing_trunk_runs_and_recomputes() {
    let mut p = DecisionProcess::with_common_control(v3(), calibration(), common()).unwrap();
    // Seed 1 is cached: one run gives a pair.
    assert_eq!(
        p.next_request(),
        Request::NeedRuns {
            arm: Arm::Common {
                seed: 1,
                with_trunk: false
            },
            count: 1
        }
    );
    // Wrong seed, a trunk run for a cached seed, and a v2-style candidate run are refused.
    let on = |seed, trunk, c| Observation::Common {
        seed,
        trunk,
        candidate: RunValue::Ok(c),
    };
    assert_eq!(
        p.add_result(on(2, None, 1.49)),
        Err(ProcessError::WrongSeed {
            expected: 1,
            got: 2
        })
    );
    assert_eq!(
        p.add_result(on(1, Some(RunValue::Ok(1.5)), 1.49)),
        Err(ProcessError::TrunkRun {
            seed: 1,
            cached: true
        })
    );
    assert!(p
        .add_result(Observation::Candidate(RunValue::Ok(1.49)))
        .is_err());
    p.add_result(on(1, None, 1.492)).unwrap(); // gain 0.008 on 1.50
    p.add_result(on(2, None, 1.514)).unwrap(); // gain 0.006 on 1.52: z 1.212, log LR 1.47
                                               // Seed 3 has no cached trunk run: the trunk's run is asked for with it.
    assert_eq!(
        p.next_request(),
        Request::NeedRuns {
            arm: Arm::Common {
                seed: 3,
                with_trunk: true
            },
            count: 1
        }
    );
    assert_eq!(
        p.add_result(on(3, None, 1.47)),
        Err(ProcessError::TrunkRun {
            seed: 3,
            cached: false
        })
    );
    let before = p.clone();
    assert_eq!(
        p.add_result(on(3, Some(RunValue::Crashed), 1.47)),
        Err(ProcessError::BaselineCrashed)
    );
    assert_eq!(p, before, "a refused trunk crash changes nothing");
    // Gain 0.010: mean 0.008, z 1.3856, log LR 2.828 >= 2.251: pass.
    p.add_result(on(3, Some(RunValue::Ok(1.48)), 1.47)).unwrap();
    assert_eq!(
        p.next_request(),
        Request::NeedRuns {
            arm: Arm::Paired,
            count: 3
        }
    );
    // Confirmation: 3 pairs (continue), 3 more (accept at look 2 on all 6).
    drive_pairs(&mut p, &[0.012, 0.010, 0.014]);
    assert_eq!(
        p.next_request(),
        Request::NeedRuns {
            arm: Arm::Paired,
            count: 3
        }
    );
    drive_pairs(&mut p, &[0.011, 0.013, 0.012]);
    let d = p.decision().unwrap().clone();
    assert_eq!(d.verdict, Verdict::Accept, "{}", d.reason);
    assert_eq!(d.decided_at, DecidedAt::Stage(1));
    assert_eq!(d.stages[1].pairs.len(), 6, "looks are cumulative");
    assert_eq!(
        d.runs,
        3 + 1 + 2 * 6,
        "three screening runs, one trunk fill, six pairs"
    );
    assert_eq!(d.trunk_fills(), vec![(3, 1.48)]);
    assert_eq!(d.common_runs(), vec![(1, 1.492), (2, 1.514), (3, 1.47)]);
    assert_eq!(d.min_effect, Some(0.001));
    let good = serde_json::to_value(&d).unwrap();
    recompute(&good).unwrap();
    // Tampering with a cached trunk value, the minimum effect or a look is caught.
    for (path, value) in [
        ("/common/cached/0/1", serde_json::json!(1.40)),
        ("/rule/min_effect", serde_json::json!(0.02)),
        ("/rule/confirm/looks/1/alpha", serde_json::json!(0.5)),
        ("/min_effect", serde_json::json!(0.0)),
    ] {
        let mut edited = good.clone();
        *edited.pointer_mut(path).unwrap() = value;
        assert!(recompute(&edited).is_err(), "{path} edit not caught");
    }
    let mut no_common = good;
    no_common.as_object_mut().unwrap().remove("common");
    assert!(recompute(&no_common).is_err());
}

#[test]
fn v3_screening_crash_ends_the_decision_and_new_takes_the_calibration_seeds() {
    let mut p = DecisionProcess::new(v3(), calibration()).unwrap();
    assert_eq!(
        p.next_request(),
        Request::NeedRuns {
            arm: Arm::Common {
                seed: 1,
                with_trunk: false
            },
            count: 1
        }
    );
    p.add_result(Observation::Common {
        seed: 1,
        trunk: None,
        candidate: RunValue::Crashed,
    })
    .unwrap();
    let d = p.decision().unwrap();
    assert_eq!(d.verdict, Verdict::Crash);
    assert_eq!(d.runs, 1);
    recompute(&serde_json::to_value(d).unwrap()).unwrap();
    // A v2 rule takes no common control; bad controls are refused.
    assert!(
        DecisionProcess::with_common_control(sequential_rule(), calibration(), common()).is_err()
    );
    let dup = CommonControl {
        seeds: vec![1, 1],
        cached: vec![],
    };
    assert!(DecisionProcess::with_common_control(v3(), calibration(), dup).is_err());
    let stray = CommonControl {
        seeds: vec![1],
        cached: vec![(9, 1.5)],
    };
    assert!(DecisionProcess::with_common_control(v3(), calibration(), stray).is_err());
}

#[test]
fn a_slightly_worse_v3_candidate_is_dropped_after_two_runs_with_no_trunk_runs() {
    // Gains -0.003 (z -0.52, log LR -1.34), then -0.005: mean -0.004, sd below the floor,
    // z -0.6928, log LR 2 (1.2 z - 0.72) = -3.10 <= -2.89.
    let mut p = DecisionProcess::with_common_control(v3(), calibration(), common()).unwrap();
    for c in [1.503, 1.525, 0.0] {
        if p.decision().is_some() {
            break;
        }
        let Request::NeedRuns {
            arm: Arm::Common { seed, with_trunk },
            ..
        } = p.next_request()
        else {
            panic!("a screening run")
        };
        assert!(!with_trunk);
        p.add_result(Observation::Common {
            seed,
            trunk: None,
            candidate: RunValue::Ok(c),
        })
        .unwrap();
    }
    let d = p.decision().expect("decided");
    assert_eq!(d.verdict, Verdict::Reject, "{}", d.reason);
    assert_eq!(d.runs, 2);
}
