//! `agentloop start` shows its progress as plain lines when stdout is not a terminal, and
//! `agentloop report` / `status --json` describe the session the ledger recorded.

use agentloop_ledger::payload::DecisionOutcome;
use agentloop_tests::toy::ToyOptions;
use agentloop_tests::{offline_start, TargetRepo};

agentloop_tests::e2e_paths!();

fn run(repo: &TargetRepo, args: &[&str]) -> (i32, String, String) {
    repo.run_agentloop(BIN.as_ref(), &target_dir(), args)
        .unwrap()
}

#[test]
fn progress_lines_then_a_report_of_what_the_ledger_holds() {
    let repo = TargetRepo::toy(&ToyOptions::default()).unwrap();
    let (code, out, err) = run(&repo, &offline_start("3"));
    assert_eq!(code, 0, "{err}");
    let ledger = repo.ledger().unwrap();
    let changes = ledger.changes(None).unwrap();
    assert!(!changes.is_empty(), "{err}");

    // Plain progress lines on a pipe: budget, the change at its stage, the counts.
    let progress: Vec<&str> = out.lines().filter(|l| l.starts_with('[')).collect();
    assert!(progress.len() >= 3, "{out}");
    assert!(
        progress
            .iter()
            .any(|l| l.contains(&format!("{} at ", changes[0].change_id))),
        "{out}"
    );
    assert!(progress.iter().any(|l| l.contains(" accepted, ")), "{out}");

    let (code, out, err) = run(&repo, &["report"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("warning"),
        "the ledger verifies, trailers included: {out}"
    );
    let html_path = out
        .lines()
        .find_map(|l| l.strip_prefix("report: "))
        .expect("report path printed");
    let html = std::fs::read_to_string(html_path).unwrap();
    for c in &changes {
        assert!(
            html.contains(&format!("data-change=\"{}\"", c.change_id)),
            "{}",
            c.change_id
        );
    }
    assert!(html.contains("<svg"), "the chart is inline");
    let dir = std::path::Path::new(html_path).parent().unwrap();
    assert!(dir.join("chart.png").is_file() && dir.join("chart.svg").is_file());

    let (code, out, _) = run(&repo, &["status", "--json"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let decided = |o: DecisionOutcome| {
        changes
            .iter()
            .filter(|c| {
                ledger.decisions(&c.change_id).unwrap().iter().any(|d| {
                    serde_json::to_value(o).unwrap() == serde_json::Value::String(d.outcome.clone())
                })
            })
            .count()
    };
    assert_eq!(status["proposed"], changes.len());
    assert_eq!(status["accepted"], decided(DecisionOutcome::Accepted));
    assert_eq!(status["rejected"], decided(DecisionOutcome::Rejected));
    assert_eq!(status["state"], "ended");
}
