//! A realistic session written with the real ledger API and its typed payloads: changes that end
//! accepted, rejected, crashed, policy-rejected, rolled back (after a flagged audit) and
//! build-failed, with calibrations, paired runs, decisions, merges, budget and session end.
#![allow(dead_code)]

use agentloop_ledger::payload::*;
use agentloop_ledger::{Ledger, NewEvent};
use serde_json::{json, Map, Value};

pub const SESSION: &str = "s20260102-0130";
pub const ACCEPTED: &str = "c1a0001";
pub const REJECTED: &str = "c2b0002";
pub const CRASHED: &str = "c3c0003";
pub const POLICY_REJECTED: &str = "c4d0004";
pub const ROLLED_BACK: &str = "c5e0005";
pub const BUILD_FAILED: &str = "c6f0006";
/// Written into a description to check the report escapes what the agent wrote.
pub const HOSTILE: &str = "<script>window.__pwned=1</script>";

pub struct Writer<'a> {
    pub ledger: &'a Ledger,
    pub session: String,
}

impl Writer<'_> {
    pub fn put<P: EventPayload>(&self, change: Option<&str>, payload: &P) -> i64 {
        let event =
            NewEvent::typed(self.session.clone(), change.map(str::to_string), payload).unwrap();
        self.ledger.append(event).unwrap().seq
    }

    pub fn start(&self, budget_s: f64) {
        self.put(
            None,
            &SessionStart {
                budget_s,
                repo: "/srv/target".into(),
                trunk_branch: format!("agentloop/{}", self.session),
                base_commit: "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0".into(),
                target_sha256: None,
                agent: AgentInfo {
                    kind: "llm".into(),
                    model: Some("claude-test".into()),
                    extra: Map::new(),
                },
                rule: json!({"version": "two-stage/1"}),
                extra: Map::new(),
            },
        );
    }

    /// Ten baseline seeds around `level`, each recorded as a run, then the calibration.
    pub fn calibrate(&self, commit: &str, level: f64) {
        let offsets = [-2.0, -1.0, 0.0, 1.0, 2.0, -1.5, 1.5, -0.5, 0.5, 0.0];
        let mut baseline = Vec::new();
        for (i, o) in offsets.iter().enumerate() {
            let value = level + o * 0.001;
            self.run(
                None,
                Arm::Baseline,
                Stage::Calibration,
                100 + i as u64,
                Some(value),
                10.0,
            );
            baseline.push(SeedValue {
                seed: 100 + i as u64,
                value,
            });
        }
        self.put(
            None,
            &Calibration {
                trunk_commit: commit.into(),
                baseline,
                replays: vec![SeedReplays {
                    seed: 100,
                    values: vec![level - 0.002, level - 0.0019],
                }],
                run_sd: 0.0013,
                paired_sd: Some(0.0009),
                nondeterminism_floor: Some(0.0001),
                min_effect: 0.0013,
                extra: Map::new(),
            },
        );
    }

    /// A training run; `value` None means it crashed.
    pub fn run(
        &self,
        change: Option<&str>,
        arm: Arm,
        stage: Stage,
        seed: u64,
        value: Option<f64>,
        wall_s: f64,
    ) {
        let metrics = match value {
            Some(v) => json!({"val_bpb": v, "train_loss": 2.1, "tokens": 60000, "steps": 50,
                              "wall_s": wall_s, "tokens_per_s": 6000.0,
                              "peak_mem_bytes": 1_500_000_000u64, "params": 1_000_000, "status": "ok"}),
            None => Value::Null,
        };
        self.put(
            change,
            &RunResult {
                arm,
                stage,
                commit: if arm == Arm::Baseline {
                    "b0b0b0b".into()
                } else {
                    "cafe123".into()
                },
                seed,
                split: "val".into(),
                budget: Some("60000tokens".into()),
                metrics,
                metric: Some("val_bpb".into()),
                exit_status: if value.is_some() {
                    ExitStatus::Ok
                } else {
                    ExitStatus::Crashed
                },
                exit_code: Some(if value.is_some() { 0 } else { 1 }),
                wall_s: Some(wall_s),
                log_sha256: Some("cd".repeat(32)),
                worker: Some("w0".into()),
                extra: Map::new(),
            },
        );
    }

    pub fn propose(&self, change: &str, description: &str, attempt: u32) {
        self.put(
            Some(change),
            &Propose {
                description: description.into(),
                rationale: format!("Rationale for {change}: {description} should lower val_bpb."),
                patch: format!(
                    "--- a/trainer/src/optim.rs\n+++ b/trainer/src/optim.rs\n@@ -1 +1 @@\n-let lr = 3e-4; // {change}\n+let lr = 6e-4; // {change}\n"
                ),
                patch_format: "unified".into(),
                prompt_template_sha256: Some("ab".repeat(32)),
                model: Some("claude-test".into()),
                provider: Some("anthropic".into()),
                prompt_tokens: Some(1200),
                completion_tokens: Some(300),
                cost_usd: Some(0.012),
                retest_of: None,
                parent_commit: Some("b0b0b0b".into()),
                attempt: Some(attempt),
                extra: Map::new(),
            },
        );
    }

    pub fn policy(&self, change: &str, ok: bool) {
        self.put(
            Some(change),
            &Policy {
                outcome: if ok {
                    PolicyOutcome::Accepted
                } else {
                    PolicyOutcome::Rejected
                },
                code: (!ok).then(|| "frozen_path".into()),
                message: (!ok).then(|| "trainer/src/eval.rs is frozen".into()),
                extra: Map::new(),
            },
        );
    }

    pub fn build(&self, change: &str, ok: bool, attempt: u32) {
        self.put(
            Some(change),
            &Build {
                commit: Some("cafe123".into()),
                ok,
                attempt: Some(attempt),
                duration_s: Some(40.0),
                log_tail: (!ok).then(|| "error[E0308]: mismatched types".into()),
                log_sha256: None,
                extra: Map::new(),
            },
        );
    }

    /// A paired-test decision in the decision engine's convention: `mean_diff` is the gain,
    /// trunk minus candidate.
    pub fn decide(
        &self,
        change: &str,
        outcome: DecisionOutcome,
        base: f64,
        cand: f64,
        ci: Option<(f64, f64)>,
        p: Option<f64>,
    ) {
        let tested = p.is_some();
        self.put(
            Some(change),
            &Decision {
                outcome,
                stage: Some(if tested { Stage::Confirm } else { Stage::Smoke }),
                test: tested.then(|| "paired_t_one_sided".into()),
                n: tested.then_some(6),
                mean_baseline: tested.then_some(base),
                mean_candidate: tested.then_some(cand),
                mean_diff: tested.then_some(base - cand),
                sd_diff: tested.then_some(0.002),
                ci_low: ci.map(|c| c.0),
                ci_high: ci.map(|c| c.1),
                p_value: p,
                thresholds: json!({"stages": [{"pairs": 3, "p": 0.2}, {"pairs": 6, "p": 0.05}]}),
                min_effect: Some(0.0013),
                rule_version: "two-stage/1".into(),
                reason: Some(format!("{outcome:?} by the two-stage rule")),
                extra: Map::new(),
            },
        );
    }

    pub fn merge(&self, change: &str) -> i64 {
        self.put(
            Some(change),
            &Merge {
                commit: format!("{change}00000000000000000000000000000000"),
                trunk_branch: format!("agentloop/{}", self.session),
                ledger_head: None,
                extra: Map::new(),
            },
        )
    }

    pub fn discard(&self, change: &str) {
        self.put(
            Some(change),
            &Discard {
                kept_ref: Some(format!("refs/agentloop/rejected/{}/{change}", self.session)),
                superseded_by: None,
                extra: Map::new(),
            },
        );
    }

    /// Three pairs: baseline and candidate on the same seeds.
    pub fn pairs(&self, change: &str, base: f64, cand: f64) {
        for seed in [7u64, 8, 9] {
            self.run(
                Some(change),
                Arm::Baseline,
                Stage::Confirm,
                seed,
                Some(base),
                12.0,
            );
            self.run(
                Some(change),
                Arm::Candidate,
                Stage::Confirm,
                seed,
                Some(cand),
                12.0,
            );
        }
    }
}

/// Writes the whole session; returns the writer's session name.
pub fn populate(ledger: &Ledger) -> String {
    let w = Writer {
        ledger,
        session: SESSION.into(),
    };
    w.start(8.0 * 3600.0);
    w.calibrate("b0b0b0b", 1.500);

    w.propose(ACCEPTED, "raise the learning rate to 6e-4", 1);
    w.policy(ACCEPTED, true);
    w.build(ACCEPTED, true, 1);
    w.pairs(ACCEPTED, 1.500, 1.490);
    w.decide(
        ACCEPTED,
        DecisionOutcome::Accepted,
        1.500,
        1.490,
        Some((0.006, 0.014)),
        Some(0.001),
    );
    w.merge(ACCEPTED);

    w.propose(REJECTED, &format!("wider MLP {HOSTILE}"), 1);
    w.policy(REJECTED, true);
    w.build(REJECTED, true, 1);
    w.pairs(REJECTED, 1.490, 1.4905);
    w.decide(
        REJECTED,
        DecisionOutcome::Rejected,
        1.490,
        1.4905,
        Some((-0.003, 0.002)),
        Some(0.62),
    );
    w.discard(REJECTED);

    w.propose(CRASHED, "fused attention without a backward pass", 1);
    w.policy(CRASHED, true);
    w.build(CRASHED, true, 1);
    w.run(Some(CRASHED), Arm::Candidate, Stage::Smoke, 11, None, 3.0);
    w.decide(CRASHED, DecisionOutcome::Crashed, 0.0, 0.0, None, None);
    w.discard(CRASHED);

    w.propose(POLICY_REJECTED, "evaluate on fewer bytes", 1);
    w.policy(POLICY_REJECTED, false);
    w.decide(
        POLICY_REJECTED,
        DecisionOutcome::PolicyRejected,
        0.0,
        0.0,
        None,
        None,
    );
    w.discard(POLICY_REJECTED);

    w.propose(ROLLED_BACK, "cosine schedule with warmup", 1);
    w.policy(ROLLED_BACK, true);
    w.build(ROLLED_BACK, true, 1);
    w.pairs(ROLLED_BACK, 1.490, 1.486);
    w.decide(
        ROLLED_BACK,
        DecisionOutcome::Accepted,
        1.490,
        1.486,
        Some((0.001, 0.007)),
        Some(0.03),
    );
    let merge_seq = w.merge(ROLLED_BACK);

    w.put(
        None,
        &Audit {
            trunk_commit: format!("{ROLLED_BACK}00000000000000000000000000000000"),
            reference_commit: Some("b0b0b0b".into()),
            split: Some("holdout".into()),
            n: Some(6),
            mean_diff: Some(-0.001),
            p_value: Some(0.7),
            outcome: "flagged".into(),
            extra: Map::new(),
        },
    );
    w.put(
        Some(ROLLED_BACK),
        &Rollback {
            reverted_commit: format!("{ROLLED_BACK}00000000000000000000000000000000"),
            revert_commit: "d00d00d00d00d00d00d00d00d00d00d00d00d00d".into(),
            original_merge_seq: Some(merge_seq),
            reason: "holdout audit flagged the gain".into(),
            extra: Map::new(),
        },
    );
    w.calibrate("d00d00d", 1.491);

    w.propose(BUILD_FAILED, "switch to bf16 matmuls", 1);
    w.policy(BUILD_FAILED, true);
    w.build(BUILD_FAILED, false, 1);
    w.propose(BUILD_FAILED, "switch to bf16 matmuls (fixed types)", 2);
    w.build(BUILD_FAILED, false, 2);
    w.decide(
        BUILD_FAILED,
        DecisionOutcome::BuildFailed,
        0.0,
        0.0,
        None,
        None,
    );
    w.discard(BUILD_FAILED);

    w.put(
        None,
        &Budget {
            spent_s: 1800.0,
            remaining_s: 27000.0,
            in_flight: 0,
            resumed: false,
            extra: Map::new(),
        },
    );
    w.put(
        None,
        &SessionEnd {
            reason: "max_changes".into(),
            accepted: 1,
            rejected: 1,
            crashed: 1,
            extra: Map::new(),
        },
    );
    SESSION.into()
}

/// A long night: `n` changes after calibration, mostly rejected, some accepted, crashed or
/// policy-rejected, an audit every 10 accepts. Deterministic (no RNG): the pattern repeats.
pub fn populate_many(ledger: &Ledger, session: &str, n: usize) {
    let w = Writer {
        ledger,
        session: session.into(),
    };
    w.start(8.0 * 3600.0);
    w.calibrate("b0b0b0b", 1.500);
    let mut trunk = 1.500;
    let mut accepted = 0;
    for i in 0..n {
        let id = format!("c{:06x}", 0x100000 + i);
        w.propose(&id, &format!("idea number {i}"), 1);
        match i % 10 {
            3 => {
                w.policy(&id, false);
                w.decide(&id, DecisionOutcome::PolicyRejected, 0.0, 0.0, None, None);
            }
            7 => {
                w.policy(&id, true);
                w.build(&id, true, 1);
                w.run(Some(&id), Arm::Candidate, Stage::Smoke, i as u64, None, 2.0);
                w.decide(&id, DecisionOutcome::Crashed, 0.0, 0.0, None, None);
            }
            0 | 5 => {
                w.policy(&id, true);
                w.build(&id, true, 1);
                let cand = trunk - 0.002 - (i % 3) as f64 * 0.0005;
                w.pairs(&id, trunk, cand);
                let gain = trunk - cand;
                w.decide(
                    &id,
                    DecisionOutcome::Accepted,
                    trunk,
                    cand,
                    Some((gain - 0.0015, gain + 0.0015)),
                    Some(0.01),
                );
                w.merge(&id);
                trunk = cand;
                accepted += 1;
                if accepted % 10 == 0 {
                    w.put(
                        None,
                        &Audit {
                            trunk_commit: format!("{id}0000"),
                            reference_commit: None,
                            split: Some("holdout".into()),
                            n: Some(6),
                            mean_diff: Some(0.01),
                            p_value: Some(0.01),
                            outcome: "held".into(),
                            extra: Map::new(),
                        },
                    );
                }
                continue;
            }
            _ => {
                w.policy(&id, true);
                w.build(&id, true, 1);
                let cand = trunk + 0.001 * ((i * 7) % 5) as f64 - 0.0015;
                w.run(
                    Some(&id),
                    Arm::Candidate,
                    Stage::Screen,
                    i as u64,
                    Some(cand),
                    12.0,
                );
                w.decide(&id, DecisionOutcome::Rejected, trunk, cand, None, Some(0.5));
            }
        }
        w.discard(&id);
    }
}
