//! Parsing `agentloop.toml` from a real file.

mod common;

use std::path::Path;
use std::time::Duration;

use agentloop_guardrails::audit::{AuditRule, OnFlag};

#[test]
fn parses_the_architecture_example() {
    let (dir, t) = common::target();
    assert_eq!(t.root, dir.path());
    assert_eq!(t.metric, "val_bpb");
    assert_eq!(t.build.timeout, Duration::from_secs(20 * 60));
    assert_eq!(t.train.timeout, Duration::from_secs(600));
    assert_eq!(t.train.memory_limit, 8 * 1024 * 1024 * 1024);
    assert_eq!(t.train.smoke_budget, "3steps");
    assert!(t.is_editable("trainer/src/model.rs"));
    assert!(t.is_editable("trainer/config/small.toml"));
    assert!(!t.is_editable("trainer/config/a/b.toml"));
    assert!(t.is_frozen("trainer/data/shakespeare/hamlet.txt"));
    // Unknown tables pass through for the agent.
    assert_eq!(
        t.extra["proposer"]["offline"]["moves"][1].as_str(),
        Some("warmup")
    );
    assert_eq!(
        t.decision,
        agentloop_guardrails::decision::DecisionRule::default()
    );
}

#[test]
fn renders_and_shell_quotes_the_train_command() {
    let (_dir, t) = common::target();
    let cmd = t.render_train_command(7, "val", "60000tokens", Path::new("runs/c1 x/it's"));
    assert_eq!(
        cmd,
        ".agentloop-bin/agentloop-trainer train --seed 7 --split val --budget 60000tokens --out 'runs/c1 x/it'\\''s'"
    );
    // A value holding a placeholder or shell syntax is not re-substituted or executed.
    let cmd = t.render_train_command(1, "val;rm -rf /", "{out}", Path::new("o"));
    assert!(
        cmd.contains("--split 'val;rm -rf /' --budget '{out}' --out o"),
        "{cmd}"
    );
    let smoke = t.render_smoke_command(3, "val", Path::new("o"));
    assert!(smoke.contains("--budget 3steps"), "{smoke}");
}

#[test]
fn decision_and_policy_overrides_apply() {
    let text = format!(
        "{}\n[decision]\nrule_version = \"sequential-screen/v2\"\nmin_effect_sd = 0.5\nstages = [{{ pairs = 4, p_threshold = 0.25 }}, {{ pairs = 8, p_threshold = 0.05 }}]\n[policy]\nmax_patch_bytes = 1000\n",
        common::TARGET_TOML
    );
    let (_dir, t) = common::target_from(&text);
    assert_eq!(t.decision.min_effect_sd, 0.5);
    assert_eq!(t.decision.stages[0].pairs, 4);
    assert_eq!(t.decision.min_baseline_seeds, 10); // untouched default
    assert_eq!(t.policy.max_patch_bytes, 1000);
}

#[test]
fn audit_rule_and_divergence_ratio_are_configurable() {
    let (_dir, t) = common::target_from(common::TARGET_TOML);
    assert_eq!(t.decision.audit, AuditRule::default());
    assert_eq!(t.train.divergence.loss_ratio, Some(10.0));

    let text = common::TARGET_TOML.replace(
        "memory_limit = \"8GiB\"\n",
        "memory_limit = \"8GiB\"\ndivergence_loss_ratio = 0\n",
    ) + "\n[decision]\nrule_version = \"sequential-screen/v2\"\nmin_effect_sd = 0.5\n[decision.audit]\nevery_merges = 2\non_flag = \"flag_only\"\n";
    let (_dir, t) = common::target_from(&text);
    assert_eq!(t.train.divergence.loss_ratio, None, "0 turns the ratio off");
    assert_eq!(t.decision.min_effect_sd, 0.5);
    assert_eq!(t.decision.audit.every_merges, 2);
    assert_eq!(t.decision.audit.on_flag, OnFlag::FlagOnly);
    assert_eq!(
        t.decision.audit.pairs,
        AuditRule::default().pairs,
        "default kept"
    );

    let e = common::load_err(&format!(
        "{}\n[decision.audit]\npairs = 1\n",
        common::TARGET_TOML
    ));
    assert!(e.contains("audit.pairs"), "{e}");
    let e = common::load_err(&format!(
        "{}\n[decision.audit]\non_flag = \"panic\"\n",
        common::TARGET_TOML
    ));
    assert!(e.contains("decision") && e.contains("panic"), "{e}");
    let e = common::load_err(&common::TARGET_TOML.replace(
        "memory_limit = \"8GiB\"\n",
        "memory_limit = \"8GiB\"\ndivergence_loss_ratio = 0.5\n",
    ));
    assert!(e.contains("train.divergence_loss_ratio"), "{e}");
}

#[test]
fn errors_name_the_file_and_the_key() {
    let missing = common::TARGET_TOML.replace("timeout  = \"10m\"\n", "");
    let e = common::load_err(&missing);
    assert!(
        e.contains("agentloop.toml") && e.contains("train.timeout"),
        "{e}"
    );

    let bad_duration = common::TARGET_TOML.replace("\"20m\"", "\"twenty\"");
    let e = common::load_err(&bad_duration);
    assert!(e.contains("build.timeout") && e.contains("twenty"), "{e}");

    let bad_size = common::TARGET_TOML.replace("\"8GiB\"", "\"lots\"");
    let e = common::load_err(&bad_size);
    assert!(e.contains("train.memory_limit"), "{e}");

    let no_placeholder = common::TARGET_TOML.replace("--out {out}", "");
    let e = common::load_err(&no_placeholder);
    assert!(e.contains("train.command") && e.contains("{out}"), "{e}");

    let unknown = format!("{}\n[decision]\nalpha = 0.1\n", common::TARGET_TOML);
    let e = common::load_err(&unknown);
    assert!(e.contains("decision") && e.contains("alpha"), "{e}");

    let bad_rule = format!("{}\n[decision]\nstages = []\n", common::TARGET_TOML);
    assert!(common::load_err(&bad_rule).contains("stage"));

    let e = common::load_err("[target\n");
    assert!(
        e.contains("agentloop.toml") && e.contains("invalid TOML"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let e = agentloop_guardrails::target::TargetSpec::load(dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("agentloop.toml"), "{e}");
}

/// The trust-boundary keys: a separate eval step, the files only it may read, the variables
/// passed through, and extra sandbox paths.
#[test]
fn eval_step_eval_data_env_and_sandbox_paths_parse() {
    let (_dir, t) = common::target();
    assert!(t.eval.is_none() && t.eval_data.is_empty() && t.env.is_empty());
    assert!(!t.is_eval_data("trainer/data/val/a.txt"));
    let text = common::TARGET_TOML
        .replace(
            "metric   = \"val_bpb\"",
            "metric = \"val_bpb\"\neval_data = [\"trainer/data/**/val/**\"]\nenv = [\"HF_HOME\"]",
        )
        .replace(" --split {split}", "")
        + "\n[eval]\ncommand = \"bin/eval --split {split} --out {out}\"\ntimeout = \"5m\"\n\
           [sandbox]\nread = [\"/opt/venv\", \"~/data\"]\nwrite = [\"/scratch\"]\n";
    let (_dir, t) = common::target_from(&text);
    let eval = t.eval.as_ref().unwrap();
    assert_eq!(eval.timeout, Duration::from_secs(300));
    assert!(t.is_eval_data("trainer/data/shakespeare/val/hamlet.txt"));
    assert!(!t.is_eval_data("trainer/data/shakespeare/train/hamlet.txt"));
    assert_eq!(t.env, ["HF_HOME"]);
    assert_eq!(
        t.render_eval_command(3, "holdout", Path::new("runs/a b"))
            .unwrap(),
        "bin/eval --split holdout --out 'runs/a b'"
    );
    assert_eq!(t.sandbox.read[0], Path::new("/opt/venv"));
    assert!(t.sandbox.read[1].is_absolute() && t.sandbox.read[1].ends_with("data"));
    assert_eq!(t.sandbox.write, [Path::new("/scratch")]);
    assert!(!t.extra.contains_key("eval") && !t.extra.contains_key("sandbox"));
}

#[test]
fn trust_boundary_keys_give_errors_naming_the_key() {
    // The split may come from AGENTLOOP_SPLIT instead of {split}; {out} stays required.
    let no_split = common::TARGET_TOML.replace(" --split {split}", "");
    common::target_from(&no_split);
    common::target_from(&format!(
        "{no_split}\n[eval]\ncommand = \"e --out {{out}}\"\ntimeout = \"1m\"\n"
    ));
    let e = common::load_err(&format!(
        "{no_split}\n[eval]\ncommand = \"e --split {{split}}\"\ntimeout = \"1m\"\n"
    ));
    assert!(e.contains("eval.command") && e.contains("{out}"), "{e}");
    let e = common::load_err(&format!(
        "{no_split}\n[eval]\ncommand = \"e {{split}} {{out}}\"\n"
    ));
    assert!(e.contains("eval.timeout"), "{e}");
    let bad_env = common::TARGET_TOML.replace("metric   =", "env = [\"A=B\"]\nmetric =");
    let e = common::load_err(&bad_env);
    assert!(e.contains("target.env") && e.contains("A=B"), "{e}");
    let bad_glob = common::TARGET_TOML.replace("metric   =", "eval_data = [\"a/[\"]\nmetric =");
    assert!(common::load_err(&bad_glob).contains("target.eval_data"));
    let e = common::load_err(&format!(
        "{}\n[sandbox]\nread = [\"relative/dir\"]\n",
        common::TARGET_TOML
    ));
    assert!(
        e.contains("sandbox.read") && e.contains("relative/dir"),
        "{e}"
    );
}

#[test]
fn rule_v3_is_the_default_and_takes_a_minimum_effect_in_metric_units_or_percent() {
    use agentloop_guardrails::decision::{MinEffect, RULE_VERSION};
    let (_dir, t) = common::target_from(common::TARGET_TOML);
    assert_eq!(t.decision.rule_version, RULE_VERSION);
    assert_eq!(t.decision.min_effect, Some(MinEffect::Absolute(0.001)));
    let text = format!(
        "{}\n[decision]\nmin_effect = \"0.05%\"\nconfirm = {{ looks = [{{ pairs = 4, alpha = 0.01 }}, {{ pairs = 10, alpha = 0.015 }}], futility_t = 0.0 }}\n",
        common::TARGET_TOML
    );
    let (_dir, t) = common::target_from(&text);
    assert_eq!(
        t.decision.min_effect,
        Some(MinEffect::RelativePercent(0.05))
    );
    assert!((t.decision.false_accept_bound() - 0.025).abs() < 1e-12);
    // 0.05% of a trunk at 3.7 bpb.
    let c = agentloop_guardrails::decision::Calibration::from_runs(
        &(1..=10).map(|s| (s, 3.7)).collect::<Vec<_>>(),
        &[(1, vec![3.7, 3.7, 3.7])],
    )
    .unwrap();
    assert!((c.min_effect(&t.decision) - 0.00185).abs() < 1e-12);
}

#[test]
fn bad_rule_v3_settings_are_refused_with_the_key_named() {
    for (body, needle) in [
        ("min_effect = \"five%\"", "min_effect"),
        ("min_effect = -0.001", "min_effect"),
        // v1/v2 keys would be silently ignored by v3.
        ("stages = [{ pairs = 4, p_threshold = 0.05 }]", "decision.stages"),
        ("min_effect_sd = 0.5", "decision.min_effect_sd"),
        (
            "confirm = { looks = [{ pairs = 6, alpha = 0.01 }, { pairs = 6, alpha = 0.01 }], futility_t = 0.0 }",
            "must grow",
        ),
        (
            "confirm = { looks = [{ pairs = 6, alpha = 0.6 }, { pairs = 12, alpha = 0.5 }], futility_t = 0.0 }",
            "add up",
        ),
        ("screen = { kind = \"sequential\", effect_sd = 1.5, alpha = 0.05, beta = 0.1, max_runs = 8 }", "screens on pairs"),
    ] {
        let text = format!("{}\n[decision]\n{body}\n", common::TARGET_TOML);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agentloop.toml"), &text).unwrap();
        let err = agentloop_guardrails::target::TargetSpec::load(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{body}: {err}");
    }
    // Naming v2 starts from v2's defaults, so its keys are fine there.
    let text = format!(
        "{}\n[decision]\nrule_version = \"sequential-screen/v2\"\nmin_effect_sd = 0.5\n",
        common::TARGET_TOML
    );
    let (_dir, t) = common::target_from(&text);
    assert_eq!(t.decision.stages[0].pairs, 12);
    assert_eq!(t.decision.confirm, None);
}

#[test]
fn the_default_target_ships_guards_and_bad_guards_name_their_key() {
    use agentloop_guardrails::guards::GuardBound;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let t = agentloop_guardrails::target::TargetSpec::load(root).unwrap();
    let guards: Vec<(&str, GuardBound)> = t
        .guards
        .iter()
        .map(|g| (g.metric.as_str(), g.bound))
        .collect();
    assert_eq!(
        guards,
        vec![
            ("flops_per_s", GuardBound::MinRatio(0.70)),
            ("peak_mem_bytes", GuardBound::MaxRatio(1.10)),
        ]
    );
    assert!(t.train.budget.ends_with("flops"), "{}", t.train.budget);
    // Guards sit beside the rule's keys without being taken for one of them.
    let text = format!(
        "{}\n[decision]\nmin_effect = 0.002\n[decision.guards]\nwall_s = {{ max_increase = 5 }}\n",
        common::TARGET_TOML
    );
    let (_dir, t) = common::target_from(&text);
    assert_eq!(t.guards[0].bound, GuardBound::MaxIncrease(5.0));
    assert!(common::target_from(common::TARGET_TOML).1.guards.is_empty());
    for (body, needle) in [
        (
            "tokens_per_s = { min = 0.9 }",
            "decision.guards.tokens_per_s",
        ),
        ("holdout_gap = { max_increase = 0.02 }", "not evaluated yet"),
        ("peak_mem_bytes = 1.1", "decision.guards.peak_mem_bytes"),
    ] {
        let text = format!("{}\n[decision.guards]\n{body}\n", common::TARGET_TOML);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agentloop.toml"), &text).unwrap();
        let err = agentloop_guardrails::target::TargetSpec::load(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{body}: {err}");
    }
}

#[test]
fn bring_your_own_trainer_keys_parse_and_bad_ones_name_the_key() {
    // A Python trainer: seed from AGENTLOOP_SEED, metric from its output, data not in git.
    let byo = r#"
[target]
editable = ["train.py"]
inputs = ["data/**"]
[build]
command = "true"
timeout = "1m"
[train]
command = "python3 train.py --budget {budget} --out {out}"
budget = "20steps"
smoke_budget = "2steps"
timeout = "1m"
memory_limit = "1GiB"
metric_regex = 'val_bpb:\s*([0-9.eE+-]+)'
"#;
    let (_d, spec) = common::target_from(byo);
    assert_eq!(spec.inputs, ["data/**"]);
    assert_eq!(
        spec.train.metric_regex.as_deref(),
        Some(r"val_bpb:\s*([0-9.eE+-]+)")
    );
    assert_eq!(
        spec.run_env(7, Some("val")),
        [
            ("AGENTLOOP_SEED".to_string(), "7".to_string()),
            ("AGENTLOOP_SPLIT".to_string(), "val".to_string())
        ]
    );

    let no_group = byo.replace(r"([0-9.eE+-]+)", r"[0-9.]+");
    let e = common::load_err(&no_group);
    assert!(
        e.contains("agentloop.toml") && e.contains("train.metric_regex") && e.contains("capture"),
        "{e}"
    );
    let bad_re = byo.replace(r"([0-9.eE+-]+)", r"([0-9");
    assert!(common::load_err(&bad_re).contains("train.metric_regex"));
    for escape in [
        "../data/**",
        "/etc/passwd",
        ".agentloop/ledger.db",
        ".git/config",
    ] {
        let e = common::load_err(&byo.replace("\"data/**\"", &format!("{escape:?}")));
        assert!(
            e.contains("target.inputs") && e.contains(escape),
            "{escape}: {e}"
        );
    }
    // {out} and {budget} stay required: the loop cannot find a run's result without them.
    let e = common::load_err(&byo.replace(" --out {out}", ""));
    assert!(e.contains("train.command") && e.contains("{out}"), "{e}");
}

#[test]
fn build_runtime_only_globs_parse_and_a_bad_one_is_named() {
    let (_dir, t) = common::target();
    assert!(t.build.runtime_only.is_empty());
    assert!(!t.is_runtime_only("trainer/config/default.toml"));
    let text = common::TARGET_TOML.replace(
        "timeout  = \"20m\"",
        "timeout  = \"20m\"\nruntime_only = [\"trainer/config/*.toml\"]",
    );
    let (_dir, t) = common::target_from(&text);
    assert!(t.is_runtime_only("trainer/config/default.toml"));
    // `*` stays within one directory, as everywhere in agentloop.toml.
    assert!(!t.is_runtime_only("trainer/config/sub/x.toml"));
    assert!(!t.is_runtime_only("trainer/src/model.rs"));
    let bad = common::TARGET_TOML.replace(
        "timeout  = \"20m\"",
        "timeout  = \"20m\"\nruntime_only = [\"a/[\"]",
    );
    assert!(common::load_err(&bad).contains("build.runtime_only"));
}

#[test]
fn a_misspelt_key_is_refused_not_dropped() {
    // Dropped silently, `eval_dta` would leave the validation data readable by training.
    let typo = common::TARGET_TOML.replace(
        "metric   =",
        "eval_dta = [\"trainer/data/val/**\"]\nmetric =",
    );
    let err = common::load_err(&typo);
    assert!(
        err.contains("target.eval_dta") && err.contains("eval_data"),
        "{err}"
    );
    let typo =
        common::TARGET_TOML.replace("timeout  = \"20m\"", "timeout  = \"20m\"\nruntime_onl = []");
    assert!(common::load_err(&typo).contains("build.runtime_onl"));
    let typo = common::TARGET_TOML.replace("smoke_budget", "smoke_budgett");
    assert!(common::load_err(&typo).contains("train.smoke_budgett"));
}

#[test]
fn a_misspelt_table_is_refused_not_dropped() {
    let typo = format!(
        "{}\n[sandbx]\nread = [\"/opt/venv\"]\n",
        common::TARGET_TOML
    );
    let err = common::load_err(&typo);
    assert!(err.contains("sandbx") && err.contains("[sandbox]"), "{err}");
    // The loop's own tables pass through.
    let loop_tables = format!(
        "{}\n[executor]\nslots = 2\n[loop]\nverdict_pairs = 0\n[agent]\nprovider = \"offline\"\n",
        common::TARGET_TOML
    );
    common::target_from(&loop_tables);
}
