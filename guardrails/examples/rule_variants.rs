//! The README's variant table ("Why not keep-if-lower?"): rule v3's paired screen and looks
//! with other settings, each a `[decision]` configuration, against fixed-seed greedy. Session
//! simulation (default target's noise, 1,000 sessions of 500 runs) and the per-decision
//! simulation (false accepts on null changes, power at 0.002 bpb, over all four noise
//! scenarios).
//!
//! `cargo run --release -p agentloop-guardrails --example rule_variants -- [sessions] [trials] [mix] [rho]`

use agentloop_guardrails::decision::{ConfirmRule, DecisionRule, Look, ScreenRule};
use agentloop_guardrails::simulate::{run, run_sessions, EffectMix, SessionSimConfig, SimConfig};

fn variant(
    screen: (f64, f64, f64, usize),
    looks: &[(usize, f64)],
    futility_t: f64,
) -> DecisionRule {
    let (effect_sd, alpha, beta, max_runs) = screen;
    DecisionRule {
        screen: ScreenRule::Paired {
            effect_sd,
            alpha,
            beta,
            max_runs,
        },
        confirm: Some(ConfirmRule {
            looks: looks
                .iter()
                .map(|&(pairs, alpha)| Look { pairs, alpha })
                .collect(),
            futility_t,
        }),
        ..DecisionRule::default()
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let sessions: usize = args.next().map_or(1000, |a| a.parse().expect("sessions"));
    let trials: usize = args.next().map_or(2000, |a| a.parse().expect("trials"));
    let mix = args.next().unwrap_or_else(|| "issue".into());
    let mut config =
        SessionSimConfig::default_target(sessions, EffectMix::preset(&mix).expect("a preset mix"));
    if let Some(rho) = args.next() {
        config.rho = rho.parse().expect("rho");
    }
    let v3_looks = [(3, 0.002), (6, 0.005), (16, 0.018)];
    let short_looks = [(3, 0.002), (6, 0.005), (10, 0.018)];
    let variants = [
        (
            "v3 default: screen H1 1.2 sd, a 0.1, b 0.05, <= 6; looks 3/6/16",
            DecisionRule::default(),
        ),
        ("screen b 0.2", variant((1.2, 0.1, 0.2, 6), &v3_looks, 0.0)),
        (
            "screen H1 2 sd, b 0.1; looks 3/6/10",
            variant((2.0, 0.1, 0.1, 6), &short_looks, 0.0),
        ),
        (
            "screen H1 4 sd, a 0.2, b 0.1, <= 4",
            variant((4.0, 0.2, 0.1, 4), &v3_looks, 0.0),
        ),
        (
            "screen H1 4 sd, a 0.2, b 0.1, <= 4; looks 3/6/10, futility t <= 1",
            variant((4.0, 0.2, 0.1, 4), &short_looks, 1.0),
        ),
    ];
    let greedy = run_sessions(&config, &[DecisionRule::greedy(false)]);
    let g = &greedy.rows[0];
    println!("mix {mix}, rho {}, {sessions} sessions of {} runs; per decision: {trials} trials per cell\n", config.rho, config.budget_runs);
    println!("| rule | runs / decision | merges | false merges | harmful merges | true gain | runs per null decision | null false accepts (worst scenario) | power at 0.002 (worst scenario) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    println!("| greedy (fixed seed) | {:.2} | {:.1} | {:.1} | {:.2} | {:.4} | 1 | (no test) | (no test) |", g.runs_per_decision, g.merges, g.false_merges, g.harmful_merges, g.true_gain);
    for (name, rule) in &variants {
        let s = run_sessions(&config, std::slice::from_ref(rule));
        let r = &s.rows[0];
        let mut per = SimConfig::at_rho(trials, config.rho);
        per.effects = vec![0.0];
        let p = run(&per, rule);
        let nulls = p.rows.iter().filter(|r| r.effect_paired_sd == 0.0);
        let worst_fa = nulls.clone().map(|r| r.accept_rate).fold(0.0, f64::max);
        let null_runs = p.rows[0].runs_per_decision;
        let power = p
            .rows
            .iter()
            .filter(|r| r.effect_metric > 0.0)
            .map(|r| r.accept_rate_without_crashes)
            .fold(1.0, f64::min);
        println!(
            "| {name} | {:.2} | {:.1} | {:.2} | {:.3} | {:.4} | {null_runs:.2} | {:.2} % (alpha {:.1} %) | {power:.2} |",
            r.runs_per_decision, r.merges, r.false_merges, r.harmful_merges, r.true_gain,
            100.0 * worst_fa, 100.0 * rule.false_accept_bound()
        );
    }
}
