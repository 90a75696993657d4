//! Real processes against one ledger file: 8 concurrent writers, and a writer killed with
//! SIGKILL mid-write.
//!
//! This test binary has no libtest harness: `main` runs the scenarios, and re-executes itself
//! with `LEDGER_TEST_ROLE=writer` to become a writer process.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use agentloop_ledger::{EventKind, Ledger, NewEvent, VerifyOptions};
use serde_json::json;

const ROLE: &str = "LEDGER_TEST_ROLE";
const PATH: &str = "LEDGER_TEST_PATH";
const WRITER: &str = "LEDGER_TEST_WRITER";
const COUNT: &str = "LEDGER_TEST_COUNT";

fn main() {
    if std::env::var(ROLE).as_deref() == Ok("writer") {
        if let Err(e) = writer() {
            eprintln!("writer failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let scenarios: [(&str, fn()); 2] = [
        (
            "eight_writer_processes_append_8000_contiguous_events",
            eight_writers,
        ),
        (
            "a_writer_killed_mid_write_leaves_no_partial_event",
            killed_writer,
        ),
    ];
    for (name, scenario) in scenarios {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        scenario();
        println!(
            "test {name} ... ok ({:.1}s)",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Writer role. With a count, appends that many single events; without one, appends batches
/// (a proposal and four runs of a fresh change, atomically) until killed.
fn writer() -> agentloop_ledger::Result<()> {
    let path = std::env::var(PATH).expect("writer needs a ledger path");
    let id: u32 = std::env::var(WRITER)
        .expect("writer id")
        .parse()
        .expect("numeric writer id");
    let ledger = Ledger::open(&path)?;
    match std::env::var(COUNT)
        .ok()
        .and_then(|c| c.parse::<u32>().ok())
    {
        Some(count) => {
            for i in 0..count {
                ledger.append(NewEvent {
                    kind: EventKind::Budget,
                    session: format!("writer-{id}"),
                    change: None,
                    payload: json!({"spent_s": i as f64, "remaining_s": 0.0, "writer": id, "i": i}),
                })?;
            }
        }
        None => loop {
            let change = ledger.allocate_change_id()?;
            let mut batch = vec![NewEvent {
                kind: EventKind::Propose,
                session: "killed".into(),
                change: Some(change.clone()),
                payload: json!({"description": "d", "rationale": "r".repeat(500),
                                "patch": "p".repeat(2000), "patch_format": "unified"}),
            }];
            for seed in 0..4u64 {
                batch.push(NewEvent {
                    kind: EventKind::RunResult,
                    session: "killed".into(),
                    change: Some(change.clone()),
                    payload: json!({"arm": "candidate", "stage": "screen", "commit": "abc",
                                    "seed": seed, "split": "val", "metrics": {"val_bpb": 1.0},
                                    "exit_status": "ok"}),
                });
            }
            ledger.append_batch(batch)?;
        },
    }
    Ok(())
}

fn spawn_writer(path: &Path, id: u32, count: Option<u32>) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("own test binary"));
    cmd.env(ROLE, "writer")
        .env(PATH, path)
        .env(WRITER, id.to_string());
    if let Some(count) = count {
        cmd.env(COUNT, count.to_string());
    }
    cmd.spawn().expect("spawn writer process")
}

fn eight_writers() {
    const WRITERS: u32 = 8;
    const EACH: u32 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let children: Vec<Child> = (0..WRITERS)
        .map(|id| spawn_writer(&path, id, Some(EACH)))
        .collect();
    for mut child in children {
        let status = child.wait().unwrap();
        assert!(status.success(), "a writer failed: {status}");
    }

    let ledger = Ledger::open(&path).unwrap();
    let events = ledger.events().unwrap();
    assert_eq!(
        events.len(),
        (WRITERS * EACH) as usize,
        "every event is present"
    );
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.seq, index as i64 + 1, "seq is contiguous");
    }
    // Each writer's events appear once each, in the order it wrote them.
    for id in 0..WRITERS {
        let mine: Vec<u64> = ledger
            .events_for_session(&format!("writer-{id}"))
            .unwrap()
            .iter()
            .map(|e| e.payload["i"].as_u64().unwrap())
            .collect();
        assert_eq!(mine, (0..EACH as u64).collect::<Vec<_>>(), "writer {id}");
    }
    let report = ledger.verify().unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.events_checked, (WRITERS * EACH) as i64);
}

fn killed_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let observer = Ledger::open(&path).unwrap();
    // Kill three times at different points; each time the ledger must be whole and writable.
    for (round, kill_after) in [(0u32, 50i64), (1, 400), (2, 900)] {
        let mut child = spawn_writer(&path, round, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while observer.len().unwrap() < kill_after {
            assert!(Instant::now() < deadline, "writer made no progress");
            if let Some(status) = child.try_wait().unwrap() {
                panic!("writer exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL on Unix: no destructor, no rollback, no checkpoint.
        child.wait().unwrap();

        let ledger = Ledger::open(&path).unwrap();
        let report = ledger
            .verify_with(&VerifyOptions {
                check_views: true,
                ..Default::default()
            })
            .unwrap();
        assert!(report.ok, "round {round}: {:?}", report.problems);
        // Batches are atomic: every change has its proposal and all four runs, or nothing.
        let events = ledger.events().unwrap();
        assert_eq!(
            events.len() % 5,
            0,
            "round {round}: {} events",
            events.len()
        );
        for change in ledger.changes(None).unwrap() {
            assert_eq!(
                ledger.events_for_change(&change.change_id).unwrap().len(),
                5
            );
            assert_eq!(ledger.runs(Some(&change.change_id)).unwrap().len(), 4);
        }
    }
}
