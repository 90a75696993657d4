//! What kind of trainer a repository holds: a Cargo workspace, a Python training script, or
//! neither; its config file, its dependencies file and its data that git ignores.

use std::path::Path;

use anyhow::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Cargo,
    Python,
    Unknown,
}

/// What `init` found in the repository (paths relative to its root, `/`-separated).
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub kind: Kind,
    /// The training script (`train.py`, or a `.py` file with a training loop).
    pub script: Option<String>,
    /// A Python config of `name = value` lines (`config.py`, `config/*.py`).
    pub config: Option<String>,
    /// Its numeric settings, for the offline proposer's space.
    pub settings: Vec<(String, toml::Value)>,
    /// `requirements.txt` / `pyproject.toml` / `environment.yml`.
    pub requirements: Option<String>,
    /// Top-level directories with files that git ignores (data, tokenizers).
    pub ignored_dirs: Vec<String>,
    /// Files in those directories that look like evaluation data (`val`, `holdout`, `test`).
    pub eval_like: Vec<String>,
}

/// Looks at the repository at `root` (a git repository: ignored paths come from git).
pub fn detect(root: &Path) -> Result<Found> {
    let repo = git2::Repository::open(root).ok();
    let top: Vec<String> = list(root);
    let has = |name: &str| top.iter().any(|n| n == name);
    let py_files: Vec<String> = top.iter().filter(|n| n.ends_with(".py")).cloned().collect();
    let script = if has("train.py") {
        Some("train.py".to_string())
    } else {
        py_files
            .iter()
            .find(|f| looks_like_training(&root.join(f)))
            .cloned()
    };
    let kind = if script.is_some() {
        Kind::Python
    } else if has("Cargo.toml") {
        Kind::Cargo
    } else {
        Kind::Unknown
    };
    let config = ["config.py", "configurator.py"]
        .iter()
        .map(|s| s.to_string())
        .find(|f| has(f) && f != "configurator.py")
        .or_else(|| {
            // A training config first (`config/train_*.py`), not an evaluation one.
            let mut in_dir: Vec<String> = list(&root.join("config"))
                .into_iter()
                .filter(|f| f.ends_with(".py"))
                .map(|f| format!("config/{f}"))
                .collect();
            in_dir.sort_by_key(|f| (!f.contains("train"), f.contains("eval"), f.clone()));
            in_dir.into_iter().next()
        });
    let settings = config
        .as_ref()
        .and_then(|c| std::fs::read_to_string(root.join(c)).ok())
        .map(|text| numeric_settings(&text))
        .unwrap_or_default();
    let requirements = ["requirements.txt", "pyproject.toml", "environment.yml"]
        .iter()
        .find(|f| has(f))
        .map(|s| s.to_string());
    let mut ignored_dirs = Vec::new();
    let mut eval_like = Vec::new();
    if let Some(repo) = &repo {
        for name in &top {
            let path = root.join(name);
            if !path.is_dir() || name.starts_with('.') || not_data(name) {
                continue;
            }
            let files = files_under(&path, name);
            let ignored: Vec<&String> = files
                .iter()
                .filter(|f| repo.status_should_ignore(Path::new(f)).unwrap_or(false))
                .collect();
            if ignored.is_empty() {
                continue;
            }
            ignored_dirs.push(name.clone());
            eval_like.extend(ignored.into_iter().filter(|f| is_eval_like(f)).cloned());
        }
    }
    eval_like.sort();
    Ok(Found {
        kind,
        script,
        config,
        settings,
        requirements,
        ignored_dirs,
        eval_like,
    })
}

/// Ignored folders that hold environments, outputs or logs, not data every run needs.
fn not_data(dir: &str) -> bool {
    const SKIP: [&str; 10] = [
        "target",
        "venv",
        "env",
        "node_modules",
        "__pycache__",
        "wandb",
        "logs",
        "runs",
        "checkpoints",
        "build",
    ];
    SKIP.contains(&dir) || dir.starts_with("out")
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Files under `dir` (relative to the repository root), at most a few thousand.
fn files_under(dir: &Path, rel: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), rel.to_string())];
    while let Some((d, r)) = stack.pop() {
        for name in list(&d) {
            let p = d.join(&name);
            let child = format!("{r}/{name}");
            if p.is_dir() {
                stack.push((p, child));
            } else if out.len() < 5000 {
                out.push(child);
            }
        }
    }
    out
}

fn is_eval_like(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    ["val", "valid", "holdout", "test"]
        .iter()
        .any(|w| name.starts_with(w) || name.contains(&format!("_{w}")))
        || path
            .split('/')
            .any(|part| ["val", "holdout", "test"].contains(&part))
}

/// A training loop: an optimizer step and a loss, in the first 200 KB.
fn looks_like_training(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let text = &text[..text.len().min(200_000)];
    text.contains("loss") && (text.contains(".step(") || text.contains("backward"))
}

/// Top-level `name = number` lines of a Python config.
pub(crate) fn numeric_settings(text: &str) -> Vec<(String, toml::Value)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with(|c: char| c.is_whitespace() || c == '#') {
            continue;
        }
        let Some((name, rest)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let value = rest.split('#').next().unwrap_or("").trim();
        let Ok(doc) = format!("v = {value}").parse::<toml::Table>() else {
            continue;
        };
        if let Some(v @ (toml::Value::Integer(_) | toml::Value::Float(_))) = doc.get("v") {
            if !out.iter().any(|(n, _)| n == name) {
                out.push((name.to_string(), v.clone()));
            }
        }
    }
    out
}
