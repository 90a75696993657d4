//! Several workers (`--workers 2`): changes run concurrently on two local slots, decide as one
//! worker would given the same run results, never merge on a trunk they were not tested on,
//! and survive a kill.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use agentloop_ledger::payload::DecisionOutcome;
use agentloop_ledger::{Event, EventKind};
use agentloop_tests::toy::ToyOptions;
use agentloop_tests::{check, kill_group, spawn_group, wait_for_events, TargetRepo};

agentloop_tests::e2e_paths!();

/// Runs overlap measurably (0.3 s each), and a run's value depends only on the config and the
/// run's role and index, not on the session's seeds: two sessions can be compared.
fn toy(lr: Vec<f64>, weight_decay: Vec<f64>, sleep: f64) -> TargetRepo {
    TargetRepo::toy(&ToyOptions {
        offline_values: lr,
        offline_weight_decay: weight_decay,
        run_sleep_s: sleep,
        noise_by_run: true,
        ..ToyOptions::default()
    })
    .unwrap()
}

/// `agentloop start` to the end; its log (stderr).
fn start(repo: &TargetRepo, extra: &[&str]) -> String {
    let mut args = vec!["start", "--budget", "10m", "--agent", "offline"];
    args.extend_from_slice(extra);
    let (code, out, err) = repo
        .run_agentloop(BIN.as_ref(), &target_dir(), &args)
        .unwrap();
    assert_eq!(code, 0, "agentloop start failed:\n{out}\n{err}");
    err
}

fn verify(repo: &TargetRepo) {
    // It recomputes every decision.
    repo.verify_with_cli(BIN.as_ref(), &target_dir()).unwrap();
}

/// `optim.lr = 0.01` from the proposer's description `set optim.lr = 0.01 (was 0.1)`.
fn setting(description: &str) -> String {
    description
        .trim_start_matches("set ")
        .split(" (was")
        .next()
        .unwrap_or(description)
        .to_string()
}

/// Setting → outcome of every decision that counts (a superseded change's re-test decides).
fn outcomes(repo: &TargetRepo, summary: &check::Summary) -> BTreeMap<String, String> {
    let events = repo.events().unwrap();
    summary
        .decisions
        .iter()
        .map(|(change, d)| {
            let propose = events
                .iter()
                .find(|e| e.kind == EventKind::Propose && e.change.as_deref() == Some(change))
                .unwrap();
            let description = propose.payload["description"].as_str().unwrap();
            (
                setting(description),
                serde_json::to_value(d.outcome)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}

/// (change, worker, start s, end s) of every change's training run.
fn run_intervals(events: &[Event]) -> Vec<(String, String, f64, f64)> {
    events
        .iter()
        .filter(|e| e.kind == EventKind::RunResult && e.change.is_some())
        .map(|e| {
            let end = chrono::DateTime::parse_from_rfc3339(&e.ts)
                .unwrap()
                .timestamp_millis() as f64
                / 1000.0;
            let wall = e.payload["wall_s"].as_f64().unwrap();
            (
                e.change.clone().unwrap(),
                e.payload["worker"].as_str().unwrap().to_string(),
                end - wall,
                end,
            )
        })
        .collect()
}

#[test]
fn two_workers_overlap_runs_and_decide_as_one_worker_does() {
    // lr = 0.01 and weight_decay = 0.1 each help; lr = 1.0 hurts.
    let (lr, wd) = (vec![0.01, 1.0], vec![0.1]);
    let serial = toy(lr.clone(), wd.clone(), 0.3);
    start(&serial, &["--workers", "1"]);
    let parallel = toy(lr, wd, 0.3);
    start(&parallel, &["--workers", "2"]);

    let serial_summary = check::consistent(&serial, "main").unwrap();
    let parallel_summary = check::consistent(&parallel, "main").unwrap();
    let expected: BTreeMap<String, String> = [
        ("optim.lr = 0.01", "accepted"),
        ("optim.lr = 1", "rejected"),
        ("optim.weight_decay = 0.1", "accepted"),
    ]
    .iter()
    .map(|(s, o)| (s.to_string(), o.to_string()))
    .collect();
    assert_eq!(outcomes(&serial, &serial_summary), expected);
    assert_eq!(
        outcomes(&parallel, &parallel_summary),
        outcomes(&serial, &serial_summary),
        "the same settings get the same decisions with two workers"
    );

    let events = parallel.events().unwrap();
    let start = &events[0];
    assert_eq!(start.payload["workers"], 2, "{}", start.payload);
    assert!(
        start.payload["executor"]
            .as_str()
            .unwrap()
            .contains("2 CPU slot"),
        "{}",
        start.payload
    );
    let runs = run_intervals(&events);
    let workers: BTreeSet<&str> = runs.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(workers, BTreeSet::from(["local:0", "local:1"]));
    let overlapping = runs.iter().any(|a| {
        runs.iter()
            .any(|b| a.0 != b.0 && a.2 < b.3 - 0.05 && b.2 < a.3 - 0.05)
    });
    assert!(
        overlapping,
        "no two changes' runs overlapped in time: {runs:?}"
    );
    // With one worker nothing overlaps and every run is on slot 0.
    let serial_runs = run_intervals(&serial.events().unwrap());
    assert!(serial_runs.iter().all(|r| r.1 == "local:0"));
    verify(&parallel);
    verify(&serial);
}

#[test]
fn a_change_accepted_on_a_trunk_that_moved_is_retested_not_merged_blind() {
    // Two helpful settings, proposed together against the same trunk: both are accepted, the
    // first merges, the second must be tested again on the trunk that holds the first.
    let repo = toy(vec![0.01], vec![0.1], 0.3);
    start(&repo, &["--workers", "2"]);
    let summary = check::consistent(&repo, "main").unwrap();
    assert_eq!(summary.superseded.len(), 1, "{summary:?}");
    let (old, retest) = summary.superseded.iter().next().unwrap();
    let events = repo.events().unwrap();
    let old_decision = events
        .iter()
        .find(|e| e.kind == EventKind::Decision && e.change.as_deref() == Some(old))
        .unwrap();
    assert_eq!(old_decision.payload["outcome"], "accepted");
    let discard = events
        .iter()
        .find(|e| e.kind == EventKind::Discard && e.change.as_deref() == Some(old))
        .unwrap();
    assert!(
        discard.payload["reason"]
            .as_str()
            .unwrap()
            .contains("trunk moved"),
        "{}",
        discard.payload
    );
    // The re-test went through the whole decision on the new trunk, and merged on it.
    let first = &summary.merged[0];
    let first_merge = events
        .iter()
        .find(|e| e.kind == EventKind::Merge && e.change.as_deref() == Some(first))
        .unwrap();
    let new_trunk = first_merge.payload["commit"].as_str().unwrap();
    let retest_propose = events
        .iter()
        .find(|e| e.kind == EventKind::Propose && e.change.as_deref() == Some(retest))
        .unwrap();
    assert_eq!(retest_propose.payload["parent_commit"], new_trunk);
    assert_eq!(summary.decisions[retest].outcome, DecisionOutcome::Accepted);
    let baselines: BTreeSet<&str> = events
        .iter()
        .filter(|e| {
            e.kind == EventKind::RunResult
                && e.change.as_deref() == Some(retest)
                && e.payload["arm"] == "baseline"
        })
        .map(|e| e.payload["commit"].as_str().unwrap())
        .collect();
    assert_eq!(baselines, BTreeSet::from([new_trunk]));
    assert_eq!(summary.merged, vec![first.clone(), retest.clone()]);
    // Every merge's parent is the trunk at that time.
    let mut trunk = events[0].payload["base_commit"]
        .as_str()
        .unwrap()
        .to_string();
    for e in events.iter().filter(|e| e.kind == EventKind::Merge) {
        let commit = e.payload["commit"].as_str().unwrap();
        let parent = repo.git(&["rev-parse", &format!("{commit}^")]).unwrap();
        assert_eq!(parent.trim(), trunk, "merge {commit}");
        trunk = commit.to_string();
    }
    let config = repo
        .git(&[
            "show",
            &format!("agentloop/{}:config.toml", summary.session),
        ])
        .unwrap();
    assert!(
        config.contains("lr = 0.01\n") && config.contains("weight_decay = 0.1\n"),
        "{config}"
    );
    verify(&repo);
    // What a person reads: the superseded accept is not counted as a kept change.
    let (code, out, err) = repo
        .run_agentloop(BIN.as_ref(), &target_dir(), &["status", "--json"])
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            status["accepted"].as_u64(),
            status["kept"].as_u64(),
            status["superseded"].as_u64()
        ),
        (Some(2), Some(2), Some(1)),
        "{status}"
    );
    // Two workers' runs overlap, so overhead is measured against slot time (wall x 2): it
    // stays a share in (0, 1) instead of going negative and being clamped to 0.
    assert_eq!(status["workers"], 2, "{status}");
    let overhead = status["overhead_share"].as_f64().unwrap();
    assert!(overhead > 0.0 && overhead < 1.0, "{status}");
}

#[test]
fn two_workers_killed_at_any_point_resume_and_settle_every_change_once() {
    let reference = toy(vec![0.01, 1.0], vec![0.1], 0.1);
    start(&reference, &["--workers", "2"]);
    let total = reference.events().unwrap().len();
    for kill_at in [3, 8, total / 3, total / 2, 2 * total / 3] {
        let repo = toy(vec![0.01, 1.0], vec![0.1], 0.1);
        let mut child = spawn_group(repo.agentloop(
            BIN.as_ref(),
            &target_dir(),
            &[
                "start",
                "--budget",
                "10m",
                "--agent",
                "offline",
                "--workers",
                "2",
            ],
        ))
        .unwrap();
        let seen = wait_for_events(&repo, &mut child, kill_at, Duration::from_secs(60)).unwrap();
        kill_group(&mut child);
        if repo.events().unwrap().last().map(|e| e.kind) != Some(EventKind::SessionEnd) {
            // No --workers: the session keeps the two it started with.
            let log = start(&repo, &[]);
            assert!(log.contains("(2 change(s) at once)"), "{log}");
        }
        let summary = check::consistent(&repo, "main")
            .unwrap_or_else(|e| panic!("killed after event {seen}: {e:#}"));
        let got = outcomes(&repo, &summary);
        let trace: Vec<String> = repo
            .events()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} {} {:?} {}",
                    e.seq,
                    e.kind,
                    e.change,
                    e.payload
                        .get("description")
                        .or(e.payload.get("reason"))
                        .or(e.payload.get("message"))
                        .cloned()
                        .unwrap_or_default()
                )
            })
            .collect();
        let trace = trace.join("\n");
        assert_eq!(
            got.get("optim.lr = 0.01").map(String::as_str),
            Some("accepted"),
            "killed after event {seen}: {got:?}\n{trace}"
        );
        assert_eq!(
            got.get("optim.weight_decay = 0.1").map(String::as_str),
            Some("accepted"),
            "killed after event {seen}: {got:?}\n{trace}"
        );
    }
}

#[test]
fn by_default_two_slots_screen_two_changes_at_once_each_against_its_own_trunk() {
    // Rule v3 (the default rule), `[executor] slots = 2` and no --workers: a change per slot,
    // so one change's one-run-at-a-time screen runs beside another change's runs.
    let repo = TargetRepo::toy(&ToyOptions {
        offline_values: vec![0.01, 1.0],
        offline_weight_decay: vec![0.1],
        run_sleep_s: 0.3,
        noise_by_run: true,
        decision: "min_baseline_seeds = 3\nmin_replays = 1\n\
                   confirm = { looks = [{ pairs = 3, alpha = 0.01 }, { pairs = 6, alpha = 0.015 }], futility_t = 0.0 }\n"
            .into(),
        executor: "[executor]\nslots = 2\n".into(),
        ..ToyOptions::default()
    })
    .unwrap();
    start(&repo, &[]);
    let summary = check::consistent(&repo, "main").unwrap();
    let events = repo.events().unwrap();
    assert_eq!(events[0].payload["workers"], 2, "{}", events[0].payload);

    // A screening run of one change overlaps a run of another: the second slot is not idle.
    let runs = run_intervals(&events);
    let screens: Vec<&(String, String, f64, f64)> = events
        .iter()
        .filter(|e| e.kind == EventKind::RunResult && e.payload["stage"] == "screen")
        .filter_map(|e| {
            let end = chrono::DateTime::parse_from_rfc3339(&e.ts)
                .unwrap()
                .timestamp_millis() as f64
                / 1000.0;
            runs.iter()
                .find(|r| Some(&r.0) == e.change.as_ref() && (r.3 - end).abs() < 1e-6)
        })
        .collect();
    assert!(!screens.is_empty(), "no screening run: {runs:?}");
    let beside = screens.iter().any(|a| {
        runs.iter()
            .any(|b| a.0 != b.0 && a.2 < b.3 - 0.05 && b.2 < a.3 - 0.05)
    });
    assert!(
        beside,
        "no screening run overlapped another change's run: {runs:?}"
    );

    // Each decision came from its own pairs, against the trunk it was proposed on: every
    // trunk (baseline) run a change made is on its base commit, even when another change
    // merged meanwhile; an accept on a moved trunk was re-tested, not merged.
    assert_eq!(
        outcomes(&repo, &summary)
            .get("optim.lr = 1")
            .map(String::as_str),
        Some("rejected")
    );
    for change in summary.decisions.keys() {
        let base = events
            .iter()
            .find(|e| e.kind == EventKind::Propose && e.change.as_deref() == Some(change))
            .unwrap()
            .payload["parent_commit"]
            .as_str()
            .unwrap()
            .to_string();
        for e in events.iter().filter(|e| {
            e.kind == EventKind::RunResult
                && e.change.as_deref() == Some(change)
                && e.payload["arm"] == "baseline"
        }) {
            assert_eq!(e.payload["commit"], base.as_str(), "change {change}");
        }
    }
    // The case that needs care happened: a change was decided after the trunk it was
    // proposed on had moved (a merge between its proposal and its decision). Its decision
    // stands for the trunk it was tested on: a rejection, or an accept that is re-tested on the
    // new trunk (superseded), never merged.
    let seq_of = |kind: EventKind, change: &str| {
        events
            .iter()
            .find(|e| e.kind == kind && e.change.as_deref() == Some(change))
            .map(|e| e.seq)
    };
    let moved: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == EventKind::Decision)
        .filter_map(|d| d.change.as_deref())
        .filter(|change| {
            let proposed = seq_of(EventKind::Propose, change);
            let decided = seq_of(EventKind::Decision, change);
            events.iter().any(|e| {
                e.kind == EventKind::Merge && Some(e.seq) > proposed && Some(e.seq) < decided
            })
        })
        .collect();
    assert!(
        !moved.is_empty(),
        "no change was in flight across a merge: {events:?}"
    );
    for change in &moved {
        assert!(
            seq_of(EventKind::Merge, change).is_none(),
            "change {change} merged on a trunk it was not tested on"
        );
    }
    let mut trunk = events[0].payload["base_commit"]
        .as_str()
        .unwrap()
        .to_string();
    for e in events.iter().filter(|e| e.kind == EventKind::Merge) {
        let commit = e.payload["commit"].as_str().unwrap();
        let parent = repo.git(&["rev-parse", &format!("{commit}^")]).unwrap();
        assert_eq!(parent.trim(), trunk, "merge {commit}");
        let change = e.change.as_deref().unwrap();
        let base = events
            .iter()
            .find(|p| p.kind == EventKind::Propose && p.change.as_deref() == Some(change))
            .unwrap();
        assert_eq!(
            base.payload["parent_commit"],
            trunk.as_str(),
            "merged change {change} was tested on the trunk it merged onto"
        );
        trunk = commit.to_string();
    }
    // And `ledger verify` recomputes every decision, checking the trunk values each v3
    // decision took from the ledger (its common control) against the runs that recorded them.
    verify(&repo);
}
