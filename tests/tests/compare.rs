//! `agentloop compare A B`: a known-better commit shows a significant gain with the right
//! sign, a no-op commit an interval holding 0; both are recorded as `compare` events that
//! `ledger verify` recomputes; bad revisions, a commit that does not build and a run that
//! crashes are named and leave no comparison in the ledger; no worktree is left behind.

use std::collections::BTreeSet;

use agentloop_ledger::payload::Compare;
use agentloop_ledger::EventKind;
use agentloop_tests::toy::ToyOptions;
use agentloop_tests::{kinds, TargetRepo};
use serde_json::Value;

agentloop_tests::e2e_paths!();

fn run(repo: &TargetRepo, args: &[&str]) -> (i32, String, String) {
    repo.run_agentloop(BIN.as_ref(), &target_dir(), args)
        .unwrap()
}

/// A branch off main whose config.toml has `from` replaced by `to` (or train.sh removed).
fn branch(repo: &TargetRepo, name: &str, from: &str, to: &str) {
    repo.git(&["checkout", "-q", "-b", name, "main"]).unwrap();
    if from == "train.sh" {
        repo.git(&["rm", "-q", "train.sh"]).unwrap();
    } else {
        let path = repo.root.join("config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from));
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }
    repo.git(&["commit", "-q", "-am", name]).unwrap();
    repo.git(&["checkout", "-q", "main"]).unwrap();
}

fn compares(repo: &TargetRepo) -> Vec<Compare> {
    kinds(&repo.events().unwrap(), EventKind::Compare)
        .iter()
        .map(|e| e.payload_as::<Compare>().unwrap())
        .collect()
}

#[test]
fn compare_measures_a_real_gain_and_a_null_change_and_refuses_bad_input() {
    let repo = TargetRepo::toy(&ToyOptions::default()).unwrap();
    branch(&repo, "better", "lr = 0.1", "lr = 0.03");
    branch(
        &repo,
        "noop",
        "# spacer lines",
        "# spacer lines (a comment edit)",
    );
    branch(&repo, "broken", "train.sh", "");
    branch(&repo, "diverges", "lr = 0.1", "lr = 20");

    // A known-better commit: lower val_bpb on holdout, so B - A < 0, significant.
    let (code, out, err) = run(
        &repo,
        &["compare", "main", "better", "--pairs", "4", "--json"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let j: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(j["verdict"], "b_better", "{j}");
    assert_eq!(j["split"], "holdout");
    assert_eq!(j["n"], 4);
    assert_eq!(j["pairs"].as_array().unwrap().len(), 4);
    let (mean, hi, p) = (
        j["mean_diff"].as_f64().unwrap(),
        j["ci_high"].as_f64().unwrap(),
        j["p_value"].as_f64().unwrap(),
    );
    // The toy's metric is 1 + 0.5 log10(lr/0.01)^2 + ...: lr 0.1 -> 0.03 gains ~0.39.
    assert!(mean < -0.35 && mean > -0.45 && hi < 0.0 && p < 0.01, "{j}");
    assert!((j["gain"].as_f64().unwrap() + mean).abs() < 1e-12);
    for pair in j["pairs"].as_array().unwrap() {
        let (a, b) = (pair["a"].as_f64().unwrap(), pair["b"].as_f64().unwrap());
        assert!(b < a, "every seed improves: {pair}");
    }

    // A no-op change (a comment): the interval holds 0.
    let (code, out, err) = run(
        &repo,
        &["compare", "main", "noop", "--pairs", "3", "--split", "val"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no significant difference"), "{out}");
    assert!(out.contains("val gain 0.000 val_bpb"), "{out}");

    let recorded = compares(&repo);
    assert_eq!(recorded.len(), 2);
    let (gain, null) = (&recorded[0], &recorded[1]);
    assert_eq!(
        gain.b_commit,
        repo.git(&["rev-parse", "better"]).unwrap().trim()
    );
    assert_eq!(gain.mean_diff, mean);
    assert!(null.ci_low <= 0.0 && 0.0 <= null.ci_high, "{null:?}");
    assert_eq!(null.split, "val");
    // Fresh seeds: each comparison its own, both arms of a pair on the same one.
    let seeds = |c: &Compare| c.pairs.iter().map(|p| p.seed).collect::<BTreeSet<u64>>();
    assert!(seeds(gain).is_disjoint(&seeds(null)));
    let runs = kinds(&repo.events().unwrap(), EventKind::RunResult).len();
    assert_eq!(runs, 2 * (4 + 3), "every run recorded");
    repo.verify_with_cli(BIN.as_ref(), &target_dir()).unwrap();

    // Bad input: named, nothing recorded.
    let before = repo.events().unwrap().len();
    let (code, _, err) = run(&repo, &["compare", "main", "no-such-rev"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown revision \"no-such-rev\""), "{err}");
    let (code, _, err) = run(&repo, &["compare", "main", "broken", "--pairs", "2"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("B (broken") && err.contains("does not build"),
        "{err}"
    );
    assert_eq!(repo.events().unwrap().len(), before, "nothing recorded");

    // A run that diverges: named; its run is recorded as what it was, no comparison is.
    let (code, _, err) = run(&repo, &["compare", "main", "diverges", "--pairs", "2"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("the run of B (diverges") && err.contains("Diverged"),
        "{err}"
    );
    assert_eq!(compares(&repo).len(), 2, "no comparison from a failed run");
    repo.verify_with_cli(BIN.as_ref(), &target_dir()).unwrap();

    // No worktree or branch of a comparison is left behind.
    let worktrees = repo.git(&["worktree", "list"]).unwrap();
    assert_eq!(worktrees.lines().count(), 1, "{worktrees}");
    let branches = repo.git(&["branch", "--list", "agentloop/*"]).unwrap();
    assert!(branches.trim().is_empty(), "{branches}");
}
