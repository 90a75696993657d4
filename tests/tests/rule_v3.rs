//! Rule v3 in a real session on a copy of the real trainer (tiny config): a real improvement
//! is merged, and its screening runs become the new trunk's cached runs; then a comment-only
//! change is rejected on those cached runs with at most 4 training runs, read from the ledger,
//! and `ledger verify` recomputes both v3 decisions.

use agentloop::testing::{CannedReply, ScriptedServer};
use agentloop_guardrails::process::Decision as ProcessRecord;
use agentloop_ledger::payload::DecisionOutcome;
use agentloop_ledger::EventKind;
use agentloop_tests::replies::{self, block};
use agentloop_tests::{check, TargetOptions, TargetRepo};

agentloop_tests::e2e_paths!();

/// A scripted reply with a fixed rationale.
fn reply(description: &str, blocks: &str) -> CannedReply {
    replies::reply(description, "scripted.", blocks)
}

#[test]
fn after_a_merge_a_comment_only_change_is_rejected_on_the_new_trunks_cached_runs() {
    // Rule v3 with its default screen and minimum effect; three calibration seeds (the common
    // seeds) and shorter looks keep the session short.
    let opts = TargetOptions {
        decision: "min_baseline_seeds = 3\nmin_replays = 1\n\
                   confirm = { looks = [{ pairs = 3, alpha = 0.01 }, { pairs = 6, alpha = 0.015 }], futility_t = 0.0 }\n"
            .into(),
        ..TargetOptions::default()
    };
    let repo = TargetRepo::create(&opts).unwrap();
    let config = "trainer/config/default.toml";
    let first_line = std::fs::read_to_string(repo.root.join(config))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let good = format!(
        "{}{}",
        block(config, "lr = 0.0001", "lr = 0.01"),
        block(config, "embed_lr = 0.0001", "embed_lr = 0.01")
    );
    let server = ScriptedServer::start([
        reply("raise the learning rate to 1e-2", &good),
        reply(
            "reword the config's first comment",
            &block(config, &first_line, &format!("{first_line} (reworded)")),
        ),
    ])
    .unwrap();
    let events = repo
        .start_scripted(BIN.as_ref(), &target_dir(), &server.openai_base_url(), 2)
        .unwrap();
    let timeline = || agentloop_tests::timeline(&events);
    let summary = check::consistent(&repo, "main").unwrap();
    repo.verify_with_cli(BIN.as_ref(), &target_dir()).unwrap();
    let order = agentloop_tests::change_order(&events);
    assert_eq!(order.len(), 2, "{}", timeline());
    let record = |id: &str| -> ProcessRecord {
        serde_json::from_value(summary.decisions[id].extra["process"].clone()).unwrap()
    };
    let (merged, null) = (record(&order[0]), record(&order[1]));
    assert_eq!(
        summary.decisions[&order[0]].outcome,
        DecisionOutcome::Accepted,
        "{}",
        timeline()
    );
    assert_eq!(summary.merged, vec![order[0].clone()]);
    assert_eq!(merged.rule_version, "paired-sequential/v3");

    // The comment-only change: rejected, screened against the merged change's own runs.
    assert_eq!(
        summary.decisions[&order[1]].outcome,
        DecisionOutcome::Rejected,
        "{}",
        timeline()
    );
    let common = null
        .common
        .as_ref()
        .expect("a v3 decision records its common control");
    for (seed, value) in merged.common_runs() {
        assert_eq!(
            common.value(seed),
            Some(value),
            "seed {seed}: the new trunk's cached run is the merged change's screening run"
        );
    }
    let runs = events
        .iter()
        .filter(|e| e.kind == EventKind::RunResult && e.change.as_deref() == Some(&order[1]))
        .count();
    assert!(
        runs <= 4,
        "{runs} training runs for a comment-only change (smoke included):\n{}",
        timeline()
    );
    assert!(null.trunk_fills().is_empty(), "no trunk run was needed");
}
