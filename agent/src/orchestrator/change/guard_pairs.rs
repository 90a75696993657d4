//! The pairs a decision ran side by side (trunk and candidate on one seed, same stage), read
//! from the change's recorded runs, as the guards' inputs (`agentloop_guardrails::guards`).

use agentloop_guardrails::guards::{evaluate, Guard, GuardPair, GuardResult};
use agentloop_ledger::payload::{Arm, RunResult};

use crate::orchestrator::runs::value_of;

/// Each guard tested on the change's side-by-side pairs: every successful candidate run with a
/// successful trunk run of the same stage and seed, in the order they were recorded.
pub(super) fn guard_results(guards: &[Guard], runs: &[RunResult]) -> Vec<GuardResult> {
    let pairs: Vec<(&RunResult, &RunResult)> = runs
        .iter()
        .filter(|c| c.arm == Arm::Candidate && value_of(c).is_some())
        .filter_map(|c| {
            runs.iter()
                .find(|b| {
                    b.arm == Arm::Baseline
                        && b.stage == c.stage
                        && b.seed == c.seed
                        && value_of(b).is_some()
                })
                .map(|b| (b, c))
        })
        .collect();
    guards
        .iter()
        .map(|g| {
            let value = |r: &RunResult| r.metrics.get(&g.metric).and_then(|v| v.as_f64());
            let values = pairs
                .iter()
                .map(|(b, c)| GuardPair {
                    seed: c.seed,
                    trunk: value(b),
                    candidate: value(c),
                })
                .collect();
            evaluate(g, values)
        })
        .collect()
}
