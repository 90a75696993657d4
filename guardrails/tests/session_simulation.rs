//! The fast session simulation: whole sessions under a run budget, the greedy rules ("keep if
//! lower", as the popular loop does) against the default rule, on the same proposals and the
//! default target's noise, through the same decision code the loop runs.

use agentloop_guardrails::decision::{
    DecisionRule, RULE_VERSION, RULE_VERSION_GREEDY, RULE_VERSION_GREEDY_FRESH,
};
use agentloop_guardrails::simulate::{run_sessions, EffectMix, SessionSimConfig};

#[test]
fn the_default_rule_makes_far_fewer_false_and_harmful_merges_and_claims_what_it_merged() {
    let mix = EffectMix::preset("issue").unwrap();
    let mut config = SessionSimConfig::default_target(150, mix);
    config.budget_runs = 300;
    let rules = [
        DecisionRule::greedy(false),
        DecisionRule::greedy(true),
        DecisionRule::default(),
    ];
    let report = run_sessions(&config, &rules);
    let table = report.render_table();
    println!("{table}");
    let greedy = report.row(RULE_VERSION_GREEDY).unwrap();
    let fresh = report.row(RULE_VERSION_GREEDY_FRESH).unwrap();
    let v3 = report.row(RULE_VERSION).unwrap();

    // Greedy decides after one run and keeps about half of what does nothing.
    // (Runs per decision include the calibration: one run for greedy.)
    assert!(greedy.runs_per_decision < 1.01, "{table}");
    assert!(greedy.false_merges >= 10.0, "{table}");
    assert!(greedy.harmful_merges >= 0.5, "{table}");
    // The default rule: fewer false merges by far more than a factor of ten, and harmful ones
    // far rarer still.
    assert!(v3.false_merges * 10.0 < greedy.false_merges, "{table}");
    assert!(v3.harmful_merges * 20.0 < greedy.harmful_merges, "{table}");
    assert!(v3.true_gain > 0.0 && v3.sessions_worse < 0.02, "{table}");

    // Selection inflation: what greedy measured exceeds what it merged, on one seed and one
    // validation set; every false merge claimed a gain. Fresh seeds make it far worse.
    assert!(greedy.measured_gain > greedy.true_gain * 1.02, "{table}");
    assert!(greedy.false_claimed > 0.0, "{table}");
    assert!(
        fresh.measured_gain > 0.02 && fresh.true_gain < 0.005,
        "{table}"
    );
    // The default rule's claim is within a quarter of what it merged.
    assert!(v3.measured_gain < v3.true_gain * 1.25, "{table}");
}

/// What decides the contest is how much a change's effect depends on the seed. With none
/// (every change shifts every seed alike), one fixed seed is a perfect pairing and greedy's
/// volume wins; with the per-seed spread measured on the default target, greedy keeps the
/// changes that suit its one seed, and in a stream of mostly null proposals it ends lower.
#[test]
fn greedy_wins_only_while_changes_do_not_depend_on_the_seed() {
    let run = |interaction_sd: f64| {
        let mut config =
            SessionSimConfig::default_target(150, EffectMix::preset("mostly-null").unwrap());
        config.budget_runs = 300;
        config.interaction_sd = interaction_sd;
        let report = run_sessions(
            &config,
            &[DecisionRule::greedy(false), DecisionRule::default()],
        );
        let table = report.render_table();
        let greedy = report.row(RULE_VERSION_GREEDY).unwrap().clone();
        let v3 = report.row(RULE_VERSION).unwrap().clone();
        (greedy, v3, table)
    };
    let (greedy, v3, table) = run(0.0);
    assert!(greedy.true_gain > 2.0 * v3.true_gain, "{table}");

    let measured = SessionSimConfig::default_target(1, EffectMix::preset("issue").unwrap());
    let (greedy, v3, table) = run(measured.interaction_sd);
    assert!(v3.true_gain > 0.0 && v3.sessions_worse < 0.02, "{table}");
    assert!(greedy.true_gain < v3.true_gain, "{table}");
    assert!(greedy.sessions_worse > 0.2, "{table}");
    assert!(v3.harmful_merges * 10.0 < greedy.harmful_merges, "{table}");
}
