//! Crash injection: the orchestrator is SIGKILLed (its whole process group) at many points
//! spread over every stage; after each kill `agentloop start` resumes the session, and the
//! ledger, the trunk and the worktrees must agree, with no decision lost or made twice.

use std::collections::BTreeSet;
use std::time::Duration;

use agentloop_tests::toy::ToyOptions;
use agentloop_tests::{check, kill_group, output, spawn_group, wait_for_events, TargetRepo};

agentloop_tests::e2e_paths!();
const ARGS: [&str; 7] = [
    "start",
    "--budget",
    "10m",
    "--max-changes",
    "3",
    "--agent",
    "offline",
];

fn finish(repo: &TargetRepo) {
    let out = output(repo.agentloop(BIN.as_ref(), &target_dir(), &ARGS)).unwrap();
    assert!(
        out.status.success(),
        "resume failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The toy's metric is lowest at lr = 0.01, one of the three values offered: whatever the
/// order of proposals, correct decisions leave exactly that value on the trunk.
fn assert_best_lr(repo: &TargetRepo, summary: &check::Summary) {
    let config = repo
        .git(&[
            "show",
            &format!("agentloop/{}:config.toml", summary.session),
        ])
        .unwrap();
    assert!(
        config.contains("lr = 0.01\n"),
        "trunk config:\n{config}\n{summary:?}"
    );
}

#[test]
fn sigkill_at_any_point_then_resume_loses_and_repeats_nothing() {
    // An uninterrupted session tells how many events a whole session has.
    let reference = TargetRepo::toy(&ToyOptions::default()).unwrap();
    finish(&reference);
    let expected = check::consistent(&reference, "main").unwrap();
    assert_eq!(expected.decisions.len(), 3, "{expected:?}");
    assert_best_lr(&reference, &expected);
    let total = reference.events().unwrap().len();
    assert!(total > 30, "a session has {total} events");

    // Every one of the first events (session start, calibration, the first change's steps),
    // then points spread evenly over the rest of the session.
    let mut points: Vec<usize> = (1..=10).collect();
    let spread = 14;
    points.extend((0..spread).map(|i| 11 + i * (total - 12) / (spread - 1)));
    let mut killed_after = BTreeSet::new();
    for (t, &kill_at) in points.iter().enumerate() {
        let repo = TargetRepo::toy(&ToyOptions::default()).unwrap();
        let mut cmd = repo.agentloop(BIN.as_ref(), &target_dir(), &ARGS);
        // Slow motion: the kill lands right after event `kill_at`, not a few events later.
        cmd.env("AGENTLOOP_PAUSE_AFTER_EVENT_MS", "40");
        let mut child = spawn_group(cmd).unwrap();
        let seen = wait_for_events(&repo, &mut child, kill_at, Duration::from_secs(60)).unwrap();
        kill_group(&mut child);
        let events = repo.events().unwrap();
        if let Some(last) = events.last() {
            killed_after.insert(last.kind.to_string());
        }
        if t % 3 == 1 {
            // A second kill, during the resumed session.
            let mut child =
                spawn_group(repo.agentloop(BIN.as_ref(), &target_dir(), &ARGS)).unwrap();
            wait_for_events(&repo, &mut child, seen + 4, Duration::from_secs(60)).unwrap();
            kill_group(&mut child);
        }
        // Unless the second run got to the end before its kill, `start` resumes and finishes.
        let ended = repo.events().unwrap().last().map(|e| e.kind.to_string());
        if ended.as_deref() != Some("session_end") {
            finish(&repo);
        }
        let summary = check::consistent(&repo, "main")
            .unwrap_or_else(|e| panic!("trial {t} (killed after event {seen}): {e:#}"));
        assert_eq!(
            summary.decisions.len(),
            3,
            "trial {t}: every change decided exactly once: {summary:?}"
        );
        assert_best_lr(&repo, &summary);
    }
    // The kills landed after every kind of step the loop takes.
    for kind in [
        "session_start",
        "calibration",
        "propose",
        "policy",
        "build",
        "run_result",
        "decision",
    ] {
        assert!(
            killed_after.contains(kind),
            "no kill after a {kind} event: {killed_after:?}"
        );
    }
    assert!(
        killed_after.contains("merge") || killed_after.contains("discard"),
        "no kill after a merge or discard: {killed_after:?}"
    );
}

#[test]
fn ctrl_c_stops_cleanly_records_what_was_in_flight_and_resumes() {
    let repo = TargetRepo::toy(&ToyOptions::default()).unwrap();
    let mut child = spawn_group(repo.agentloop(BIN.as_ref(), &target_dir(), &ARGS)).unwrap();
    // Past calibration, into the first change.
    wait_for_events(&repo, &mut child, 12, Duration::from_secs(60)).unwrap();
    let pid = child.id() as i32;
    let _ = std::process::Command::new("kill")
        .args(["-INT", "--", &format!("-{pid}")])
        .status();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "Ctrl-C exits 130");
    let events = repo.events().unwrap();
    let end = events.last().unwrap();
    assert_eq!(end.kind.to_string(), "session_end");
    assert_eq!(end.payload["reason"], "interrupted");
    let budget = &events[events.len() - 2];
    assert_eq!(budget.kind.to_string(), "budget");
    assert_eq!(budget.payload["reason"], "interrupted");
    assert_eq!(budget.payload["in_flight"], 1, "{:?}", budget.payload);
    assert!(budget.payload["change"].is_string() && budget.payload["stage"].is_string());

    // `start` again resumes the same session and finishes it.
    finish(&repo);
    let summary = check::consistent(&repo, "main").unwrap();
    assert_eq!(summary.decisions.len(), 3);
}
