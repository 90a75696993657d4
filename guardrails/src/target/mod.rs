//! The target contract: `agentloop.toml` at the root of the code being optimized.

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{GlobSet, GlobSetBuilder};
use thiserror::Error;

use crate::decision::DecisionRule;
use crate::guards::Guard;
use crate::policy::PolicyLimits;
use crate::run_policy::DivergenceRule;

/// File name of the target description, at the target's root.
pub const TARGET_FILE: &str = "agentloop.toml";

#[derive(Debug, Error)]
pub enum TargetError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: missing key `{key}`")]
    Missing { path: PathBuf, key: String },
    #[error("{path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// How to build the target.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildSpec {
    pub command: String,
    pub timeout: Duration,
    /// `runtime_only`: globs of files only training reads, never the build (a runtime config).
    /// A change to nothing else reuses its parent's build; the build's sandbox hides them, so a
    /// build that does read one fails rather than going stale.
    pub runtime_only: Vec<String>,
}

/// How to train the target; `command` holds `{seed} {split} {budget} {out}` placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSpec {
    pub command: String,
    pub budget: String,
    pub smoke_budget: String,
    pub timeout: Duration,
    pub memory_limit: u64,
    /// `divergence_loss_ratio` (default 10; 0 = only NaN/inf): when the loop kills a run whose
    /// streamed loss diverged.
    pub divergence: DivergenceRule,
    /// `metric_regex`: the metric read from the output (the eval step's when there is one,
    /// else the train command's; last match, first capture group) instead of `metrics.json`.
    pub metric_regex: Option<String>,
}

/// `[eval]`: evaluates a finished training run's `{out}` on `{split}` and writes
/// `{out}/metrics.json`. Only this step may read `[target] eval_data`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSpec {
    pub command: String,
    pub timeout: Duration,
}

/// `[sandbox]`: extra absolute paths (`~/` = `$HOME`) builds and runs may read or write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SandboxSpec {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
}

/// A parsed `agentloop.toml`.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    pub root: PathBuf,
    pub editable: Vec<String>,
    pub frozen: Vec<String>,
    pub metric: String,
    pub build: BuildSpec,
    pub train: TrainSpec,
    /// `[target] eval_data`: globs of files only the eval step may read.
    pub eval_data: Vec<String>,
    /// `[target] inputs`: globs of untracked files (data) linked read-only into every worktree.
    pub inputs: Vec<String>,
    /// `[target] env`: environment variables passed through to builds and runs (besides the
    /// sandbox's own allow-list).
    pub env: Vec<String>,
    /// `[eval]`: the separate evaluation step (`None`: the train command evaluates itself and
    /// its sandbox must then be allowed to read `eval_data`).
    pub eval: Option<EvalSpec>,
    pub sandbox: SandboxSpec,
    /// The decision rule with any `[decision]` overrides applied.
    pub decision: DecisionRule,
    /// `[decision.guards]`: secondary metrics an accepted change must not worsen.
    pub guards: Vec<Guard>,
    /// Patch policy limits with any `[policy]` overrides applied.
    pub policy: PolicyLimits,
    /// Tables this crate does not interpret (e.g. `[proposer.offline]`), passed through as TOML.
    pub extra: toml::Table,
    editable_set: GlobSet,
    frozen_set: GlobSet,
    eval_data_set: GlobSet,
    runtime_only_set: GlobSet,
}

const KNOWN_TABLES: [&str; 7] = [
    "target", "build", "train", "eval", "sandbox", "decision", "policy",
];

/// The tables the loop reads itself (passed through as `extra`).
const LOOP_TABLES: [&str; 5] = ["executor", "proposer", "loop", "agent", "ledger"];

/// The keys of the tables this crate reads (`[decision]` and `[policy]` are closed by their
/// types; other tables belong to the loop).
const KNOWN_KEYS: [(&str, &[&str]); 5] = [
    (
        "target",
        &["editable", "frozen", "metric", "eval_data", "inputs", "env"],
    ),
    ("build", &["command", "timeout", "runtime_only"]),
    (
        "train",
        &[
            "command",
            "budget",
            "smoke_budget",
            "timeout",
            "memory_limit",
            "divergence_loss_ratio",
            "metric_regex",
        ],
    ),
    ("eval", &["command", "timeout"]),
    ("sandbox", &["read", "write"]),
];

impl TargetSpec {
    /// Reads and parses `<repo_root>/agentloop.toml`.
    pub fn load(repo_root: &Path) -> Result<TargetSpec, TargetError> {
        let path = repo_root.join(TARGET_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| TargetError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(repo_root, &path, &text)
    }

    /// Parses the text of an `agentloop.toml`; `file` is only used in error messages.
    pub fn parse(root: &Path, file: &Path, text: &str) -> Result<TargetSpec, TargetError> {
        let mut doc: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| TargetError::Syntax {
                    path: file.to_path_buf(),
                    message: e.message().to_string(),
                })?;
        // Guards are the loop's, not the decision rule's (whose keys are closed).
        let guard_table = match doc.get_mut("decision") {
            Some(toml::Value::Table(decision)) => decision.remove("guards"),
            _ => None,
        };
        let keys = Keys { file, doc: &doc };
        if let Some(name) = doc
            .keys()
            .find(|k| !KNOWN_TABLES.contains(&k.as_str()) && !LOOP_TABLES.contains(&k.as_str()))
        {
            let all: Vec<String> = KNOWN_TABLES
                .iter()
                .chain(&LOOP_TABLES)
                .map(|t| format!("[{t}]"))
                .collect();
            return Err(keys.invalid(
                name,
                format!("unknown table; agentloop.toml takes {}", all.join(", ")),
            ));
        }
        for (table, known) in KNOWN_KEYS {
            keys.closed(table, known)?;
        }
        let guards = keys.guards(guard_table)?;
        let editable = keys.string_list("target", "editable")?;
        let frozen = keys.string_list_or("target", "frozen", Vec::new())?;
        let metric = keys.string_or("target", "metric", "val_bpb")?;
        let editable_set = keys.globs("target.editable", &editable)?;
        let frozen_set = keys.globs("target.frozen", &frozen)?;
        let build = BuildSpec {
            command: keys.string("build", "command")?,
            timeout: keys.duration("build", "timeout")?,
            runtime_only: keys.string_list_or("build", "runtime_only", Vec::new())?,
        };
        let runtime_only_set = keys.globs("build.runtime_only", &build.runtime_only)?;
        let train = TrainSpec {
            command: keys.string("train", "command")?,
            budget: keys.string("train", "budget")?,
            smoke_budget: keys.string("train", "smoke_budget")?,
            timeout: keys.duration("train", "timeout")?,
            memory_limit: keys.bytes("train", "memory_limit")?,
            divergence: DivergenceRule {
                loss_ratio: keys.ratio_or(
                    "train",
                    "divergence_loss_ratio",
                    DivergenceRule::default().loss_ratio,
                )?,
            },
            metric_regex: keys.metric_regex()?,
        };
        let eval_data = keys.string_list_or("target", "eval_data", Vec::new())?;
        let eval_data_set = keys.globs("target.eval_data", &eval_data)?;
        let inputs = keys.inputs()?;
        let env = keys.string_list_or("target", "env", Vec::new())?;
        if let Some(bad) = env.iter().find(|n| !is_env_name(n)) {
            return Err(keys.invalid(
                "target.env",
                format!("{bad:?} is not an environment variable name"),
            ));
        }
        let eval = match doc.get("eval") {
            None => None,
            Some(_) => Some(EvalSpec {
                command: keys.string("eval", "command")?,
                timeout: keys.duration("eval", "timeout")?,
            }),
        };
        // With a separate eval step the train command never needs to know the split. The seed
        // and the split may come from the environment (AGENTLOOP_SEED, AGENTLOOP_SPLIT) instead;
        // `agentloop init --check` verifies a trainer honours the seed.
        let train_placeholders: &[&str] = &["{budget}", "{out}"];
        for placeholder in train_placeholders {
            if !train.command.contains(placeholder) {
                return Err(keys.invalid(
                    "train.command",
                    format!("must contain the placeholder {placeholder}"),
                ));
            }
        }
        if let Some(eval) = &eval {
            for placeholder in ["{out}"] {
                if !eval.command.contains(placeholder) {
                    return Err(keys.invalid(
                        "eval.command",
                        format!("must contain the placeholder {placeholder}"),
                    ));
                }
            }
        }
        let sandbox = SandboxSpec {
            read: keys.abs_paths("sandbox", "read")?,
            write: keys.abs_paths("sandbox", "write")?,
        };
        let decision = keys.overridden("decision", decision_defaults(&keys)?)?;
        decision
            .validate()
            .map_err(|e| keys.invalid("decision", e.to_string()))?;
        let policy = keys.overridden("policy", PolicyLimits::default())?;
        let extra = doc
            .iter()
            .filter(|(k, _)| !KNOWN_TABLES.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(TargetSpec {
            root: root.to_path_buf(),
            editable,
            frozen,
            metric,
            build,
            train,
            eval_data,
            inputs,
            env,
            eval,
            sandbox,
            decision,
            guards,
            policy,
            extra,
            editable_set,
            frozen_set,
            eval_data_set,
            runtime_only_set,
        })
    }

    /// True when `path` (relative, `/`-separated) matches an `editable` glob.
    pub fn is_editable(&self, path: &str) -> bool {
        self.editable_set.is_match(path)
    }

    /// True when `path` matches a `frozen` glob (unlisted paths are frozen too: see `is_editable`).
    pub fn is_frozen(&self, path: &str) -> bool {
        self.frozen_set.is_match(path)
    }

    /// The environment every train and eval process gets besides its sandbox's allow-list:
    /// `AGENTLOOP_SEED`, and `AGENTLOOP_SPLIT` when the process may know the split (the eval
    /// step, or a train command that evaluates itself; never training before a separate eval).
    pub fn run_env(&self, seed: u64, split: Option<&str>) -> Vec<(String, String)> {
        let mut env = vec![("AGENTLOOP_SEED".to_string(), seed.to_string())];
        if let Some(split) = split {
            env.push(("AGENTLOOP_SPLIT".to_string(), split.to_string()));
        }
        env
    }

    /// True when `path` (relative to the root, `/`-separated) matches an `eval_data` glob.
    pub fn is_eval_data(&self, path: &str) -> bool {
        self.eval_data_set.is_match(path)
    }

    /// True when `path` matches a `[build] runtime_only` glob: the build never reads it.
    pub fn is_runtime_only(&self, path: &str) -> bool {
        self.runtime_only_set.is_match(path)
    }

    /// The train command for one run, placeholders substituted and shell-quoted.
    pub fn render_train_command(&self, seed: u64, split: &str, budget: &str, out: &Path) -> String {
        render(&self.train.command, seed, split, budget, out)
    }

    /// The eval command for one run (`None` without `[eval]`).
    pub fn render_eval_command(&self, seed: u64, split: &str, out: &Path) -> Option<String> {
        let eval = self.eval.as_ref()?;
        Some(render(&eval.command, seed, split, "", out))
    }

    /// The smoke-run command: the train command with the smoke budget.
    pub fn render_smoke_command(&self, seed: u64, split: &str, out: &Path) -> String {
        render(
            &self.train.command,
            seed,
            split,
            &self.train.smoke_budget,
            out,
        )
    }
}

fn render(template: &str, seed: u64, split: &str, budget: &str, out: &Path) -> String {
    // One pass over the template, so a substituted value that happens to contain
    // "{out}" is never substituted again.
    let values = [
        ("{seed}", seed.to_string()),
        ("{split}", split.to_string()),
        ("{budget}", budget.to_string()),
        ("{out}", out.to_string_lossy().into_owned()),
    ];
    let mut rendered = String::with_capacity(template.len() + 64);
    let mut rest = template;
    'outer: while !rest.is_empty() {
        for (name, value) in &values {
            if let Some(tail) = rest.strip_prefix(name) {
                rendered.push_str(&shell_quote(value));
                rest = tail;
                continue 'outer;
            }
        }
        let c = rest.chars().next().expect("non-empty");
        rendered.push(c);
        rest = &rest[c.len_utf8()..];
    }
    rendered
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Quotes a value for `sh -c` unless it is made only of characters the shell leaves alone.
pub fn shell_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c));
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

mod keys;

use keys::{decision_defaults, Keys};
