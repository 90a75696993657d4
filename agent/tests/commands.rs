//! The `report` and `status` subcommands' logic on a real repository and ledger.

mod common;

use agentloop::report::command::{run_report, run_status, ReportArgs};
use agentloop_ledger::Ledger;

fn repo_with_session() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    git2::Repository::init(dir.path()).unwrap();
    let ledger_path = dir.path().join(".agentloop/ledger.db");
    common::populate(&Ledger::open(&ledger_path).unwrap());
    (dir, ledger_path)
}

#[test]
fn report_goes_next_to_the_ledger_by_default_and_says_where() {
    let (dir, ledger_path) = repo_with_session();
    let mut out = Vec::new();
    let args = ReportArgs {
        repo: None,
        out: None,
        session: None,
    };
    assert_eq!(
        run_report(&args, dir.path(), &ledger_path, &mut out).unwrap(),
        0
    );
    let text = String::from_utf8(out).unwrap();
    let want = dir.path().join(".agentloop/reports").join(common::SESSION);
    assert!(
        text.contains(&want.join("report.html").display().to_string()),
        "{text}"
    );
    assert!(!text.contains("warning"), "the ledger verifies: {text}");
    for f in ["report.html", "chart.png", "chart.svg"] {
        assert!(want.join(f).is_file(), "{f}");
    }
}

#[test]
fn report_with_out_dir_and_a_missing_ledger() {
    let (dir, ledger_path) = repo_with_session();
    let out_dir = dir.path().join("elsewhere");
    let args = ReportArgs {
        repo: None,
        out: Some(out_dir.clone()),
        session: Some(common::SESSION.into()),
    };
    run_report(&args, dir.path(), &ledger_path, &mut Vec::new()).unwrap();
    assert!(out_dir.join("report.html").is_file());

    let missing = dir.path().join("nope/ledger.db");
    let err = run_report(&args, dir.path(), &missing, &mut Vec::new()).unwrap_err();
    assert!(format!("{err:#}").contains("no ledger at"), "{err:#}");
    assert!(!missing.exists(), "no empty ledger was created");
}

#[test]
fn status_prints_text_or_json() {
    let (_dir, ledger_path) = repo_with_session();
    let mut out = Vec::new();
    run_status(&ledger_path, None, true, &mut out).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["session"], common::SESSION);
    assert_eq!(json["accepted"], 2);
    let mut out = Vec::new();
    run_status(&ledger_path, None, false, &mut out).unwrap();
    assert!(String::from_utf8(out)
        .unwrap()
        .contains("1 policy-rejected"));

    let mut out = Vec::new();
    let missing = ledger_path.with_file_name("none.db");
    run_status(&missing, None, false, &mut out).unwrap();
    assert!(String::from_utf8(out)
        .unwrap()
        .starts_with("no session yet"));
    assert!(!missing.exists());
}

#[test]
fn simulate_refuses_a_seed_correlation_outside_0_1_and_runs_at_a_valid_one() {
    use agentloop::cli::SimulateArgs;
    let dir = tempfile::tempdir().unwrap();
    let args = |rho| SimulateArgs {
        trials: 20,
        seed: 1,
        rho,
        fixed_trunk: false,
        session: false,
        sessions: 1000,
        budget_runs: 500,
        mix: "issue".into(),
        val_sd: None,
        interaction_sd: None,
    };
    let err = agentloop::commands::simulate::run(Some(dir.path()), &args(1.5)).unwrap_err();
    assert!(err.to_string().contains("--rho 1.5"), "{err}");
    assert_eq!(
        agentloop::commands::simulate::run(Some(dir.path()), &args(0.9)).unwrap(),
        0
    );
}

#[test]
fn simulate_session_names_an_unknown_mix_and_runs_a_small_one() {
    use agentloop::cli::SimulateArgs;
    let dir = tempfile::tempdir().unwrap();
    let args = |mix: &str, val_sd| SimulateArgs {
        trials: 20,
        seed: 1,
        rho: 0.996,
        fixed_trunk: false,
        session: true,
        sessions: 3,
        budget_runs: 40,
        mix: mix.into(),
        val_sd,
        interaction_sd: None,
    };
    let run = |a: &SimulateArgs| agentloop::commands::simulate::run(Some(dir.path()), a);
    let err = run(&args("keep-all", None)).unwrap_err();
    assert!(
        err.to_string().contains("--mix \"keep-all\"") && err.to_string().contains("issue"),
        "{err}"
    );
    let err = run(&args("issue", Some(-1.0))).unwrap_err();
    assert!(err.to_string().contains("--val-sd -1"), "{err}");
    let bad = SimulateArgs {
        interaction_sd: Some(f64::NAN),
        ..args("issue", None)
    };
    let err = run(&bad).unwrap_err();
    assert!(err.to_string().contains("--interaction-sd NaN"), "{err}");
    assert_eq!(run(&args("heavy-tail", Some(0.0))).unwrap(), 0);
}
