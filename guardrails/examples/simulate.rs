//! Prints the simulation table for the default decision rule.
//!
//! `cargo run --release -p agentloop-guardrails --example simulate -- [trials] [rho] [screen_reject_below_sd]`
//!
//! A third argument switches to the v1 single-run screen with that threshold.

use agentloop_guardrails::decision::{DecisionRule, ScreenRule};
use agentloop_guardrails::simulate::{run, SimConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let trials = args
        .next()
        .map_or(20_000, |a| a.parse().expect("trials must be an integer"));
    let mut config = SimConfig::standard(trials);
    if let Some(rho) = args.next() {
        config.rho = rho.parse().expect("rho must be a number in [0, 1]");
    }
    let mut rule = DecisionRule::default();
    if let Some(screen) = args.next() {
        rule.screen_reject_below_sd = screen.parse().expect("screen threshold must be a number");
        rule.screen = ScreenRule::Single;
    }
    let start = std::time::Instant::now();
    let report = run(&config, &rule);
    println!("{}", report.render_table());
    eprintln!(
        "{} decisions in {:.1} s",
        trials * report.rows.len(),
        start.elapsed().as_secs_f64()
    );
}
