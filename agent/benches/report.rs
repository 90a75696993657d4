//! How long `status` and `report` take on a long session's ledger.
//!
//! `cargo bench --profile dev -p agentloop --bench report -- 300` (the number of changes;
//! `-- small` for the tests' six-change session; `REPORT_BENCH_KEEP=1` keeps the report).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use agentloop::report::{self, SessionSummary};
use agentloop_ledger::{Ledger, VerifyOptions};

fn main() {
    let changes: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path().join("ledger.db")).unwrap();
    let t = Instant::now();
    // `-- small`: the six-change session of the tests instead (to look at the chart).
    if std::env::args().any(|a| a == "small") {
        common::populate(&ledger);
    } else {
        common::populate_many(&ledger, "s-bench", changes);
    }
    let events = ledger.len().unwrap();
    println!("wrote the ledger ({events} events) in {:.2?}", t.elapsed());

    let t = Instant::now();
    let read = ledger.events().unwrap().len();
    println!("reading the {read} events alone: {:.2?}", t.elapsed());

    let t = Instant::now();
    let summary = SessionSummary::load(&ledger, None).unwrap();
    println!(
        "status/summary: {:.2?} ({} changes)",
        t.elapsed(),
        summary.changes.len()
    );

    let t = Instant::now();
    let files = report::generate(
        &ledger,
        None,
        &dir.path().join("report"),
        &VerifyOptions::default(),
    )
    .unwrap();
    let size = std::fs::metadata(&files.html).unwrap().len();
    println!(
        "report (verify + chart + html): {:.2?}, report.html {} KiB",
        t.elapsed(),
        size / 1024
    );

    if std::env::var_os("REPORT_BENCH_KEEP").is_some() {
        let kept = dir.keep();
        println!("kept in {}", kept.join("report").display());
    }
}
