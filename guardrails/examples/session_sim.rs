//! Prints the session simulation for one effect mix (all rules), for quick exploration.
//!
//! `cargo run --release -p agentloop-guardrails --example session_sim -- [sessions] [mix] [budget] [val_sd] [rho]`

use agentloop_guardrails::decision::DecisionRule;
use agentloop_guardrails::simulate::{run_sessions, EffectMix, SessionSimConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let sessions = args.next().map_or(1000, |a| a.parse().expect("sessions"));
    let mix = args.next().unwrap_or_else(|| "issue".into());
    let mix = EffectMix::preset(&mix).expect("a preset mix");
    let mut config = SessionSimConfig::default_target(sessions, mix);
    if let Some(b) = args.next() {
        config.budget_runs = b.parse().expect("budget");
    }
    if let Some(v) = args.next() {
        config.val_sd = v.parse().expect("val_sd");
    }
    if let Some(r) = args.next() {
        config.rho = r.parse().expect("rho");
    }
    let rules = [
        DecisionRule::greedy(false),
        DecisionRule::greedy(true),
        DecisionRule::default(),
    ];
    let t = std::time::Instant::now();
    let report = run_sessions(&config, &rules);
    println!("{}", report.render_table());
    eprintln!("{:.1} s", t.elapsed().as_secs_f64());
}
