//! The renamed-macro attack of issue 18 through the real loop: a scripted OpenAI-compatible
//! agent sends patches to an editable Rust file that read the validation data at compile time
//! under another name. The policy refuses each before anything is built, and the ledger
//! records them as policy-rejected with the construct named.

use agentloop::testing::{CannedReply, ScriptedServer};
use agentloop_ledger::payload::DecisionOutcome;
use agentloop_tests::toy::ToyOptions;
use agentloop_tests::{check, output, TargetRepo};

agentloop_tests::e2e_paths!();

const MODEL: &str = "pub fn width() -> usize {\n    64\n}\n";

fn reply(description: &str, search: &str, replace: &str) -> CannedReply {
    CannedReply::openai_chat(
        &format!(
            "DESCRIPTION: {description}\nRATIONALE: a better prior.\n\n\
             model.rs\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"
        ),
        900,
        120,
    )
}

#[test]
fn renamed_compile_time_macros_are_policy_rejected_by_the_loop() {
    let repo = TargetRepo::toy(&ToyOptions::default()).unwrap();
    // The toy target with an editable Rust file, as a Rust target's model file would be.
    let toml = std::fs::read_to_string(repo.root.join("agentloop.toml")).unwrap();
    let toml = toml.replace(
        "editable = [\"config.toml\"]",
        "editable = [\"config.toml\", \"model.rs\"]",
    );
    std::fs::write(repo.root.join("agentloop.toml"), toml).unwrap();
    std::fs::write(repo.root.join("model.rs"), MODEL).unwrap();
    std::fs::write(repo.root.join("val.txt"), "the validation split\n").unwrap();
    repo.git(&["add", "-A"]).unwrap();
    repo.git(&["commit", "-qm", "an editable Rust file"])
        .unwrap();

    let first = "pub fn width() -> usize {";
    let server = ScriptedServer::start([
        reply(
            "embed a prior",
            first,
            &format!("use std::include_str as embed_text;\nconst PRIOR: &str = embed_text!(\"val.txt\");\n{first}"),
        ),
        reply(
            "embed a prior through a helper macro",
            first,
            &format!(
                "macro_rules! call {{ ($m:ident, $p:literal) => {{ $m!($p) }}; }}\n\
                 const PRIOR: &str = call!(include_str, \"val.txt\");\n{first}"
            ),
        ),
    ])
    .unwrap();
    let out = output(repo.agentloop(
        BIN.as_ref(),
        &target_dir(),
        &[
            "start",
            "--budget",
            "10m",
            "--max-changes",
            "2",
            "--agent",
            "openai",
            "--model",
            "scripted",
            "--base-url",
            &server.openai_base_url(),
        ],
    ))
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "agentloop failed:\n{stderr}");

    let summary = check::consistent(&repo, "main").unwrap();
    let mut decisions: Vec<_> = summary.decisions.values().collect();
    decisions.sort_by_key(|d| d.reason.clone());
    assert_eq!(decisions.len(), 2, "{decisions:#?}");
    for d in &decisions {
        assert_eq!(d.outcome, DecisionOutcome::PolicyRejected, "{d:#?}");
    }
    let reasons: Vec<String> = decisions
        .iter()
        .map(|d| d.reason.clone().unwrap_or_default())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("forbidden_construct")
            && r.contains("model.rs")
            && r.contains("include_str")),
        "{reasons:#?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("macro_rules")),
        "{reasons:#?}"
    );
    // Nothing was built for them and nothing merged; the record verifies.
    assert!(summary.merged.is_empty());
    let builds = repo
        .events()
        .unwrap()
        .iter()
        .filter(|e| e.kind.to_string() == "build" && e.change.is_some())
        .count();
    assert_eq!(builds, 0);
    repo.verify_with_cli(BIN.as_ref(), &target_dir()).unwrap();
}
