//! The trunk's common control for rule v3, derived from the ledger alone (so a resumed session
//! and `ledger verify` see the same values): calibration's baseline seeds, and the trunk's
//! recorded run on each of them.
//!
//! Where a trunk's cached runs come from, in order:
//! 1. the calibration of that very commit (its baseline runs);
//! 2. otherwise, when the commit is a merge, the merged change's screening runs on those seeds
//!    (the merge commit has the candidate's tree: the same program on the same seeds);
//! 3. trunk runs any change made on that commit to fill a missing seed (stage `screen`, arm
//!    `baseline`); `exclude` leaves out one change's own fills, so a resumed decision asks for
//!    the same runs it asked for before the kill.

use agentloop_guardrails::decision::Calibration as NoiseCalibration;
use agentloop_guardrails::process::{CommonControl, Decision as ProcessRecord};
use agentloop_ledger::payload::{Arm, Stage};

use super::history::SessionHistory;
use super::runs::value_of;

pub fn for_trunk(
    history: &SessionHistory,
    commit: &str,
    noise: &NoiseCalibration,
    exclude: Option<&str>,
) -> CommonControl {
    let seeds: Vec<u64> = noise.baseline.iter().map(|(s, _)| *s).collect();
    let mut cached: Vec<(u64, f64)> = Vec::new();
    let mut add = |seed: u64, value: f64| {
        if seeds.contains(&seed) && !cached.iter().any(|(s, _)| *s == seed) && value.is_finite() {
            cached.push((seed, value));
        }
    };
    let calibrated_here = history
        .calibrations
        .iter()
        .rev()
        .find(|(_, c)| c.trunk_commit == commit);
    if let Some((_, c)) = calibrated_here {
        for sv in &c.baseline {
            add(sv.seed, sv.value);
        }
    } else if let Some(merged) = history
        .changes
        .iter()
        .rev()
        .find(|c| matches!(&c.merge, Some((_, m)) if m.commit == commit))
    {
        let record = merged
            .decision
            .as_ref()
            .and_then(|(_, d)| d.extra.get("process"))
            .and_then(|p| serde_json::from_value::<ProcessRecord>(p.clone()).ok());
        for (seed, value) in record.map(|d| d.common_runs()).unwrap_or_default() {
            add(seed, value);
        }
    }
    for change in history
        .changes
        .iter()
        .filter(|c| Some(c.id.as_str()) != exclude)
    {
        for r in change
            .runs
            .iter()
            .filter(|r| r.stage == Stage::Screen && r.arm == Arm::Baseline && r.commit == commit)
        {
            if let Some(v) = value_of(r) {
                add(r.seed, v);
            }
        }
    }
    // In the order of the seeds, so the record reads the way the screen uses them.
    cached.sort_by_key(|(s, _)| seeds.iter().position(|x| x == s));
    CommonControl { seeds, cached }
}
