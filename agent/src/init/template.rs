//! The text of a generated `agentloop.toml`: every key with a comment saying what it is for;
//! guesses are marked `EDIT`.

use std::fmt::Write;
use std::path::PathBuf;

use super::detect::{Found, Kind};
use crate::proposer::toml_edit::format_value;

pub fn render(found: &Found) -> String {
    let mut t = String::new();
    let what = match found.kind {
        Kind::Python => format!(
            "a Python trainer ({})",
            found.script.as_deref().unwrap_or("?")
        ),
        Kind::Cargo => "a Cargo workspace".to_string(),
        Kind::Unknown => "a repository of unknown kind".to_string(),
    };
    let _ = writeln!(
        t,
        "# agentloop target, written by `agentloop init` for {what}.\n\
         # Lines marked EDIT are guesses: check them, commit this file, then run\n\
         # `agentloop init --check`. The format is ARCHITECTURE.md section 1 of agentloop.\n"
    );
    target_table(&mut t, found);
    match found.kind {
        Kind::Python => python_commands(&mut t, found),
        Kind::Cargo => cargo_commands(&mut t),
        Kind::Unknown => generic_commands(&mut t),
    }
    common_tail(&mut t, found);
    t
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

fn target_table(t: &mut String, found: &Found) {
    let editable: Vec<String> = match found.kind {
        // The config (else the training script). Not the model file: the frozen evaluation
        // runs its forward pass, and code run while scoring must not be editable.
        Kind::Python => found
            .config
            .iter()
            .chain(found.script.iter())
            .take(1)
            .cloned()
            .collect(),
        Kind::Cargo => vec!["src/**/*.rs".into()],
        Kind::Unknown => vec!["src/**".into()],
    };
    let mut frozen = vec![
        "agentloop.toml".to_string(),
        ".gitignore".into(),
        "evaluate.py".into(),
    ];
    if found.kind != Kind::Python {
        frozen.pop();
    } else if found.script.as_deref() != Some("model.py") {
        frozen.push("model.py".into());
    }
    if let Some(r) = &found.requirements {
        frozen.push(r.clone());
    }
    let _ = writeln!(
        t,
        "[target]\n\
         # EDIT: the files the agent may change (globs; `*` stays in one directory, `**` crosses\n\
         # them). Keep this to training code and its config: never the evaluation, nor the\n\
         # model's forward pass when the evaluation runs it (it could read the eval data).\n\
         editable = {}\n\
         # Files it may not change. Anything matched by neither list is frozen as well; list the\n\
         # evaluation, the data pipeline and this file so a reader sees the boundary.\n\
         frozen = {}",
        list(&editable),
        list(&frozen)
    );
    if found.ignored_dirs.is_empty() {
        let _ = writeln!(
            t,
            "# Files git does not hold but every run needs (data, tokenizers), as globs. Each must\n\
             # match at least one file when a session starts; they are linked read-only into the\n\
             # loop's worktrees and their hash is recorded in the ledger.\n\
             # inputs = [\"data/**\"]"
        );
    } else {
        let globs: Vec<String> = found
            .ignored_dirs
            .iter()
            .map(|d| format!("{d}/**"))
            .collect();
        let _ = writeln!(
            t,
            "# Files git does not hold (found ignored by .gitignore) but every run needs: linked\n\
             # read-only into the loop's worktrees; their hash is recorded in the ledger. Each glob\n\
             # must match at least one file when a session starts.\n\
             inputs = {}",
            list(&globs)
        );
    }
    if found.eval_like.is_empty() {
        let _ = writeln!(
            t,
            "# EDIT: the evaluation data, readable only by the [eval] step (hidden from the build\n\
             # and from training). Without it, nothing stops training from reading it.\n\
             # eval_data = [\"data/val.bin\"]"
        );
    } else {
        let _ = writeln!(
            t,
            "# EDIT (found by name): the evaluation data, readable only by the [eval] step (hidden\n\
             # from the build and from training).\n\
             eval_data = {}",
            list(&found.eval_like)
        );
    }
    let _ = writeln!(
        t,
        "# The number the loop minimizes (the key in metrics.json, or what metric_regex finds).\n\
         metric = \"val_bpb\"\n"
    );
}

fn python_commands(t: &mut String, found: &Found) {
    let script = found.script.as_deref().unwrap_or("train.py");
    let _ = writeln!(
        t,
        "[build]\n\
         # Runs once per change before any training; a failure is recorded as build_failed.\n\
         # Python has nothing to compile: byte-compiling catches syntax errors early.\n\
         command = \"python3 -m compileall -q .\"\n\
         timeout = \"5m\"\n\n\
         [train]\n\
         # EDIT: one training run, started in a checkout of the change. It must train for\n\
         # {{budget}}, save its weights under {{out}} (a fresh directory per run) and take its seed\n\
         # from the AGENTLOOP_SEED environment variable (or put --seed {{seed}} in the command).\n\
         # It must not print or write the score: the [eval] step does.\n\
         command = \"python3 {script} --budget {{budget}} --out {{out}}\"\n\
         # EDIT: one run's budget, passed as {{budget}}; a run should take seconds to minutes.\n\
         budget = \"200steps\"\n\
         # The smoke run's budget: the quick check that a change runs at all.\n\
         smoke_budget = \"2steps\"\n\
         timeout = \"30m\"\n\
         # The run is killed when its processes' memory passes this.\n\
         memory_limit = \"8GiB\"\n\
         # The metric, read from the [eval] step's output: the first group of the last match.\n\
         # (Or write {{out}}/metrics.json with a \"val_bpb\" key and delete this line.)\n\
         metric_regex = 'val_bpb:\\s*([0-9.eE+-]+)'\n\n\
         [eval]\n\
         # EDIT: a FROZEN wrapper you write (agentloop's README, \"Use it on your own trainer\"):\n\
         # it loads the weights from {{out}}, scores the split in AGENTLOOP_SPLIT (val, or holdout\n\
         # for the final confirmation) and prints `val_bpb: X`. It may read eval_data; it must\n\
         # import nothing the agent can edit.\n\
         command = \"python3 evaluate.py --out {{out}}\"\n\
         timeout = \"10m\"\n"
    );
    if let Some(prefix) = python_prefix_outside_usr() {
        let _ = writeln!(
            t,
            "[sandbox]\n\
             # Builds and runs see the system (/usr, /lib, /etc) and their checkout only; this\n\
             # python3 lives elsewhere, so the sandbox may read its installation.\n\
             read = [{:?}]\n",
            prefix.to_string_lossy()
        );
    } else if let Some(r) = &found.requirements {
        let _ = writeln!(
            t,
            "# Packages from {r} installed in a virtualenv outside /usr? Let the sandbox read it:\n\
             # [sandbox]\n\
             # read = [\"/path/to/venv\"]\n"
        );
    }
}

fn cargo_commands(t: &mut String) {
    let _ = writeln!(
        t,
        "[build]\n\
         # Runs in a checkout of the change with CARGO_TARGET_DIR shared between builds. Copy the\n\
         # binary into the checkout: runs use the checkout's copy.\n\
         # EDIT: your binary's name.\n\
         command = \"cargo build --release && mkdir -p .agentloop-bin && cp \\\"$CARGO_TARGET_DIR/release/trainer\\\" .agentloop-bin/\"\n\
         timeout = \"20m\"\n\
         # Files the binary reads when it runs, never compiles in (a config): a change to only\n\
         # these reuses its parent's build. The build cannot read them (its sandbox hides them).\n\
         # runtime_only = [\"config/*.toml\"]\n\n\
         [train]\n\
         # EDIT: one training run. It trains for {{budget}}, takes {{seed}} (or AGENTLOOP_SEED),\n\
         # and writes {{out}}/metrics.json with the metric's key (or see metric_regex below).\n\
         command = \".agentloop-bin/trainer train --seed {{seed}} --budget {{budget}} --out {{out}}\"\n\
         budget = \"30s\"\n\
         smoke_budget = \"3steps\"\n\
         timeout = \"10m\"\n\
         memory_limit = \"8GiB\"\n\
         # metric_regex = 'val_bpb:\\s*([0-9.eE+-]+)'   # the metric from the output instead\n"
    );
}

fn generic_commands(t: &mut String) {
    let _ = writeln!(
        t,
        "[build]\n\
         # EDIT: how to build a change (\"true\" when nothing needs building).\n\
         command = \"true\"\n\
         timeout = \"10m\"\n\n\
         [train]\n\
         # EDIT: one training run: trains for {{budget}} with seed AGENTLOOP_SEED (or {{seed}}),\n\
         # writes {{out}}/metrics.json or prints the metric for metric_regex.\n\
         command = \"./train.sh {{budget}} {{out}}\"\n\
         budget = \"60s\"\n\
         smoke_budget = \"5s\"\n\
         timeout = \"10m\"\n\
         memory_limit = \"8GiB\"\n\
         metric_regex = 'val_bpb:\\s*([0-9.eE+-]+)'\n"
    );
}

fn common_tail(t: &mut String, found: &Found) {
    let _ = writeln!(
        t,
        "# How many training runs go at once (on GPUs: `gpus = [0, 1]`, one run per GPU).\n\
         [executor]\n\
         slots = 1\n"
    );
    let Some(config) = &found.config else {
        let _ = writeln!(
            t,
            "# Without an LLM (--agent), the offline proposer changes one value of a config file\n\
             # at a time (a TOML file, or a Python file of `name = value` lines):\n\
             # [proposer.offline]\n\
             # file = \"config.py\"\n\
             # [[proposer.offline.space]]\n\
             # key = \"learning_rate\"\n\
             # values = [1e-4, 3e-4, 1e-3]"
        );
        return;
    };
    let _ = writeln!(
        t,
        "# Without an LLM (--agent), the offline proposer changes one value of this file at a\n\
         # time, among these values (EDIT: the grid of each setting worth searching).\n\
         [proposer.offline]\n\
         file = {config:?}"
    );
    for (name, value) in searchable(&found.settings) {
        let values: Vec<String> = value.iter().map(format_value).collect();
        let _ = writeln!(
            t,
            "\n[[proposer.offline.space]]\nkey = {name:?}\nvalues = [{}]",
            values.join(", ")
        );
    }
}

/// Hyperparameters worth searching first (the usual names), then other numbers; never
/// logging, evaluation or run-length settings. At most six.
fn searchable(settings: &[(String, toml::Value)]) -> Vec<(&String, Vec<toml::Value>)> {
    const KNOWN: [&str; 14] = [
        "learning_rate",
        "lr",
        "min_lr",
        "weight_decay",
        "beta1",
        "beta2",
        "dropout",
        "n_layer",
        "n_head",
        "n_embd",
        "batch_size",
        "warmup_iters",
        "grad_clip",
        "init_scale",
    ];
    const NOT: [&str; 7] = ["interval", "log", "eval", "save", "seed", "max_", "iters"];
    let rank = |n: &str| KNOWN.iter().position(|k| *k == n).unwrap_or(KNOWN.len());
    let mut picked: Vec<(&String, Vec<toml::Value>)> = settings
        .iter()
        .filter(|(n, _)| rank(n) < KNOWN.len() || !NOT.iter().any(|x| n.contains(x)))
        .filter_map(|(n, v)| grid(v).map(|g| (n, g)))
        .collect();
    picked.sort_by_key(|(n, _)| rank(n));
    picked.truncate(6);
    picked
}

/// Half, the same and double a positive number.
fn grid(v: &toml::Value) -> Option<Vec<toml::Value>> {
    match v {
        toml::Value::Float(f) if *f > 0.0 => Some(
            [f / 2.0, *f, f * 2.0]
                .into_iter()
                .map(toml::Value::Float)
                .collect(),
        ),
        toml::Value::Integer(i) if *i >= 2 => Some(
            [i / 2, *i, i * 2]
                .into_iter()
                .map(toml::Value::Integer)
                .collect(),
        ),
        _ => None,
    }
}

/// The installation prefix of the `python3` on PATH when the sandbox could not read it
/// (pyenv, conda, a virtualenv in the home directory).
fn python_prefix_outside_usr() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let exe = std::env::split_paths(&path)
        .map(|d| d.join("python3"))
        .find(|p| p.is_file())?;
    let readable = crate::sandbox::system_read_paths();
    if readable.iter().any(|r| exe.starts_with(r)) {
        return None;
    }
    // <prefix>/bin/python3 or <prefix>/shims/python3 (pyenv).
    exe.parent()?.parent().map(PathBuf::from)
}
