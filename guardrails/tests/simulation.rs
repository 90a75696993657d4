//! The fast version of the simulation proof: 2,000 trials per cell, replaying the exact
//! decision process the loop uses.

use agentloop_guardrails::decision::DecisionRule;
use agentloop_guardrails::simulate::{run, SimConfig};

#[test]
fn default_rule_meets_the_false_accept_bound_and_power() {
    let rule = DecisionRule::default();
    let mut config = SimConfig::standard(2_000);
    config.effects = vec![0.0, 1.5];
    let report = run(&config, &rule);
    let table = report.render_table();
    println!("{table}");
    assert!(
        report.false_accept_ok(),
        "false accepts above alpha:\n{table}"
    );
    for row in report.rows.iter().filter(|r| r.effect_paired_sd == 0.0) {
        assert!(row.accept_rate <= report.alpha);
        assert!(row.accept_upper95 <= 2.0 * report.alpha);
        assert!(row.runs_per_decision >= 1.0);
    }
    for (scenario, power) in report.power_at(1.5) {
        assert!(
            power >= 0.8,
            "power {power} < 0.8 for {scenario:?}:\n{table}"
        );
    }
}

#[test]
fn the_simulation_is_reproducible_and_sensitive_to_the_rule() {
    let mut config = SimConfig::standard(300);
    config.effects = vec![0.0];
    config.scenarios.truncate(1);
    let rule = DecisionRule::default();
    assert_eq!(run(&config, &rule), run(&config, &rule));
    // A permissive rule (one stage at p < 0.5, no minimum effect, no screen) must fail the
    // bound: the harness can detect a bad rule.
    let loose = DecisionRule {
        screen_enabled: false,
        stages: vec![agentloop_guardrails::decision::StageRule {
            pairs: 2,
            p_threshold: 0.5,
        }],
        min_effect_sd: 0.0,
        ..DecisionRule::default()
    };
    let report = run(&config, &loose);
    let alpha = rule.false_accept_bound();
    assert!(
        !report.false_accept_within(alpha),
        "{}",
        report.render_table()
    );
    assert!(report.rows[0].accept_rate > 0.4);
}
