//! Prints the simulation table for a decision rule.
//!
//! `cargo run --release -p agentloop-guardrails --example simulate -- [trials] [rho] [rule] [trunk]`
//!
//! `rule`: `v3` (the default rule), `v2` or `v1`; `trunk`: `moving` (default) or `fixed`.
//! Further `key=value` arguments override the v3 screen for exploring the trade-off:
//! `effect_sd=`, `alpha=`, `beta=`, `max_runs=`, `min_effect=`.

use agentloop_guardrails::decision::{DecisionRule, MinEffect, ScreenRule};
use agentloop_guardrails::simulate::{run, SimConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let trials = args
        .next()
        .map_or(20_000, |a| a.parse().expect("trials must be an integer"));
    let rho = args.next().map_or(0.996, |a| {
        a.parse().expect("rho must be a number in [0, 1]")
    });
    let mut config = SimConfig::at_rho(trials, rho);
    let mut rule = DecisionRule::defaults_for(match args.next().as_deref() {
        None | Some("v3") => agentloop_guardrails::decision::RULE_VERSION,
        Some("v2") => agentloop_guardrails::decision::RULE_VERSION_V2,
        Some("v1") => agentloop_guardrails::decision::RULE_VERSION_V1,
        Some(other) => panic!("unknown rule {other:?}: v3, v2 or v1"),
    });
    if let Some(trunk) = args.next() {
        config.trunk_moves = trunk != "fixed";
    }
    for kv in args {
        let (k, v) = kv.split_once('=').expect("key=value");
        if k == "looks" {
            let c = rule.confirm.as_mut().expect("a v3 rule");
            c.looks = v
                .split(',')
                .map(|l| {
                    let (p, a) = l.split_once(':').expect("pairs:alpha");
                    agentloop_guardrails::decision::Look {
                        pairs: p.parse().expect("pairs"),
                        alpha: a.parse().expect("alpha"),
                    }
                })
                .collect();
            continue;
        }
        if k == "futility" {
            rule.confirm.as_mut().expect("a v3 rule").futility_t = v.parse().expect("a number");
            continue;
        }
        if k == "deterministic" {
            config.deterministic = v == "1";
            continue;
        }
        let x: f64 = v.parse().expect("a number");
        if k == "min_effect" {
            rule.min_effect = Some(MinEffect::Absolute(x));
            continue;
        }
        if let ScreenRule::Paired {
            effect_sd,
            alpha,
            beta,
            max_runs,
        } = &mut rule.screen
        {
            match k {
                "effect_sd" => *effect_sd = x,
                "alpha" => *alpha = x,
                "beta" => *beta = x,
                "max_runs" => *max_runs = x as usize,
                other => panic!("unknown key {other}"),
            }
        }
    }
    rule.validate().expect("a valid rule");
    let start = std::time::Instant::now();
    let report = run(&config, &rule);
    println!("{}", report.render_table());
    eprintln!(
        "{} decisions in {:.1} s",
        trials * report.rows.len(),
        start.elapsed().as_secs_f64()
    );
}
