//! Faults around the disk, on the toy target with the offline proposer: worktrees, build
//! outputs and run directories deleted while the loop is down are rebuilt; a run directory
//! that fills up (a small tmpfs, when the test may mount one) ends in a recorded crash, and
//! once space is back the same session finishes. Never a lost or half-written event: the
//! ledger verifies after each step.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agentloop_ledger::payload::DecisionOutcome;
use agentloop_ledger::{Event, EventKind};
use agentloop_tests::toy::ToyOptions;
use agentloop_tests::{check, kill_group, output, spawn_group, TargetRepo};

agentloop_tests::e2e_paths!();
const ARGS: [&str; 6] = ["start", "--budget", "10m", "--max-changes", "3", "--agent"];

fn args() -> Vec<&'static str> {
    let mut a = ARGS.to_vec();
    a.push("offline");
    a
}

fn timeline(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| format!("{} {} {:?} {}", e.seq, e.kind, e.change, e.payload))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the loop until the ledger holds `n` more `kind` events than now, then SIGKILL.
fn kill_after(repo: &TargetRepo, kind: EventKind, n: usize) {
    let count = |r: &TargetRepo| {
        r.events()
            .unwrap_or_default()
            .iter()
            .filter(|e| e.kind == kind)
            .count()
    };
    let goal = count(repo) + n;
    let mut cmd = repo.agentloop(BIN.as_ref(), &target_dir(), &args());
    cmd.env("AGENTLOOP_PAUSE_AFTER_EVENT_MS", "30");
    let mut child = spawn_group(cmd).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count(repo) < goal && child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "no {kind} event came");
        std::thread::sleep(Duration::from_millis(5));
    }
    kill_group(&mut child);
}

/// Everything under `.agentloop/` but the ledger and the lock: worktrees, build outputs and
/// their cache, run directories.
fn delete_all_but_the_ledger(root: &Path) -> Vec<String> {
    let mut gone = Vec::new();
    for entry in std::fs::read_dir(root.join(".agentloop")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("ledger.db") || name == "lock" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
        gone.push(name);
    }
    gone
}

#[test]
fn worktrees_and_build_outputs_deleted_between_runs_are_rebuilt() {
    let repo = TargetRepo::toy(&ToyOptions::default()).unwrap();
    // Down after the first change was built, everything but the ledger deleted; then down
    // again mid-way through the next change, deleted again.
    kill_after(&repo, EventKind::Build, 1);
    let gone = delete_all_but_the_ledger(&repo.root);
    assert!(
        gone.iter().any(|g| g.contains("worktree")),
        "nothing like a worktree was deleted: {gone:?}"
    );
    kill_after(&repo, EventKind::RunResult, 3);
    delete_all_but_the_ledger(&repo.root);
    repo.ledger().unwrap().verify().unwrap();

    let out = output(repo.agentloop(BIN.as_ref(), &target_dir(), &args())).unwrap();
    let events = repo.events().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        timeline(&events)
    );
    let summary =
        check::consistent(&repo, "main").unwrap_or_else(|e| panic!("{e:#}\n{}", timeline(&events)));
    assert_eq!(summary.decisions.len(), 3, "{summary:?}");
    // The toy's best learning rate won, as in a session nobody disturbed.
    let config = repo
        .git(&[
            "show",
            &format!("agentloop/{}:config.toml", summary.session),
        ])
        .unwrap();
    assert!(config.contains("lr = 0.01\n"), "{config}");
    repo.verify_with_cli(BIN.as_ref(), &target_dir()).unwrap();
}

/// A tmpfs of `size` mounted at `at` for as long as the value lives.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_run_directory_that_fills_up_ends_in_recorded_crashes_and_loses_no_event() {
    let repo = TargetRepo::toy(&ToyOptions::default()).unwrap();
    // With lr = 0.03 (the first proposal) the run writes until the disk is full (and leaves its file there).
    let train = std::fs::read_to_string(repo.root.join("train.sh")).unwrap();
    let train = train.replacen(
        "sleep ",
        "case \"$lr\" in 0.03) head -c 4000000 /dev/zero > \"$out/fill\" ;; esac\nsleep ",
        1,
    );
    std::fs::write(repo.root.join("train.sh"), train).unwrap();
    repo.git(&["commit", "-qam", "a run that fills the disk"])
        .unwrap();
    std::fs::create_dir_all(repo.root.join(".agentloop")).unwrap();
    let runs = repo.root.join(".agentloop/runs");
    let Some(disk) = Tmpfs::mount(&runs, "1m") else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs at {} (needs root and CAP_SYS_ADMIN); \
             the run-directory-full case was not tested",
            runs.display()
        );
        return;
    };

    let first = output(repo.agentloop(BIN.as_ref(), &target_dir(), &args())).unwrap();
    let stderr = String::from_utf8_lossy(&first.stderr).into_owned();
    let events = repo.events().unwrap();
    let report = repo.ledger().unwrap().verify().unwrap();
    assert!(report.ok, "{report:?}\n{}", timeline(&events));
    // The filling run is a recorded crash (its metrics could not be written), and whatever
    // came after it on the full disk is recorded too: crashed runs, or an error event that
    // names the full disk. Nothing half-written: the ledger verified above.
    let crashed_fill = events.iter().any(|e| {
        e.kind == EventKind::RunResult
            && e.payload["exit_status"] != "ok"
            && e.payload["disk_full"]
                .as_str()
                .is_some_and(|t| t.contains("no space left in") && t.contains(".agentloop/runs"))
    });
    let full_error = events.iter().any(|e| {
        e.kind == EventKind::Error
            && e.payload["message"]
                .as_str()
                .is_some_and(|m| m.contains("No space left") || m.contains("os error 28"))
    });
    assert!(
        crashed_fill || full_error,
        "the full disk left no record:\n{stderr}\n{}",
        timeline(&events)
    );

    eprintln!(
        "disk full: first start exited {:?}, {} events, crashed run recorded: {crashed_fill}, \
         error recorded: {full_error}\n{}",
        first.status.code(),
        events.len(),
        stderr.lines().rev().take(3).collect::<Vec<_>>().join("\n")
    );
    // Space back (as an operator would free it): the same session finishes.
    drop(disk);
    let ended = events
        .last()
        .is_some_and(|e| e.kind == EventKind::SessionEnd);
    if !ended {
        let out = output(repo.agentloop(BIN.as_ref(), &target_dir(), &args())).unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            timeline(&repo.events().unwrap())
        );
    }
    let events = repo.events().unwrap();
    let summary =
        check::consistent(&repo, "main").unwrap_or_else(|e| panic!("{e:#}\n{}", timeline(&events)));
    assert_eq!(summary.decisions.len(), 3, "{summary:?}");
    let crashed = summary
        .decisions
        .values()
        .filter(|d| d.outcome == DecisionOutcome::Crashed)
        .count();
    assert!(crashed >= 1 || full_error, "{summary:?}");
    repo.verify_with_cli(BIN.as_ref(), &target_dir()).unwrap();
}
