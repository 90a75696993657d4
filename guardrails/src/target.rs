//! The target contract: `agentloop.toml` at the root of the code being optimized.

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{GlobSet, GlobSetBuilder};
use thiserror::Error;

use crate::decision::DecisionRule;
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
    /// `[target] env`: environment variables passed through to builds and runs (besides the
    /// sandbox's own allow-list).
    pub env: Vec<String>,
    /// `[eval]`: the separate evaluation step (`None`: the train command evaluates itself and
    /// its sandbox must then be allowed to read `eval_data`).
    pub eval: Option<EvalSpec>,
    pub sandbox: SandboxSpec,
    /// The decision rule with any `[decision]` overrides applied.
    pub decision: DecisionRule,
    /// Patch policy limits with any `[policy]` overrides applied.
    pub policy: PolicyLimits,
    /// Tables this crate does not interpret (e.g. `[proposer.offline]`), passed through as TOML.
    pub extra: toml::Table,
    editable_set: GlobSet,
    frozen_set: GlobSet,
    eval_data_set: GlobSet,
}

const KNOWN_TABLES: [&str; 7] = [
    "target", "build", "train", "eval", "sandbox", "decision", "policy",
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
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| TargetError::Syntax {
                path: file.to_path_buf(),
                message: e.message().to_string(),
            })?;
        let keys = Keys { file, doc: &doc };
        let editable = keys.string_list("target", "editable")?;
        let frozen = keys.string_list_or("target", "frozen", Vec::new())?;
        let metric = keys.string_or("target", "metric", "val_bpb")?;
        let editable_set = keys.globs("target.editable", &editable)?;
        let frozen_set = keys.globs("target.frozen", &frozen)?;
        let build = BuildSpec {
            command: keys.string("build", "command")?,
            timeout: keys.duration("build", "timeout")?,
        };
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
        };
        let eval_data = keys.string_list_or("target", "eval_data", Vec::new())?;
        let eval_data_set = keys.globs("target.eval_data", &eval_data)?;
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
        // With a separate eval step the train command never needs to know the split.
        let train_placeholders: &[&str] = match eval {
            Some(_) => &["{seed}", "{budget}", "{out}"],
            None => &["{seed}", "{split}", "{budget}", "{out}"],
        };
        for placeholder in train_placeholders {
            if !train.command.contains(placeholder) {
                return Err(keys.invalid(
                    "train.command",
                    format!("must contain the placeholder {placeholder}"),
                ));
            }
        }
        if let Some(eval) = &eval {
            for placeholder in ["{split}", "{out}"] {
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
            env,
            eval,
            sandbox,
            decision,
            policy,
            extra,
            editable_set,
            frozen_set,
            eval_data_set,
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

    /// True when `path` (relative to the root, `/`-separated) matches an `eval_data` glob.
    pub fn is_eval_data(&self, path: &str) -> bool {
        self.eval_data_set.is_match(path)
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

/// Typed access to the TOML document with errors that name the file and the key.
struct Keys<'a> {
    file: &'a Path,
    doc: &'a toml::Table,
}

impl Keys<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> TargetError {
        TargetError::Invalid {
            path: self.file.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn get(&self, table: &str, key: &str) -> Result<Option<&toml::Value>, TargetError> {
        match self.doc.get(table) {
            None => Ok(None),
            Some(toml::Value::Table(t)) => Ok(t.get(key)),
            Some(_) => Err(self.invalid(table, "must be a table")),
        }
    }

    fn require(&self, table: &str, key: &str) -> Result<&toml::Value, TargetError> {
        self.get(table, key)?.ok_or_else(|| TargetError::Missing {
            path: self.file.to_path_buf(),
            key: format!("{table}.{key}"),
        })
    }

    fn string(&self, table: &str, key: &str) -> Result<String, TargetError> {
        match self.require(table, key)? {
            toml::Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
            toml::Value::String(_) => Err(self.invalid(&format!("{table}.{key}"), "is empty")),
            other => Err(self.invalid(
                &format!("{table}.{key}"),
                format!("expected a string, found {}", other.type_str()),
            )),
        }
    }

    fn string_or(&self, table: &str, key: &str, default: &str) -> Result<String, TargetError> {
        match self.get(table, key)? {
            None => Ok(default.to_string()),
            Some(_) => self.string(table, key),
        }
    }

    fn string_list(&self, table: &str, key: &str) -> Result<Vec<String>, TargetError> {
        let name = format!("{table}.{key}");
        let toml::Value::Array(items) = self.require(table, key)? else {
            return Err(self.invalid(&name, "expected an array of strings"));
        };
        items
            .iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok(s.clone()),
                other => Err(self.invalid(
                    &name,
                    format!("expected strings, found {}", other.type_str()),
                )),
            })
            .collect()
    }

    fn string_list_or(
        &self,
        table: &str,
        key: &str,
        default: Vec<String>,
    ) -> Result<Vec<String>, TargetError> {
        match self.get(table, key)? {
            None => Ok(default),
            Some(_) => self.string_list(table, key),
        }
    }

    /// An optional list of absolute paths (`~/...` is under `$HOME`).
    fn abs_paths(&self, table: &str, key: &str) -> Result<Vec<PathBuf>, TargetError> {
        let name = format!("{table}.{key}");
        let home = std::env::var_os("HOME").map(PathBuf::from);
        self.string_list_or(table, key, Vec::new())?
            .into_iter()
            .map(|p| match (p.strip_prefix("~/"), &home) {
                (Some(rest), Some(home)) => Ok(home.join(rest)),
                (Some(_), None) => Err(self.invalid(&name, format!("{p:?}: HOME is not set"))),
                (None, _) if Path::new(&p).is_absolute() => Ok(PathBuf::from(p)),
                (None, _) => Err(self.invalid(
                    &name,
                    format!("{p:?} is not an absolute path (or one starting with ~/)"),
                )),
            })
            .collect()
    }

    fn globs(&self, key: &str, patterns: &[String]) -> Result<GlobSet, TargetError> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            // `*` stays within one directory, as in a shell.
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| self.invalid(key, format!("bad glob {pattern:?}: {e}")))?;
            builder.add(glob);
        }
        builder
            .build()
            .map_err(|e| self.invalid(key, e.to_string()))
    }

    /// A ratio > 1, or 0 for "off" (`None`); `default` when the key is absent.
    fn ratio_or(
        &self,
        table: &str,
        key: &str,
        default: Option<f64>,
    ) -> Result<Option<f64>, TargetError> {
        let name = format!("{table}.{key}");
        let value = match self.get(table, key)? {
            None => return Ok(default),
            Some(toml::Value::Float(f)) => *f,
            Some(toml::Value::Integer(i)) => *i as f64,
            Some(other) => {
                return Err(self.invalid(
                    &name,
                    format!("expected a number, found {}", other.type_str()),
                ))
            }
        };
        if value == 0.0 {
            Ok(None)
        } else if value.is_finite() && value > 1.0 {
            Ok(Some(value))
        } else {
            Err(self.invalid(
                &name,
                format!("{value} must be above 1 (a multiple of the first loss), or 0 for off"),
            ))
        }
    }

    fn duration(&self, table: &str, key: &str) -> Result<Duration, TargetError> {
        let text = self.string(table, key)?;
        humantime::parse_duration(&text).map_err(|e| {
            self.invalid(
                &format!("{table}.{key}"),
                format!("{text:?} is not a duration like \"10m\" ({e})"),
            )
        })
    }

    fn bytes(&self, table: &str, key: &str) -> Result<u64, TargetError> {
        let text = self.string(table, key)?;
        text.parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|e| {
                self.invalid(
                    &format!("{table}.{key}"),
                    format!("{text:?} is not a size like \"8GiB\" ({e})"),
                )
            })
    }

    /// Applies the keys of an optional table on top of `default` (unknown keys are errors).
    fn overridden<T>(&self, table: &str, default: T) -> Result<T, TargetError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        let Some(value) = self.doc.get(table) else {
            return Ok(default);
        };
        let toml::Value::Table(overrides) = value else {
            return Err(self.invalid(table, "must be a table"));
        };
        let toml::Value::Table(mut merged) = toml::Value::try_from(&default)
            .map_err(|e| self.invalid(table, format!("internal: {e}")))?
        else {
            return Err(self.invalid(table, "internal: defaults are not a table"));
        };
        for (k, v) in overrides {
            merged.insert(k.clone(), v.clone());
        }
        toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| self.invalid(table, e.message().to_string()))
    }
}

/// The defaults a `[decision]` table starts from: those of the `rule_version` it names (so
/// `rule_version = "sequential-screen/v2"` alone gives rule v2). Under v3, the v1/v2 keys it
/// would silently ignore are refused.
fn decision_defaults(keys: &Keys) -> Result<DecisionRule, TargetError> {
    let Some(toml::Value::Table(table)) = keys.doc.get("decision") else {
        return Ok(DecisionRule::default());
    };
    let version = table
        .get("rule_version")
        .and_then(toml::Value::as_str)
        .unwrap_or(crate::decision::RULE_VERSION);
    let defaults = DecisionRule::defaults_for(version);
    if defaults.is_v3() {
        if let Some(key) = ["stages", "min_effect_sd", "screen_reject_below_sd"]
            .into_iter()
            .find(|k| table.contains_key(*k))
        {
            return Err(keys.invalid(
                &format!("decision.{key}"),
                format!(
                    "belongs to rules v1/v2; rule {:?} uses [decision.confirm] looks and min_effect (or set rule_version = {:?})",
                    crate::decision::RULE_VERSION,
                    crate::decision::RULE_VERSION_V2
                ),
            ));
        }
    }
    Ok(defaults)
}
