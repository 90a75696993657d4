use super::*;

fn git_repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    git2::Repository::init(dir.path()).unwrap();
    for (f, text) in files {
        let p = dir.path().join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

const TRAIN_PY: &str = "import torch\nfor step in range(10):\n    loss = model(x)\n    loss.backward()\n    opt.step()\n";

#[test]
fn a_python_trainer_gets_a_contract_that_parses_with_its_data_as_inputs() {
    let dir = git_repo(&[
        ("train.py", TRAIN_PY),
        (
            "config/train_char.py",
            "learning_rate = 1e-3\nn_embd = 64\nwandb_log = False\ndropout = 0.0\n",
        ),
        ("requirements.txt", "torch\n"),
        (".gitignore", "data/*.bin\n"),
        ("data/prepare.py", "print(1)\n"),
        ("data/train.bin", "x"),
        ("data/val.bin", "x"),
    ]);
    let (path, found) = write(dir.path()).unwrap();
    assert_eq!(found.kind, Kind::Python);
    assert_eq!(found.ignored_dirs, ["data"]);
    assert_eq!(found.eval_like, ["data/val.bin"]);
    let text = std::fs::read_to_string(&path).unwrap();
    let spec = agentloop_guardrails::target::TargetSpec::load(dir.path()).unwrap();
    assert_eq!(spec.inputs, ["data/**"]);
    assert!(spec.is_eval_data("data/val.bin") && !spec.is_eval_data("data/train.bin"));
    assert!(spec.is_editable("config/train_char.py"), "{text}");
    assert!(spec.train.metric_regex.is_some() && spec.eval.is_some());
    // The offline proposer's space is the config's numbers, and it loads.
    let space = crate::proposer::OfflineSpace::load(dir.path())
        .unwrap()
        .unwrap();
    assert_eq!(space.file, "config/train_char.py");
    let keys: Vec<&str> = space.space.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["learning_rate", "n_embd"], "{text}");
    // Every key is explained: no uncommented table.
    assert!(text.contains("# EDIT"), "{text}");
}

#[test]
fn an_existing_contract_is_never_overwritten() {
    let dir = git_repo(&[("agentloop.toml", "mine\n"), ("train.py", TRAIN_PY)]);
    let e = write(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("already exists") && e.contains("agentloop.toml"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("agentloop.toml")).unwrap(),
        "mine\n"
    );
}

#[test]
fn a_cargo_workspace_and_an_unknown_repository_get_contracts_that_parse() {
    for files in [
        vec![("Cargo.toml", "[workspace]\nmembers = []\n")],
        vec![("notes.txt", "hello")],
    ] {
        let dir = git_repo(&files);
        let (_path, found) = write(dir.path()).unwrap();
        agentloop_guardrails::target::TargetSpec::load(dir.path())
            .unwrap_or_else(|e| panic!("{:?}: {e}", found.kind));
    }
}

/// nanoGPT's layout: several configs, checkpoints and data ignored by git.
#[test]
fn a_nanogpt_layout_gets_its_training_config_hyperparameters_and_data() {
    let dir = git_repo(&[
        ("train.py", TRAIN_PY),
        ("model.py", "class GPT: pass\n"),
        ("configurator.py", "exec(open(config_file).read())\n"),
        ("config/eval_gpt2.py", "batch_size = 8\neval_iters = 500\n"),
        (
            "config/train_shakespeare_char.py",
            "out_dir = 'out-shakespeare-char'\neval_interval = 250\neval_iters = 200\n\
             log_interval = 10\nalways_save_checkpoint = False\nbatch_size = 64\nblock_size = 256\n\
             n_layer = 6\nn_embd = 384\ndropout = 0.2\nlearning_rate = 1e-3\nmax_iters = 5000\n",
        ),
        (".gitignore", "*.bin\n*.pkl\n*.pt\n__pycache__/\n"),
        ("data/shakespeare_char/prepare.py", "print(1)\n"),
        ("data/shakespeare_char/train.bin", "x"),
        ("data/shakespeare_char/val.bin", "x"),
        ("out-shakespeare-char/ckpt.pt", "x"),
    ]);
    let (_path, found) = write(dir.path()).unwrap();
    assert_eq!(
        found.config.as_deref(),
        Some("config/train_shakespeare_char.py")
    );
    assert_eq!(found.ignored_dirs, ["data"], "checkpoints are not inputs");
    assert_eq!(found.eval_like, ["data/shakespeare_char/val.bin"]);
    let spec = agentloop_guardrails::target::TargetSpec::load(dir.path()).unwrap();
    assert!(spec.is_editable("config/train_shakespeare_char.py"));
    assert!(!spec.is_editable("model.py") && !spec.is_editable("train.py"));
    let space = crate::proposer::OfflineSpace::load(dir.path())
        .unwrap()
        .unwrap();
    let keys: Vec<&str> = space.space.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "learning_rate",
            "dropout",
            "n_layer",
            "n_embd",
            "batch_size",
            "block_size"
        ]
    );
}
