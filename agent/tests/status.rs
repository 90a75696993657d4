//! `status` numbers and the live progress display, from real ledgers.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use agentloop::progress::Progress;
use agentloop::report::status::{self, Status};
use agentloop::report::{ChangeState, SessionSummary};
use agentloop_ledger::payload::{Arm, Stage};
use agentloop_ledger::Ledger;

use common::*;

fn finished_session() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path().join("ledger.db")).unwrap();
    populate(&ledger);
    (dir, ledger)
}

#[test]
fn summary_counts_trunk_and_costs_come_from_the_ledger() {
    let (_dir, ledger) = finished_session();
    let s = SessionSummary::load(&ledger, None).unwrap();
    assert_eq!(s.session, SESSION);
    assert_eq!(s.ended.as_deref(), Some("max_changes"));
    let c = &s.counts;
    assert_eq!(
        (
            c.proposed,
            c.accepted,
            c.kept,
            c.rejected,
            c.crashed,
            c.policy_rejected,
            c.build_failed,
            c.rolled_back,
            c.in_flight
        ),
        (6, 2, 1, 1, 1, 1, 1, 1, 0)
    );
    let state = |id: &str| s.change(id).unwrap().state;
    assert_eq!(state(ROLLED_BACK), ChangeState::RolledBack);
    assert_eq!(state(POLICY_REJECTED), ChangeState::PolicyRejected);

    // Trunk: calibrated 1.500, then 1.490 and 1.486 by accepts, re-measured 1.491 after the
    // rollback; the best it held was 1.486.
    let levels: Vec<f64> = s.trunk.iter().map(|l| l.value).collect();
    assert_eq!(levels.len(), 4, "{levels:?}");
    for (got, want) in levels.iter().zip([1.500, 1.490, 1.486, 1.491]) {
        assert!((got - want).abs() < 1e-9, "{levels:?}");
    }
    assert!((s.trunk_metric.unwrap() - 1.491).abs() < 1e-9);
    assert!((s.best_trunk_metric.unwrap() - 1.486).abs() < 1e-9);
    assert!((s.baseline_metric.unwrap() - 1.500).abs() < 1e-9);
    assert_eq!(s.trunk_commit, "d00d00d00d00d00d00d00d00d00d00d00d00d00d");

    // Effect is trunk minus candidate; crashed and policy-rejected changes sit at the trunk.
    let accepted = s.change(ACCEPTED).unwrap();
    assert!((accepted.effect.unwrap() - 0.010).abs() < 1e-9);
    assert_eq!(accepted.ci, Some((0.006, 0.014)));
    assert_eq!(accepted.runs, 6);
    let crashed = s.change(CRASHED).unwrap();
    assert_eq!(crashed.candidate_metric, None);
    assert!((crashed.trunk_metric_before.unwrap() - 1.490).abs() < 1e-9);
    assert_eq!(s.audits.len(), 1);
    assert_eq!(s.audits[0].outcome, "flagged");
    assert_eq!(s.audits[0].x, 5.5, "after the fifth change");

    // 20 calibration runs x 10s + 3 changes x 6 paired runs x 12s + one 3s crash.
    let costs = &s.costs;
    assert_eq!(costs.runs, 20 + 18 + 1);
    assert!(
        (costs.training_s - (200.0 + 216.0 + 3.0)).abs() < 1e-9,
        "{costs:?}"
    );
    assert!((costs.crash_lost_s - 3.0).abs() < 1e-9, "{costs:?}");
    assert!((costs.build_s - 6.0 * 40.0).abs() < 1e-9, "{costs:?}");
    assert_eq!((costs.prompt_tokens, costs.completion_tokens), (8400, 2100));
}

#[test]
fn status_text_and_json_say_the_same() {
    let (_dir, ledger) = finished_session();
    let s = SessionSummary::load(&ledger, None).unwrap();
    let st = Status::of(&s);
    let text = status::text(&st);
    assert!(
        text.contains(&format!("session   {SESSION} (ended: max_changes)")),
        "{text}"
    );
    assert!(
        text.contains("6 proposed: 2 accepted, 1 rejected, 1 crashed, 1 policy-rejected, 1 build-failed, 1 rolled back"),
        "{text}"
    );
    assert!(text.contains("best 1.486000"), "{text}");
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["state"], "ended");
    assert_eq!(json["rolled_back"], 1);
    assert_eq!(json["accepted"], 2);
    assert_eq!(json["kept"], 1);
    assert_eq!(json["best_trunk_metric"], 1.486);
    assert!(json.get("changes").is_none(), "status leaves the diffs out");
}

#[test]
fn a_running_session_shows_the_current_change_and_its_stage() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path().join("ledger.db")).unwrap();
    let w = Writer {
        ledger: &ledger,
        session: "s-live".into(),
    };
    w.start(3600.0);
    w.calibrate("b0b0b0b", 1.5);
    let stage = || {
        let s = SessionSummary::load(&ledger, Some("s-live")).unwrap();
        assert_eq!(s.ended, None);
        s.current.map(|c| (c.change, c.stage))
    };
    assert_eq!(stage(), None);
    w.propose("c9a0009", "deeper model", 1);
    assert_eq!(stage(), Some(("c9a0009".into(), "policy".into())));
    w.policy("c9a0009", true);
    assert_eq!(stage().unwrap().1, "build");
    w.build("c9a0009", false, 1);
    assert_eq!(stage().unwrap().1, "fix_build");
    w.build("c9a0009", true, 2);
    assert_eq!(stage().unwrap().1, "smoke");
    w.run(
        Some("c9a0009"),
        Arm::Candidate,
        Stage::Screen,
        5,
        Some(1.49),
        10.0,
    );
    assert_eq!(stage().unwrap().1, "screen");
    let st = Status::of(&SessionSummary::load(&ledger, None).unwrap());
    assert!(status::text(&st).contains("current   c9a0009 at screen: deeper model"));
}

/// A `Write` the test can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn plain_progress_lines_follow_the_loop_event_by_event() {
    let (_dir, ledger) = finished_session();
    let events = ledger.events().unwrap();
    let out = Captured::default();
    let mut progress = Progress::lines(Box::new(out.clone()));
    for e in &events {
        progress.record(e).unwrap();
    }
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for window in lines.windows(2) {
        assert_ne!(
            window[0], window[1],
            "a line is logged only when something changed"
        );
    }
    assert!(
        lines.len() < events.len() / 2,
        "not one line per event: {}",
        lines.len()
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("{ACCEPTED} at confirm"))),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("{BUILD_FAILED} at fix_build"))),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.contains("best val_bpb 1.486000")),
        "{text}"
    );
    let last = lines.last().unwrap();
    assert!(last.contains("ended (max_changes)"), "{last}");
    assert!(last.contains("2 accepted, 1 rejected, 1 crashed"), "{last}");

    // What progress shows is what `status` computes from the whole ledger.
    let live = progress.status().unwrap();
    let full = Status::of(&SessionSummary::load(&ledger, None).unwrap());
    assert_eq!(
        serde_json::to_value(live).unwrap(),
        serde_json::to_value(full).unwrap()
    );
}

#[test]
fn a_resumed_session_catches_up_then_continues() {
    let (_dir, ledger) = finished_session();
    let events = ledger.events().unwrap();
    let (before, after) = events.split_at(events.len() / 2);
    let out = Captured::default();
    let mut progress = Progress::lines(Box::new(out.clone()));
    progress.catch_up(before).unwrap();
    let caught_up = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        caught_up.lines().count(),
        1,
        "one line for the state so far: {caught_up}"
    );
    for e in after {
        progress.record(e).unwrap();
    }
    assert_eq!(progress.status().unwrap().counts.proposed, 6);
}

/// `ledger list` (the derived `changes` table), `status`/`report` (the summary) and the loop
/// (the ledger's fold) name every change's end alike, a superseded one included: accepted on a
/// trunk that moved, re-tested as another change, its own decision void.
#[test]
fn views_report_and_loop_agree_on_every_change_superseded_included() {
    use agentloop_ledger::payload::{DecisionOutcome, Discard, Propose};
    use agentloop_ledger::state::SessionState;
    use agentloop_ledger::ChangeStatus;

    let (_dir, ledger) = finished_session();
    let w = Writer {
        ledger: &ledger,
        session: SESSION.into(),
    };
    // Accepted, but another change merged first: superseded by a re-test, which is in flight.
    let (old, retest) = ("c7a0007", "c8b0008");
    w.propose(old, "tie the embeddings", 1);
    w.policy(old, true);
    w.build(old, true, 1);
    w.pairs(old, 1.49, 1.48);
    w.decide(
        old,
        DecisionOutcome::Accepted,
        1.49,
        1.48,
        Some((0.005, 0.015)),
        Some(0.002),
    );
    w.put(
        Some(old),
        &Discard {
            kept_ref: None,
            superseded_by: Some(retest.into()),
            extra: Default::default(),
        },
    );
    let first = ledger.events_for_change(old).unwrap()[0]
        .payload_as::<Propose>()
        .unwrap();
    w.put(
        Some(retest),
        &Propose {
            retest_of: Some(old.into()),
            ..first
        },
    );

    let summary = SessionSummary::load(&ledger, None).unwrap();
    let fold = SessionState::load(&ledger, SESSION).unwrap();
    let rows = ledger.changes(None).unwrap();
    assert_eq!(rows.len(), fold.changes.len());
    assert_eq!(rows.len(), summary.changes.len());
    for row in &rows {
        let from_fold = fold.change(&row.change_id).unwrap().status();
        let reported = summary.change(&row.change_id).unwrap().state;
        let reported = match reported {
            ChangeState::InFlight => ChangeStatus::Proposed,
            other => other.as_str().parse().unwrap(),
        };
        assert_eq!(row.status, from_fold, "views vs fold on {}", row.change_id);
        assert_eq!(reported, from_fold, "report vs fold on {}", row.change_id);
    }
    assert_eq!(
        ledger.change(old).unwrap().unwrap().status,
        ChangeStatus::Superseded
    );
    assert_eq!(summary.change(old).unwrap().state, ChangeState::Superseded);
    assert_eq!(
        fold.change(retest).unwrap().retest_of(),
        Some(old),
        "the re-test names what it re-tests, typed"
    );
    assert_eq!(summary.change(retest).unwrap().state, ChangeState::InFlight);
    // The superseded decision does not count; the loop sees the re-test in flight.
    assert_eq!(fold.in_flight().map(|c| c.id.as_str()), Some(retest));
    // Rebuilding the derived tables from the events gives the same statuses.
    ledger.rebuild_views().unwrap();
    assert_eq!(ledger.changes(None).unwrap(), rows);
}
