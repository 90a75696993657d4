//! Holdout audits in the loop, on the toy target (whose weight-decay change helps validation
//! and hurts holdout): a gain that does not hold up is flagged, bisected and its culprit rolled
//! back; a gain that holds up is recorded `held` and nothing moves; a session killed in the
//! middle of an audit resumes without repeating a recorded audit run and ends the same way;
//! with two slots the two arms of each audit pair run side by side.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use agentloop::testing::{CannedReply, ScriptedServer};
use agentloop_ledger::{Event, EventKind};
use agentloop_tests::toy::ToyOptions;
use agentloop_tests::{check, kill_group, kinds, output, spawn_group, TargetRepo};

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

/// lr 0.1 -> 0.01 helps both splits; weight decay 0.5 -> 0.1 helps validation only.
fn overfitting() -> ToyOptions {
    ToyOptions {
        offline_values: vec![0.01],
        offline_weight_decay: vec![0.1],
        audit: "every_merges = 2\npairs = 3\n".into(),
        ..ToyOptions::default()
    }
}

fn finish(repo: &TargetRepo) {
    let out = output(repo.agentloop(BIN.as_ref(), &target_dir(), &ARGS)).unwrap();
    assert!(
        out.status.success(),
        "agentloop start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn trunk_config(repo: &TargetRepo, session: &str) -> String {
    repo.git(&["show", &format!("agentloop/{session}:config.toml")])
        .unwrap()
}

/// The main audit events (not the bisection steps).
fn audits(events: &[Event]) -> Vec<&Event> {
    kinds(events, EventKind::Audit)
        .into_iter()
        .filter(|e| e.payload.get("of_audit").is_none())
        .collect()
}

fn audit_runs(events: &[Event]) -> Vec<&Event> {
    kinds(events, EventKind::RunResult)
        .into_iter()
        .filter(|e| e.payload["stage"] == "audit")
        .collect()
}

fn description(events: &[Event], change: &str) -> String {
    events
        .iter()
        .find(|e| e.kind == EventKind::Propose && e.change.as_deref() == Some(change))
        .and_then(|e| e.payload["description"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_gain_that_fails_on_holdout_is_flagged_bisected_and_its_culprit_rolled_back() {
    let repo = TargetRepo::toy(&overfitting()).unwrap();
    finish(&repo);
    let summary = check::consistent(&repo, "main").unwrap();
    let events = repo.events().unwrap();
    assert_eq!(summary.merged.len(), 2, "{summary:?}");

    // The audit: paired runs of the reference (the base) and the trunk, all on holdout.
    let runs = audit_runs(&events);
    assert!(!runs.is_empty());
    assert!(
        runs.iter().all(|r| r.payload["split"] == "holdout"),
        "{runs:?}"
    );
    let base = events[0].payload["base_commit"].as_str().unwrap();
    let audit = audits(&events);
    assert_eq!(audit.len(), 1, "{audit:?}");
    let a = &audit[0].payload;
    assert_eq!(a["outcome"], "flagged", "{a}");
    assert_eq!(a["reference_commit"], base);
    assert_eq!(a["split"], "holdout");
    assert_eq!(a["n"], 3);
    assert_eq!(a["action"], "bisect_rollback");
    assert_eq!(a["rule"]["every_merges"], 2);
    assert!(a["mean_diff"].as_f64().unwrap() < a["claimed_gain"].as_f64().unwrap() * 0.5);
    assert_eq!(a["changes"], serde_json::json!(summary.merged));
    let before_audit: Vec<&Event> = runs
        .iter()
        .copied()
        .filter(|r| r.seq < audit[0].seq)
        .collect();
    assert_eq!(before_audit.len(), 6, "3 pairs, each arm once");
    let arms: BTreeSet<(&str, &str)> = before_audit
        .iter()
        .map(|r| {
            (
                r.payload["arm"].as_str().unwrap(),
                r.payload["commit"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(arms.contains(&("baseline", base)), "{arms:?}");

    // The bisection over the two merges probes the first one (its own holdout runs).
    let probes: Vec<&Event> = kinds(&events, EventKind::Audit)
        .into_iter()
        .filter(|e| e.payload["of_audit"] == 1)
        .collect();
    assert_eq!(probes.len(), 1, "{probes:?}");
    assert_eq!(probes[0].payload["bisect"]["index"], 0);
    let probe_runs = runs.iter().filter(|r| r.payload["probe"] == 0).count();
    assert_eq!(probe_runs, 3, "the probed commit runs on the audit's seeds");

    // The culprit is the weight-decay change, rolled back by the audit.
    let rollbacks = kinds(&events, EventKind::Rollback);
    assert_eq!(rollbacks.len(), 1);
    let culprit = rollbacks[0].change.clone().unwrap();
    assert!(
        description(&events, &culprit).contains("weight_decay"),
        "{}",
        description(&events, &culprit)
    );
    assert_eq!(rollbacks[0].payload["audit"], 1);
    assert!(rollbacks[0].payload["reason"]
        .as_str()
        .unwrap()
        .contains("holdout audit 1 flagged"));
    assert!(probes[0].seq < rollbacks[0].seq && audit[0].seq < probes[0].seq);
    // Then the trunk is re-measured before anything else builds on it.
    let revert = rollbacks[0].payload["revert_commit"].as_str().unwrap();
    assert!(kinds(&events, EventKind::Calibration)
        .iter()
        .any(|c| c.seq > rollbacks[0].seq && c.payload["trunk_commit"] == revert));

    let config = trunk_config(&repo, &summary.session);
    assert!(config.contains("lr = 0.01\n"), "{config}");
    assert!(
        config.contains("weight_decay = 0.5\n"),
        "culprit reverted:\n{config}"
    );
    // The ledger, its views and the git trailers verify.
    repo.verify_with_cli(BIN.as_ref(), &target_dir()).unwrap();
}

#[test]
fn gains_that_hold_up_on_holdout_are_recorded_held_and_nothing_is_rolled_back() {
    let repo = TargetRepo::toy(&ToyOptions {
        offline_values: vec![0.03, 0.01],
        audit: "every_merges = 2\npairs = 3\n".into(),
        ..ToyOptions::default()
    })
    .unwrap();
    finish(&repo);
    let summary = check::consistent(&repo, "main").unwrap();
    let events = repo.events().unwrap();
    assert_eq!(summary.merged.len(), 2, "{summary:?}");
    let audit = audits(&events);
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].payload["outcome"], "held", "{}", audit[0].payload);
    assert_eq!(audit[0].payload["action"], "none");
    assert!(kinds(&events, EventKind::Rollback).is_empty());
    assert_eq!(audit_runs(&events).len(), 6);
    assert!(trunk_config(&repo, &summary.session).contains("lr = 0.01\n"));
}

#[test]
fn with_two_slots_each_audit_pair_runs_side_by_side() {
    // Runs of 0.3 s, so two at once overlap measurably.
    let repo = TargetRepo::toy(&ToyOptions {
        offline_values: vec![0.03, 0.01],
        audit: "every_merges = 2\npairs = 3\n".into(),
        executor: "[executor]\nslots = 2\n".into(),
        run_sleep_s: 0.3,
        ..ToyOptions::default()
    })
    .unwrap();
    // One change at a time, so the two merges the audit waits for come in order.
    let mut args = ARGS.to_vec();
    args.extend(["--workers", "1"]);
    let (code, _, err) = repo
        .run_agentloop(BIN.as_ref(), &target_dir(), &args)
        .unwrap();
    assert_eq!(code, 0, "agentloop start failed: {err}");
    let events = repo.events().unwrap();
    assert_eq!(audits(&events).len(), 1);
    let runs = audit_runs(&events);
    assert_eq!(runs.len(), 6, "three pairs");
    let interval = |e: &Event| {
        let end = chrono::DateTime::parse_from_rfc3339(&e.ts)
            .unwrap()
            .timestamp_millis() as f64
            / 1000.0;
        (end - e.payload["wall_s"].as_f64().unwrap(), end)
    };
    for seed in runs.iter().map(|e| e.payload["seed"].as_u64().unwrap()) {
        let arms: Vec<&&Event> = runs
            .iter()
            .filter(|e| e.payload["seed"].as_u64() == Some(seed))
            .collect();
        assert_eq!(arms.len(), 2, "one run per arm for seed {seed}");
        assert_eq!(arms[0].payload["arm"], "baseline", "recorded in arm order");
        assert_ne!(
            arms[0].payload["worker"], arms[1].payload["worker"],
            "each arm on its own slot"
        );
        let ((a0, a1), (b0, b1)) = (interval(arms[0]), interval(arms[1]));
        assert!(
            a0 < b1 - 0.05 && b0 < a1 - 0.05,
            "seed {seed}: the arms ran one after the other: {:?} {:?}",
            (a0, a1),
            (b0, b1)
        );
    }
    repo.verify_with_cli(BIN.as_ref(), &target_dir()).unwrap();
}

fn reply(description: &str, blocks: &[(&str, &str)]) -> CannedReply {
    let mut text = format!("DESCRIPTION: {description}\nRATIONALE: closer to the optimum.\n");
    for (search, replace) in blocks {
        text.push_str(&format!(
            "\nconfig.toml\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"
        ));
    }
    CannedReply::openai_chat(&text, 100, 40)
}

#[test]
fn a_culprit_whose_revert_conflicts_is_recorded_flagged_and_the_session_goes_on() {
    let repo = TargetRepo::toy(&ToyOptions {
        audit: "every_merges = 3\npairs = 3\n".into(),
        ..ToyOptions::default()
    })
    .unwrap();
    // B overfits validation; C improves lr and rewrites B's line, so B cannot be reverted alone.
    let server = ScriptedServer::start([
        reply("lr 0.1 -> 0.03", &[("lr = 0.1", "lr = 0.03")]),
        reply(
            "weight decay 0.5 -> 0.1",
            &[("weight_decay = 0.5", "weight_decay = 0.1")],
        ),
        reply(
            "lr 0.03 -> 0.01",
            &[
                ("lr = 0.03", "lr = 0.01"),
                ("weight_decay = 0.1", "weight_decay = 0.10"),
            ],
        ),
    ])
    .unwrap();
    let url = server.openai_base_url();
    let (code, _, err) = repo
        .run_agentloop(
            BIN.as_ref(),
            &target_dir(),
            &[
                "start",
                "--budget",
                "5m",
                "--max-changes",
                "3",
                "--agent",
                "openai",
                "--model",
                "m",
                "--base-url",
                &url,
            ],
        )
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let summary = check::consistent(&repo, "main").unwrap();
    assert_eq!(summary.merged.len(), 3, "{summary:?}");
    let events = repo.events().unwrap();
    assert_eq!(audits(&events)[0].payload["outcome"], "flagged");
    let steps: Vec<&Event> = kinds(&events, EventKind::Audit)
        .into_iter()
        .filter(|e| e.payload["of_audit"] == 1)
        .collect();
    // Probes of the prefixes [A, B] (fails) and [A] (holds) point at B.
    let probed: Vec<u64> = steps
        .iter()
        .filter_map(|e| e.payload["bisect"]["index"].as_u64())
        .collect();
    assert_eq!(probed, [1, 0], "{steps:?}");
    let resolution = steps.last().unwrap();
    let p = &resolution.payload;
    assert_eq!(p["resolution"], "rollback_refused", "{p}");
    assert_eq!(p["outcome"], "flagged");
    assert_eq!(p["culprit"], summary.merged[1]);
    let reason = p["reason"].as_str().unwrap();
    assert!(
        reason.contains("conflicts") && reason.contains(&summary.merged[2]),
        "{reason}"
    );
    assert!(kinds(&events, EventKind::Rollback).is_empty());
    let end = events.last().unwrap();
    assert_eq!(end.kind, EventKind::SessionEnd);
    assert_eq!(end.payload["reason"], "max_changes");
}

#[test]
fn audits_are_off_with_every_merges_zero() {
    let repo = TargetRepo::toy(&ToyOptions {
        audit: "every_merges = 0\n".into(),
        ..overfitting()
    })
    .unwrap();
    finish(&repo);
    let summary = check::consistent(&repo, "main").unwrap();
    let events = repo.events().unwrap();
    assert_eq!(summary.merged.len(), 2);
    assert!(kinds(&events, EventKind::Audit).is_empty());
    assert!(audit_runs(&events).is_empty());
}

/// Waits until `pred` holds for the ledger's events, then SIGKILLs the whole group.
fn kill_when(repo: &TargetRepo, pred: impl Fn(&[Event]) -> bool) -> usize {
    let mut cmd = repo.agentloop(BIN.as_ref(), &target_dir(), &ARGS);
    // Slow motion: the kill lands right after the event that made `pred` true.
    cmd.env("AGENTLOOP_PAUSE_AFTER_EVENT_MS", "150");
    let mut child = spawn_group(cmd).unwrap();
    let start = Instant::now();
    loop {
        let events = repo.events().unwrap_or_default();
        if pred(&events) {
            kill_group(&mut child);
            return events.len();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the session ended before the kill point"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "never reached the kill point"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_kill_during_an_audit_resumes_without_repeating_recorded_audit_runs() {
    let reference = TargetRepo::toy(&overfitting()).unwrap();
    finish(&reference);
    let ref_events = reference.events().unwrap();
    let ref_runs = audit_runs(&ref_events).len();
    let ref_culprit = kinds(&ref_events, EventKind::Rollback)[0]
        .change
        .clone()
        .unwrap();
    let ref_culprit = description(&ref_events, &ref_culprit);

    type Point = fn(&[Event]) -> bool;
    let points: [(&str, Point); 3] = [
        ("after the third audit run", |e| audit_runs(e).len() >= 3),
        ("after the audit event", |e| !audits(e).is_empty()),
        ("after the bisection probe", |e| {
            kinds(e, EventKind::Audit)
                .iter()
                .any(|a| a.payload.get("of_audit").is_some())
        }),
    ];
    for (name, point) in points {
        let repo = TargetRepo::toy(&overfitting()).unwrap();
        let at_kill = kill_when(&repo, point);
        let killed = repo.events().unwrap();
        assert_eq!(
            killed.len(),
            at_kill,
            "{name}: nothing was written after the kill"
        );
        assert!(kinds(&killed, EventKind::SessionEnd).is_empty());
        let recorded_before: BTreeSet<i64> = audit_runs(&killed).iter().map(|e| e.seq).collect();
        finish(&repo);

        let summary = check::consistent(&repo, "main").unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let events = repo.events().unwrap();
        let runs = audit_runs(&events);
        let keys: Vec<(String, u64)> = runs
            .iter()
            .map(|r| {
                (
                    r.payload["commit"].as_str().unwrap().to_string(),
                    r.payload["seed"].as_u64().unwrap(),
                )
            })
            .collect();
        let unique: BTreeSet<&(String, u64)> = keys.iter().collect();
        assert_eq!(
            unique.len(),
            keys.len(),
            "{name}: an audit run was repeated: {keys:?}"
        );
        assert_eq!(
            runs.len(),
            ref_runs,
            "{name}: as many audit runs as without a kill"
        );
        assert!(recorded_before
            .iter()
            .all(|s| runs.iter().any(|r| r.seq == *s)));
        let audit = audits(&events);
        assert_eq!(audit.len(), 1, "{name}: the merges were audited once");
        assert_eq!(audit[0].payload["outcome"], "flagged");
        let rollbacks = kinds(&events, EventKind::Rollback);
        assert_eq!(rollbacks.len(), 1, "{name}");
        let culprit = description(&events, rollbacks[0].change.as_deref().unwrap());
        assert_eq!(culprit, ref_culprit, "{name}");
        assert!(
            trunk_config(&repo, &summary.session).contains("weight_decay = 0.5\n"),
            "{name}"
        );
    }
}

#[test]
fn with_two_workers_an_audit_runs_alone_between_changes() {
    let repo = TargetRepo::toy(&overfitting()).unwrap();
    let mut args = ARGS.to_vec();
    args.extend(["--workers", "2"]);
    let (code, _, err) = repo
        .run_agentloop(BIN.as_ref(), &target_dir(), &args)
        .unwrap();
    assert_eq!(code, 0, "agentloop start failed: {err}");
    check::consistent(&repo, "main").unwrap();
    let events = repo.events().unwrap();
    let audit = audits(&events);
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].payload["outcome"], "flagged");
    let rollbacks = kinds(&events, EventKind::Rollback);
    assert_eq!(rollbacks.len(), 1, "the culprit is rolled back");
    assert!(description(&events, rollbacks[0].change.as_deref().unwrap()).contains("weight_decay"));
    // From the first holdout run to the rollback nothing of any change happens: the workers
    // held back new changes and the ones in flight had settled.
    let first = audit_runs(&events)[0].seq;
    let between: Vec<&Event> = events
        .iter()
        .filter(|e| e.seq > first && e.seq < rollbacks[0].seq && e.change.is_some())
        .collect();
    assert!(
        between.is_empty(),
        "change events during the audit: {between:?}"
    );
    repo.verify_with_cli(BIN.as_ref(), &target_dir()).unwrap();
}
