//! `agentloop simulate`: replays the exact decision code on synthetic noise and prints the
//! table (false accepts on null patches, power, runs per decision).

use std::path::Path;

use agentloop_guardrails::decision::DecisionRule;
use agentloop_guardrails::simulate::{
    run as simulate, run_sessions, EffectMix, SessionSimConfig, SimConfig,
};
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
    if args.session {
        return session(args, &rule);
    }
    let mut config = SimConfig::at_rho(args.trials, args.rho);
    config.seed = args.seed;
    config.trunk_moves = !args.fixed_trunk;
    let report = simulate(&config, &rule);
    println!("{}", report.render_table());
    Ok(0)
}

/// `--session`: whole sessions under a run budget, greedy against the target's own rule (the
/// default rule unless `[decision]` picks a greedy one, then the default rule).
fn session(args: &SimulateArgs, rule: &DecisionRule) -> Result<i32> {
    let Some(mix) = EffectMix::preset(&args.mix) else {
        anyhow::bail!(
            "--mix {:?} is not a preset: {}",
            args.mix,
            EffectMix::PRESETS.join(", ")
        );
    };
    if args.sessions == 0 || args.budget_runs == 0 {
        anyhow::bail!("--sessions and --budget-runs must be at least 1");
    }
    let mut config = SessionSimConfig::default_target(args.sessions, mix);
    config.rho = args.rho;
    config.seed = args.seed;
    config.budget_runs = args.budget_runs;
    if let Some(v) = args.val_sd {
        if !(v.is_finite() && v >= 0.0) {
            anyhow::bail!("--val-sd {v} must be a number >= 0");
        }
        config.val_sd = v;
    }
    if let Some(v) = args.interaction_sd {
        if !(v.is_finite() && v >= 0.0) {
            anyhow::bail!("--interaction-sd {v} must be a number >= 0");
        }
        config.interaction_sd = v;
    }
    let rigorous = if rule.is_greedy() {
        DecisionRule::default()
    } else {
        rule.clone()
    };
    let rules = [
        DecisionRule::greedy(false),
        DecisionRule::greedy(true),
        rigorous,
    ];
    println!("{}", run_sessions(&config, &rules).render_table());
    Ok(0)
}
