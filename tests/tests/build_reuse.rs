//! Builds a session does not pay for twice: the base commit is built before the budget starts,
//! and a change to `[build] runtime_only` files alone reuses its parent's build. A build that
//! reads such a file anyway fails in its sandbox, so the reuse can never go stale unseen.

use agentloop_ledger::EventKind;
use agentloop_tests::toy::{ToyOptions, BUILD};
use agentloop_tests::{check, kinds, offline_start, TargetRepo};

agentloop_tests::e2e_paths!();

fn toy_with_build(build: &str) -> TargetRepo {
    TargetRepo::toy(&ToyOptions {
        build: build.into(),
        ..ToyOptions::default()
    })
    .unwrap()
}

fn build_logs(repo: &TargetRepo) -> Vec<String> {
    let logs = repo.root.join(".agentloop/logs");
    let mut names: Vec<String> = std::fs::read_dir(&logs)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("build-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn config_only_changes_reuse_the_base_build_which_is_timed_before_the_budget() {
    let repo = toy_with_build(&format!("{BUILD}runtime_only = [\"config.toml\"]\n"));
    let (code, out, err) = repo
        .run_agentloop(BIN.as_ref(), &target_dir(), &offline_start("3"))
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let events = repo.events().unwrap();
    let start = &kinds(&events, EventKind::SessionStart)[0].payload;
    assert!(
        start["base_build_s"].as_f64().is_some_and(|s| s > 0.0),
        "the base build is timed in session_start: {start}"
    );
    let builds = kinds(&events, EventKind::Build);
    assert_eq!(builds.len(), 3, "one build event per change");
    for b in &builds {
        assert_eq!(b.payload["ok"], true, "{}", b.payload);
        assert_eq!(b.payload["cached"], true, "nothing compiled: {}", b.payload);
    }
    assert_eq!(
        build_logs(&repo).len(),
        1,
        "the build command ran once, for the base: {:?}",
        build_logs(&repo)
    );
    // The reused build still trains each change's own config: lr 0.01 beats the base's 0.1.
    let summary = check::consistent(&repo, "main").unwrap();
    assert!(
        summary
            .decisions
            .values()
            .any(|d| serde_json::to_value(d.outcome).unwrap() == "accepted"),
        "{out}{err}"
    );
    let (_, status, _) = repo
        .run_agentloop(BIN.as_ref(), &target_dir(), &["status"])
        .unwrap();
    assert!(
        status.contains("building the base commit, before the budget started"),
        "{status}"
    );
    repo.verify_with_cli(BIN.as_ref(), &target_dir()).unwrap();
}

#[test]
fn a_build_that_reads_a_runtime_only_file_fails_before_anything_is_recorded() {
    // The same build reads config.toml (as a build that bakes it into the binary would).
    let reads_config = BUILD.replace("command = \"", "command = \"cat config.toml >/dev/null && ");
    let honest = toy_with_build(&reads_config);
    let args = offline_start("1");
    let (code, _, err) = honest
        .run_agentloop(BIN.as_ref(), &target_dir(), &args)
        .unwrap();
    assert_eq!(code, 0, "undeclared, reading the config is fine: {err}");

    let declared = toy_with_build(&format!("{reads_config}runtime_only = [\"config.toml\"]\n"));
    let (code, _, err) = declared
        .run_agentloop(BIN.as_ref(), &target_dir(), &args)
        .unwrap();
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("the base commit")
            && err.contains("does not build")
            && err.contains("runtime_only"),
        "{err}"
    );
    assert!(
        declared.events().unwrap().is_empty(),
        "a session whose base does not build records nothing"
    );
}
