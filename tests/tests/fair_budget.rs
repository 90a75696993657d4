//! Issue 14, a fair budget, in one real session on a copy of the real trainer (tiny config)
//! under a FLOPs budget and two guards:
//! 1. doubling the width is not free: its runs train fewer tokens for the same FLOPs (each run's
//!    recorded `flops` is the budget, within one step), and the decision is recorded;
//! 2. a real improvement (the learning rate) that also holds a 256 MiB buffer passes the metric
//!    test but is rejected as `guard:peak_mem_bytes`;
//! 3. the same improvement with the block applied three times (the same weights, so the same
//!    parameter count and charged FLOPs, three times the compute) is rejected, its flops_per_s
//!    (charged FLOPs per second) guard failing far outside the bound: compute a parameter count cannot see is caught by
//!    the speed guard.
//!
//! `ledger verify` then recomputes every decision and guard.

use agentloop::testing::{CannedReply, ScriptedServer};
use agentloop_guardrails::process::{Decision as ProcessRecord, Verdict};
use agentloop_ledger::payload::{Arm, DecisionOutcome, RunResult};
use agentloop_ledger::EventKind;
use agentloop_tests::replies::{self, block};
use agentloop_tests::{check, TargetOptions, TargetRepo};

agentloop_tests::e2e_paths!();
const BUDGET_FLOPS: f64 = 1.0e9;

/// A scripted reply with a fixed rationale.
fn reply(description: &str, blocks: &str) -> CannedReply {
    replies::reply(description, "scripted.", blocks)
}

fn metric(r: &RunResult, key: &str) -> f64 {
    r.metrics[key]
        .as_f64()
        .unwrap_or_else(|| panic!("run lacks {key}: {}", r.metrics))
}

#[test]
fn flops_budget_charges_width_and_guards_reject_memory_and_hidden_compute() {
    let opts = TargetOptions {
        run_budget: format!("{BUDGET_FLOPS:e}flops"),
        decision: "min_baseline_seeds = 3\nmin_replays = 1\n\
                   confirm = { looks = [{ pairs = 3, alpha = 0.01 }, { pairs = 6, alpha = 0.015 }], futility_t = 0.0 }\n\
                   [decision.guards]\n\
                   peak_mem_bytes = { max_ratio = 1.10 }\n\
                   flops_per_s = { min_ratio = 0.90 }\n"
            .into(),
        ..TargetOptions::default()
    };
    let repo = TargetRepo::create(&opts).unwrap();
    let (config, train, model) = (
        "trainer/config/default.toml",
        "trainer/recipe/src/train.rs",
        "trainer/recipe/src/model.rs",
    );
    let lr = format!(
        "{}{}",
        block(config, "lr = 0.0001", "lr = 0.01"),
        block(config, "embed_lr = 0.0001", "embed_lr = 0.01")
    );
    let hog = format!(
        "{lr}{}{}",
        block(
            train,
            "    cfg: Config,\n}",
            "    cfg: Config,\n    _scratch: Tensor,\n}"
        ),
        block(
            train,
            "        cfg: cfg.clone(),\n    }))",
            "        cfg: cfg.clone(),\n        _scratch: Tensor::ones(1usize << 26, DType::F32, device)?,\n    }))"
        )
    );
    let repeat = format!(
        "{lr}{}",
        block(
            model,
            "        for block in &self.blocks {",
            "        for block in self.blocks.iter().chain(&self.blocks).chain(&self.blocks) {"
        )
    );
    let server = ScriptedServer::start([
        reply(
            "double the width",
            &block(config, "width = 32", "width = 64"),
        ),
        reply("raise the learning rate, keep a scratch buffer", &hog),
        reply(
            "raise the learning rate, apply the block three times",
            &repeat,
        ),
    ])
    .unwrap();
    let events = repo
        .start_scripted(BIN.as_ref(), &target_dir(), &server.openai_base_url(), 3)
        .unwrap();
    let timeline = || agentloop_tests::timeline(&events);
    let summary = check::consistent(&repo, "main").unwrap();
    repo.verify_with_cli(BIN.as_ref(), &target_dir()).unwrap();
    let order = agentloop_tests::change_order(&events);
    assert_eq!(order.len(), 3, "{}", timeline());
    let runs = |id: Option<&str>| -> Vec<RunResult> {
        events
            .iter()
            .filter(|e| e.kind == EventKind::RunResult && e.change.as_deref() == id)
            .map(|e| e.payload_as::<RunResult>().unwrap())
            .filter(|r| r.metrics.get("flops").is_some() && r.stage.as_str() != "smoke")
            .collect()
    };

    // 1. Width: every full run spends the budget (to within one step of 8 x 32 tokens); the
    // wider model's runs do so on fewer tokens, at the formula's FLOPs per token.
    let trunk_runs = runs(None);
    let wide_runs: Vec<RunResult> = runs(Some(&order[0]))
        .into_iter()
        .filter(|r| r.arm == Arm::Candidate)
        .collect();
    assert!(
        !trunk_runs.is_empty() && !wide_runs.is_empty(),
        "{}",
        timeline()
    );
    for r in trunk_runs.iter().chain(&wide_runs) {
        let (flops, per_token) = (metric(r, "flops"), metric(r, "flops_per_token"));
        assert!(
            flops >= BUDGET_FLOPS && flops - 256.0 * per_token < BUDGET_FLOPS,
            "{flops} FLOPs at {per_token}/token for a {BUDGET_FLOPS:e} budget"
        );
    }
    // Tiny config (depth 1, seq_len 32, vocab 257): 6 * (matmul params) + 12 * width * 32.
    let per_token = |w: f64| 6.0 * (12.0 * w * w + 257.0 * w) + 12.0 * w * 32.0;
    assert_eq!(metric(&trunk_runs[0], "flops_per_token"), per_token(32.0));
    assert_eq!(metric(&wide_runs[0], "flops_per_token"), per_token(64.0));
    let max_wide = wide_runs
        .iter()
        .map(|r| metric(r, "tokens"))
        .fold(0.0, f64::max);
    let min_trunk = trunk_runs
        .iter()
        .map(|r| metric(r, "tokens"))
        .fold(f64::INFINITY, f64::min);
    assert!(
        max_wide * 2.5 < min_trunk,
        "the wider model trained {max_wide} tokens, the trunk {min_trunk}"
    );
    assert!(summary.decisions.contains_key(&order[0]), "{}", timeline());

    // 2 and 3: the metric test accepted, a guard rejected, with its measured ratio recorded.
    // The reason names the first failed guard in key order: for 3 that may be peak_mem_bytes
    // too (three blocks' activations held for the backward pass are ~11 % more memory on this
    // tiny model), so 3 asserts that the flops_per_s guard failed on its own evidence.
    for (id, guard) in [(&order[1], "peak_mem_bytes"), (&order[2], "flops_per_s")] {
        let decision = &summary.decisions[id];
        let record: ProcessRecord =
            serde_json::from_value(decision.extra["process"].clone()).unwrap();
        assert_eq!(record.verdict, Verdict::Accept, "{}", timeline());
        assert_eq!(
            decision.outcome,
            DecisionOutcome::Rejected,
            "{}",
            timeline()
        );
        let reason = decision.reason.as_deref().unwrap_or("");
        // The reason names the first failed guard in key order; under load the speed guard
        // (flops_per_s, first in order) may fail as well, so each change is checked on its
        // own guard's recorded result below.
        assert!(reason.starts_with("guard:"), "{reason}\n{}", timeline());
        let results = decision.extra["guards"].as_array().unwrap();
        let result = results
            .iter()
            .find(|g| g["metric"] == guard)
            .expect("the guard's result is recorded");
        assert_eq!(result["pass"], false);
        let ratio = result["estimate"].as_f64().unwrap();
        // The measured ratio itself is beyond the bound, not only short of proving
        // non-inferiority (for memory, deterministic enough that the whole interval is).
        let low = result["interval"][0].as_f64().unwrap();
        let ok = match guard {
            "peak_mem_bytes" => ratio > 1.5 && low > 1.10,
            _ => ratio < 0.90,
        };
        assert!(ok, "{guard} ratio {ratio}: {result}");
        assert!(result["pairs"].as_array().unwrap().len() >= 3, "{result}");
    }
    assert!(summary.merged.is_empty() || summary.merged == vec![order[0].clone()]);

    // `ledger show` prints each guard's verdict.
    let (code, shown, _) = repo
        .run_agentloop(BIN.as_ref(), &target_dir(), &["ledger", "show", &order[1]])
        .unwrap();
    assert_eq!(code, 0);
    assert!(shown.contains("guard peak_mem_bytes FAIL"), "{shown}");
    // `status` counts the accepts the guards turned around.
    let (code, status, _) = repo
        .run_agentloop(BIN.as_ref(), &target_dir(), &["status"])
        .unwrap();
    assert_eq!(code, 0);
    let line = status
        .lines()
        .find(|l| l.starts_with("guards "))
        .unwrap_or_else(|| panic!("no guards line:\n{status}"));
    assert!(
        // (It names each change's first failed guard in key order: under load that can be the
        // speed guard for both; which guard failed on what evidence is asserted above.)
        line.contains("2 accept(s) turned into rejects") && line.contains("guard:"),
        "{line}"
    );
}
