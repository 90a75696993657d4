//! Typed access to agentloop.toml's tables, with errors that name the file and the key.

use super::*;

/// Typed access to the TOML document with errors that name the file and the key.
pub(super) struct Keys<'a> {
    pub(super) file: &'a Path,
    pub(super) doc: &'a toml::Table,
}

impl Keys<'_> {
    pub(super) fn invalid(&self, key: &str, message: impl Into<String>) -> TargetError {
        TargetError::Invalid {
            path: self.file.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Refuses a key of `table` that is not in `known`: a misspelt optional key (`eval_dta`)
    /// would otherwise be dropped without a word, and with it what the key protects.
    pub(super) fn closed(&self, table: &str, known: &[&str]) -> Result<(), TargetError> {
        let Some(toml::Value::Table(t)) = self.doc.get(table) else {
            return Ok(());
        };
        match t.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) => Err(self.invalid(
                &format!("{table}.{k}"),
                format!("unknown key; [{table}] takes {}", known.join(", ")),
            )),
        }
    }

    pub(super) fn get(&self, table: &str, key: &str) -> Result<Option<&toml::Value>, TargetError> {
        match self.doc.get(table) {
            None => Ok(None),
            Some(toml::Value::Table(t)) => Ok(t.get(key)),
            Some(_) => Err(self.invalid(table, "must be a table")),
        }
    }

    pub(super) fn require(&self, table: &str, key: &str) -> Result<&toml::Value, TargetError> {
        self.get(table, key)?.ok_or_else(|| TargetError::Missing {
            path: self.file.to_path_buf(),
            key: format!("{table}.{key}"),
        })
    }

    pub(super) fn string(&self, table: &str, key: &str) -> Result<String, TargetError> {
        match self.require(table, key)? {
            toml::Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
            toml::Value::String(_) => Err(self.invalid(&format!("{table}.{key}"), "is empty")),
            other => Err(self.invalid(
                &format!("{table}.{key}"),
                format!("expected a string, found {}", other.type_str()),
            )),
        }
    }

    pub(super) fn string_or(
        &self,
        table: &str,
        key: &str,
        default: &str,
    ) -> Result<String, TargetError> {
        match self.get(table, key)? {
            None => Ok(default.to_string()),
            Some(_) => self.string(table, key),
        }
    }

    pub(super) fn string_list(&self, table: &str, key: &str) -> Result<Vec<String>, TargetError> {
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

    pub(super) fn string_list_or(
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
    pub(super) fn abs_paths(&self, table: &str, key: &str) -> Result<Vec<PathBuf>, TargetError> {
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

    pub(super) fn globs(&self, key: &str, patterns: &[String]) -> Result<GlobSet, TargetError> {
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

    /// `[train] metric_regex`: a regular expression with a capture group for the number.
    pub(super) fn metric_regex(&self) -> Result<Option<String>, TargetError> {
        if self.get("train", "metric_regex")?.is_none() {
            return Ok(None);
        }
        let text = self.string("train", "metric_regex")?;
        let re = regex::Regex::new(&text).map_err(|e| {
            self.invalid("train.metric_regex", format!("bad regular expression: {e}"))
        })?;
        if re.captures_len() < 2 {
            return Err(self.invalid(
                "train.metric_regex",
                "needs a capture group around the number, e.g. 'val_bpb:\\s*([0-9.eE+-]+)'",
            ));
        }
        Ok(Some(text))
    }

    /// `[target] inputs`: relative globs inside the repository, never into the loop's own
    /// state or git's.
    pub(super) fn inputs(&self) -> Result<Vec<String>, TargetError> {
        let inputs = self.string_list_or("target", "inputs", Vec::new())?;
        for g in &inputs {
            let escapes = g.starts_with('/') || g.split('/').any(|part| part == "..");
            let internal = [".git", ".agentloop"]
                .iter()
                .any(|d| g == d || g.starts_with(&format!("{d}/")));
            if escapes || internal {
                return Err(self.invalid(
                    "target.inputs",
                    format!(
                        "{g:?} must be a path inside the repository, outside .git and .agentloop"
                    ),
                ));
            }
        }
        self.globs("target.inputs", &inputs)?;
        Ok(inputs)
    }

    /// A ratio > 1, or 0 for "off" (`None`); `default` when the key is absent.
    pub(super) fn ratio_or(
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

    pub(super) fn duration(&self, table: &str, key: &str) -> Result<Duration, TargetError> {
        let text = self.string(table, key)?;
        humantime::parse_duration(&text).map_err(|e| {
            self.invalid(
                &format!("{table}.{key}"),
                format!("{text:?} is not a duration like \"10m\" ({e})"),
            )
        })
    }

    pub(super) fn bytes(&self, table: &str, key: &str) -> Result<u64, TargetError> {
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

    /// `[decision.guards]`, one guard per key (`peak_mem_bytes = { max_ratio = 1.10 }`).
    pub(super) fn guards(&self, table: Option<toml::Value>) -> Result<Vec<Guard>, TargetError> {
        let Some(value) = table else {
            return Ok(Vec::new());
        };
        let toml::Value::Table(table) = value else {
            return Err(self.invalid("decision.guards", "must be a table"));
        };
        table
            .iter()
            .map(|(metric, v)| {
                Guard::parse(metric, v)
                    .map_err(|m| self.invalid(&format!("decision.guards.{metric}"), m))
            })
            .collect()
    }

    /// Applies the keys of an optional table on top of `default` (unknown keys are errors).
    pub(super) fn overridden<T>(&self, table: &str, default: T) -> Result<T, TargetError>
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
            match (table, k.as_str()) {
                // `[decision] rule = "greedy"` is the short name of a rule_version, whose
                // defaults `decision_defaults` already chose.
                ("decision", "rule") => {}
                _ => {
                    merged.insert(k.clone(), v.clone());
                }
            }
        }
        toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| self.invalid(table, e.message().to_string()))
    }
}

/// The defaults a `[decision]` table starts from: those of the `rule_version` it names (so
/// `rule_version = "sequential-screen/v2"` alone gives rule v2). Under v3, the v1/v2 keys it
/// would silently ignore are refused.
pub(super) fn decision_defaults(keys: &Keys) -> Result<DecisionRule, TargetError> {
    let Some(toml::Value::Table(table)) = keys.doc.get("decision") else {
        return Ok(DecisionRule::default());
    };
    let version = match (table.get("rule"), table.get("rule_version")) {
        (Some(_), Some(_)) => {
            return Err(keys.invalid("decision.rule", "give rule or rule_version, not both"))
        }
        (Some(name), None) => {
            let name = name.as_str().unwrap_or_default();
            DecisionRule::version_named(name).ok_or_else(|| {
                keys.invalid(
                    "decision.rule",
                    format!("{name:?} is not a rule: \"paired-sequential\" (the default), \"greedy\" or \"greedy-fresh\""),
                )
            })?
        }
        (None, v) => v
            .and_then(toml::Value::as_str)
            .unwrap_or(crate::decision::RULE_VERSION),
    };
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
