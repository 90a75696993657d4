//! The fast version of the simulation proof (guardrails/SIMULATION.md has the full tables),
//! replaying the exact decision process the loop uses on a trunk that moves.

use agentloop_guardrails::decision::{DecisionRule, RULE_VERSION_V2};
use agentloop_guardrails::simulate::{run, SimConfig, GAIN_OF_INTEREST};

#[test]
fn default_rule_keeps_alpha_and_finds_a_gain_of_0_002_bpb_on_the_default_targets_noise() {
    let rule = DecisionRule::default();
    let mut config = SimConfig::standard(2_000);
    config.effects = vec![0.0, -1.0];
    let report = run(&config, &rule);
    let table = report.render_table();
    println!("{table}");
    assert!(
        report.false_accept_ok(),
        "false accepts above alpha:\n{table}"
    );
    assert!(
        report.power_failures().is_empty(),
        "power below 0.8:\n{table}"
    );
    let interest = report
        .rows
        .iter()
        .filter(|r| (r.effect_metric - GAIN_OF_INTEREST).abs() < 1e-12)
        .count();
    assert_eq!(
        interest, 4,
        "0.002 bpb is checked in every scenario:\n{table}"
    );
    for row in &report.rows {
        if row.effect_paired_sd == 0.0 {
            assert!(row.runs_per_decision <= 7.5, "null cost:\n{table}");
        }
        if row.effect_paired_sd < 0.0 {
            assert!(
                row.runs_per_decision <= 2.5,
                "harmful-change cost:\n{table}"
            );
        }
    }
}

#[test]
fn a_moving_trunk_costs_v2_its_screen_but_not_v3() {
    let mut config = SimConfig::at_rho(400, 0.5);
    config.effects = vec![0.0];
    config.metric_effects.clear();
    config.scenarios.truncate(1);
    let v3 = run(&config, &DecisionRule::default());
    let v2 = run(&config, &DecisionRule::defaults_for(RULE_VERSION_V2));
    let (v3_runs, v2_runs) = (v3.null_runs()[0].1, v2.null_runs()[0].1);
    assert!(
        v3_runs * 2.5 < v2_runs,
        "v3 {v3_runs} vs v2 {v2_runs} runs per null decision:\n{}\n{}",
        v3.render_table(),
        v2.render_table()
    );
    // On a fixed trunk v2's screen works, so the harness shows the stale baseline, not a bug.
    config.trunk_moves = false;
    let v2_fixed = run(&config, &DecisionRule::defaults_for(RULE_VERSION_V2));
    assert!(v2_fixed.null_runs()[0].1 * 2.0 < v2_runs);
    assert!(v3.false_accept_ok() && v2.false_accept_ok());
}

#[test]
fn the_simulation_is_reproducible_and_sensitive_to_the_rule() {
    let mut config = SimConfig::standard(300);
    config.effects = vec![0.0];
    config.metric_effects.clear();
    config.scenarios.truncate(1);
    let rule = DecisionRule::default();
    assert_eq!(run(&config, &rule), run(&config, &rule));
    // A permissive rule (no screen, one look at 2 pairs and p < 0.5, no minimum effect) must
    // fail the bound: the harness can detect a bad rule.
    let mut loose = DecisionRule {
        screen_enabled: false,
        min_effect: Some(agentloop_guardrails::decision::MinEffect::Absolute(0.0)),
        ..DecisionRule::default()
    };
    loose.confirm.as_mut().unwrap().looks = vec![agentloop_guardrails::decision::Look {
        pairs: 2,
        alpha: 0.5,
    }];
    let report = run(&config, &loose);
    assert!(
        !report.false_accept_within(rule.false_accept_bound()),
        "{}",
        report.render_table()
    );
    assert!(report.rows[0].accept_rate > 0.4);
}
