//! End to end against a scripted OpenAI-compatible server on 127.0.0.1 replaying realistic
//! replies, on a copy of the real trainer with a tiny config: a change that fixes a bad
//! learning rate is accepted; a no-op is rejected; a malformed reply, an edit of the
//! evaluation, a patch that does not compile and one whose training diverges are each
//! rejected with the right reason; the ledger verifies; the trunk holds exactly the accepted
//! change; the user's checkout is untouched.

use agentloop::testing::{CannedReply, ScriptedServer};
use agentloop_ledger::payload::DecisionOutcome;
use agentloop_tests::replies::{block, reply};
use agentloop_tests::{check, output, TargetOptions, TargetRepo};

agentloop_tests::e2e_paths!();

/// The first line of a file that occurs exactly once in it (a safe SEARCH anchor).
fn unique_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.trim().is_empty() && text.matches(*l).count() == 1)
        .expect("a unique line")
        .to_string()
}

#[test]
fn scripted_agent_session_accepts_only_the_real_improvement() {
    let repo = TargetRepo::create(&TargetOptions::default()).unwrap();
    let config = "trainer/config/default.toml";
    let eval = std::fs::read_to_string(repo.root.join("trainer/core/src/eval.rs")).unwrap();
    let model = std::fs::read_to_string(repo.root.join("trainer/recipe/src/model.rs")).unwrap();
    let eval_anchor = unique_line(&eval);
    // Insert after a `use` line, not a `//!` doc line: the broken constant must still parse
    // (a type error the compiler reports, not a syntax error the policy refuses).
    let model_anchor = model
        .lines()
        .find(|l| l.starts_with("use ") && model.matches(*l).count() == 1)
        .expect("a unique `use` line in model.rs")
        .to_string();
    let broken = block(
        "trainer/recipe/src/model.rs",
        &model_anchor,
        &format!("{model_anchor}\nconst BROKEN: u32 = \"not a number\";"),
    );
    let good = format!(
        "{}{}",
        block(config, "lr = 0.0001", "lr = 0.01"),
        block(config, "embed_lr = 0.0001", "embed_lr = 0.01")
    );
    let diverge = format!(
        "{}{}",
        // Applies to the trunk after the first change was merged (lr already raised to 1e-2).
        block(config, "lr = 0.01", "lr = 1000.0"),
        block(config, "embed_lr = 0.01", "embed_lr = 1000.0")
    );
    let first_line = std::fs::read_to_string(repo.root.join(config))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let server = ScriptedServer::start([
        reply(
            "raise the learning rate to 1e-2",
            "1e-4 is far too low for 30 steps.",
            &good,
        ),
        reply(
            "reword the config's first comment",
            "Documentation only; should change nothing.",
            &block(config, &first_line, &format!("{first_line} (reworded)")),
        ),
        CannedReply::openai_chat("I would raise the learning rate, it seems low.", 800, 30),
        CannedReply::openai_chat("Sorry: just raise the learning rate a bit.", 800, 30),
        reply(
            "count fewer bytes in the evaluation",
            "A lower bpb, whatever it takes.",
            &block(
                "trainer/core/src/eval.rs",
                &eval_anchor,
                &format!("{eval_anchor}\n// tweaked"),
            ),
        ),
        reply("add a constant", "Harmless refactor.", &broken),
        reply("add a constant (fixed)", "Fix attempt 1.", &broken),
        reply("add a constant (fixed again)", "Fix attempt 2.", &broken),
        reply("learning rate 1000", "Go big.", &diverge),
    ])
    .unwrap();

    let out = output(repo.agentloop(
        BIN.as_ref(),
        &target_dir(),
        &[
            "start",
            "--budget",
            "20m",
            "--max-changes",
            "6",
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
    if !out.status.success() {
        let timeline: Vec<String> = repo
            .events()
            .unwrap_or_default()
            .iter()
            .map(|e| format!("{} {:?} {:?} {}", e.seq, e.kind, e.change, e.payload))
            .collect();
        panic!(
            "agentloop failed:\n{stderr}\nledger:\n{}",
            timeline.join("\n")
        );
    }

    let summary = check::consistent(&repo, "main").unwrap();
    let events = repo.events().unwrap();
    // Decisions in proposal order.
    let mut order: Vec<String> = Vec::new();
    for e in &events {
        if let Some(c) = &e.change {
            if !order.contains(c) {
                order.push(c.clone());
            }
        }
    }
    let outcomes: Vec<(DecisionOutcome, String)> = order
        .iter()
        .map(|c| {
            let d = &summary.decisions[c];
            (d.outcome, d.reason.clone().unwrap_or_default())
        })
        .collect();
    assert_eq!(outcomes.len(), 6, "{outcomes:#?}");
    assert_eq!(outcomes[0].0, DecisionOutcome::Accepted, "{outcomes:#?}");
    assert_eq!(outcomes[1].0, DecisionOutcome::Rejected, "{outcomes:#?}");
    assert_eq!(
        outcomes[2].0,
        DecisionOutcome::PolicyRejected,
        "{outcomes:#?}"
    );
    assert!(
        outcomes[2].1.starts_with("unappliable_patch"),
        "{outcomes:#?}"
    );
    assert_eq!(
        outcomes[3].0,
        DecisionOutcome::PolicyRejected,
        "{outcomes:#?}"
    );
    assert!(outcomes[3].1.contains("frozen"), "{outcomes:#?}");
    assert_eq!(outcomes[4].0, DecisionOutcome::BuildFailed, "{outcomes:#?}");
    assert_eq!(outcomes[5].0, DecisionOutcome::Crashed, "{outcomes:#?}");
    assert!(outcomes[5].1.contains("diverged"), "{outcomes:#?}");

    // The malformed reply was fed back once, with the reason.
    let requests = server.requests();
    assert_eq!(requests.len(), 9, "every scripted reply was asked for");
    let retry_prompt = requests[3].json().to_string();
    assert!(
        retry_prompt.to_lowercase().contains("could not"),
        "{retry_prompt}"
    );
    // The build failures were recorded, each attempt, with the compiler's words fed back.
    let builds: Vec<_> = events
        .iter()
        .filter(|e| e.kind.to_string() == "build" && e.change.as_deref() == Some(&order[4]))
        .collect();
    assert_eq!(builds.len(), 3, "one build per attempt");
    let fix_prompt = requests[6].json().to_string();
    assert!(
        fix_prompt.contains("BROKEN") || fix_prompt.contains("mismatched types"),
        "{fix_prompt}"
    );

    // The trunk holds exactly the accepted change.
    assert_eq!(summary.merged, vec![order[0].clone()]);
    let trunk = format!("agentloop/{}", summary.session);
    let diff = repo.git(&["diff", "--stat", "main", &trunk]).unwrap();
    assert!(
        diff.contains("trainer/config/default.toml") && diff.contains("1 file changed"),
        "{diff}"
    );
    let shown = repo.git(&["show", &format!("{trunk}:{config}")]).unwrap();
    assert!(
        shown.contains("lr = 0.01") && !shown.contains("lr = 0.0001"),
        "{shown}"
    );
}
