//! `agentloop simulate`: replays the exact decision code on synthetic noise and prints the
//! table (false accepts on null patches, power, runs per decision).

use std::path::Path;

use agentloop_guardrails::simulate::{run as simulate, SimConfig};
use agentloop_guardrails::target::TargetSpec;
use anyhow::Result;

use crate::cli::SimulateArgs;
use crate::orchestrator::workspace::Workspace;

pub fn run(repo: Option<&Path>, args: &SimulateArgs) -> Result<i32> {
    // The target's own rule (with its `[decision]` overrides) when there is one.
    let rule = Workspace::open(repo)
        .ok()
        .and_then(|ws| TargetSpec::load(&ws.root).ok())
        .map(|t| t.decision)
        .unwrap_or_default();
    if !(0.0..1.0).contains(&args.rho) {
        anyhow::bail!("--rho {} must be in [0, 1)", args.rho);
    }
    let mut config = SimConfig::at_rho(args.trials, args.rho);
    config.seed = args.seed;
    config.trunk_moves = !args.fixed_trunk;
    let report = simulate(&config, &rule);
    println!("{}", report.render_table());
    Ok(0)
}
