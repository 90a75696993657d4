//! The patch policy: a pure function from a proposed change and the target description to
//! accept or a reasoned rejection (a stable code plus a one-line message for a person).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::rust_scan;
use crate::target::TargetSpec;

/// One file of a proposed change, whole contents before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileChange {
    /// Repository-relative path with `/` separators.
    pub path: String,
    /// `None` for a new file.
    pub before: Option<String>,
    /// `None` for a deletion; bytes, because a patch may try to write binary content.
    pub after: Option<Vec<u8>>,
    /// The path is (or would become) a symbolic link.
    pub is_symlink: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProposedChange {
    pub files: Vec<FileChange>,
}

/// Limits of the patch policy (`[policy]` in agentloop.toml overrides them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyLimits {
    /// Maximum size of the change: bytes of removed plus added lines.
    pub max_patch_bytes: usize,
    /// External crates editable Rust files may use even if the file did not use them before.
    pub allowed_crates: Vec<String>,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        PolicyLimits {
            max_patch_bytes: 64 * 1024,
            allowed_crates: [
                "candle_core",
                "candle_nn",
                "serde",
                "serde_json",
                "anyhow",
                "rand",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// Stable reason codes; `as_str` is what the ledger stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionCode {
    EmptyPatch,
    TooLarge,
    InvalidPath,
    AbsolutePath,
    PathTraversal,
    Symlink,
    BuildScript,
    NewDependency,
    FrozenPath,
    NotEditable,
    BinaryContent,
    UnparsableSource,
    ForbiddenConstruct,
}

impl RejectionCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionCode::EmptyPatch => "empty_patch",
            RejectionCode::TooLarge => "too_large",
            RejectionCode::InvalidPath => "invalid_path",
            RejectionCode::AbsolutePath => "absolute_path",
            RejectionCode::PathTraversal => "path_traversal",
            RejectionCode::Symlink => "symlink",
            RejectionCode::BuildScript => "build_script",
            RejectionCode::NewDependency => "new_dependency",
            RejectionCode::FrozenPath => "frozen_path",
            RejectionCode::NotEditable => "not_editable",
            RejectionCode::BinaryContent => "binary_content",
            RejectionCode::UnparsableSource => "unparsable_source",
            RejectionCode::ForbiddenConstruct => "forbidden_construct",
        }
    }
}

impl std::fmt::Display for RejectionCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    pub code: RejectionCode,
    pub message: String,
}

fn reject<T>(code: RejectionCode, message: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection {
        code,
        message: message.into(),
    })
}

/// Paths no target may open to the agent, whatever its globs say.
fn always_frozen(path: &str) -> bool {
    let first = path.split('/').next().unwrap_or("");
    let name = path.rsplit('/').next().unwrap_or("");
    matches!(first, ".git" | ".agentloop" | ".agentloop-bin")
        || path.split('/').any(|c| c == ".git")
        || matches!(
            name,
            "Cargo.lock" | "agentloop.toml" | ".gitmodules" | ".cargo"
        )
        || path.split('/').any(|c| c == ".cargo")
        || name.ends_with(".sqlite")
        || name.ends_with(".db")
}

/// Checks a proposed change against the target's policy.
pub fn check(
    change: &ProposedChange,
    target: &TargetSpec,
    limits: &PolicyLimits,
) -> Result<(), Rejection> {
    let changed: Vec<&FileChange> = change
        .files
        .iter()
        .filter(|f| f.is_symlink || f.before.as_deref().map(str::as_bytes) != f.after.as_deref())
        .collect();
    if changed.is_empty() {
        return reject(RejectionCode::EmptyPatch, "the patch changes nothing");
    }
    let mut seen = BTreeSet::new();
    for file in &changed {
        check_path(&file.path)?;
        if !seen.insert(file.path.as_str()) {
            return reject(
                RejectionCode::InvalidPath,
                format!("{} appears twice in the patch", file.path),
            );
        }
    }
    let size: usize = changed.iter().map(|f| changed_bytes(f)).sum();
    if size > limits.max_patch_bytes {
        return reject(
            RejectionCode::TooLarge,
            format!(
                "the patch changes {size} bytes, over the limit of {} bytes",
                limits.max_patch_bytes
            ),
        );
    }
    for file in &changed {
        check_file(file, target, limits)?;
    }
    Ok(())
}

/// Shape of the path alone: relative, normal, no traversal.
fn check_path(path: &str) -> Result<(), Rejection> {
    if path.is_empty() || path.chars().any(|c| c.is_control()) {
        return reject(
            RejectionCode::InvalidPath,
            format!("path {path:?} is empty or holds control characters"),
        );
    }
    let windows_drive = path.len() >= 2 && path.as_bytes()[1] == b':';
    if path.starts_with('/') || path.starts_with('\\') || path.starts_with('~') || windows_drive {
        return reject(
            RejectionCode::AbsolutePath,
            format!("{path} is absolute; paths must be relative to the repository root"),
        );
    }
    if path.contains('\\') || path.split('/').any(|c| c == "..") {
        return reject(
            RejectionCode::PathTraversal,
            format!("{path} tries to leave its directory (`..` or `\\`)"),
        );
    }
    if path.split('/').any(|c| c.is_empty() || c == ".") {
        return reject(
            RejectionCode::InvalidPath,
            format!("{path} is not a normalized path (empty or `.` component)"),
        );
    }
    Ok(())
}

fn check_file(
    file: &FileChange,
    target: &TargetSpec,
    limits: &PolicyLimits,
) -> Result<(), Rejection> {
    let path = file.path.as_str();
    let name = path.rsplit('/').next().unwrap_or(path);
    if file.is_symlink {
        return reject(
            RejectionCode::Symlink,
            format!("{path} is a symbolic link; links could point outside the editable files"),
        );
    }
    if name == "build.rs" {
        return reject(
            RejectionCode::BuildScript,
            format!("{path} is a build script, which runs arbitrary code at build time"),
        );
    }
    if name == "Cargo.toml" {
        return check_manifest(file);
    }
    if always_frozen(path) || target.is_frozen(path) {
        return reject(
            RejectionCode::FrozenPath,
            format!(
                "{path} is frozen (evaluation, data, build files and the ledger are off limits)"
            ),
        );
    }
    if !target.is_editable(path) {
        let what = if file.before.is_none() {
            "new file "
        } else {
            ""
        };
        return reject(
            RejectionCode::NotEditable,
            format!("{what}{path} is not listed in the target's editable files"),
        );
    }
    let Some(after) = &file.after else {
        return Ok(()); // Deleting an editable file is allowed; the build will judge it.
    };
    let Some(text) = as_text(after) else {
        return reject(
            RejectionCode::BinaryContent,
            format!("{path} would hold binary content (NUL bytes or invalid UTF-8)"),
        );
    };
    if path.ends_with(".rs") {
        check_rust(path, file.before.as_deref(), text, limits)?;
    }
    Ok(())
}

fn as_text(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    (!text.contains('\0')).then_some(text)
}

/// The code after the patch must hold no construct that escapes the evaluation, and may use
/// no crate that the file did not use before (unless allowed).
fn check_rust(
    path: &str,
    before: Option<&str>,
    after: &str,
    limits: &PolicyLimits,
) -> Result<(), Rejection> {
    let scan = rust_scan::scan(after).or_else(|e| {
        reject(
            RejectionCode::UnparsableSource,
            format!("{path} does not parse as Rust after the patch: {e}"),
        )
    })?;
    if let Some(first) = scan.findings.first() {
        let more = match scan.findings.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        return reject(
            RejectionCode::ForbiddenConstruct,
            format!("{path} uses {}{more}", first.construct),
        );
    }
    let known: BTreeSet<String> = before
        .and_then(|b| rust_scan::scan(b).ok())
        .map(|s| s.crate_roots)
        .unwrap_or_default();
    let new_crate = scan
        .crate_roots
        .iter()
        .find(|r| !known.contains(*r) && !limits.allowed_crates.contains(r));
    if let Some(name) = new_crate {
        return reject(
            RejectionCode::NewDependency,
            format!("{path} starts using the crate `{name}`, which the target does not allow"),
        );
    }
    Ok(())
}

/// Any Cargo.toml is frozen; say `new_dependency` or `build_script` when that is what changed.
fn check_manifest(file: &FileChange) -> Result<(), Rejection> {
    let path = &file.path;
    let parse = |t: Option<&str>| t.and_then(|t| t.parse::<toml::Table>().ok());
    let before = parse(file.before.as_deref());
    let after = parse(
        file.after
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok()),
    );
    let deps = |t: &Option<toml::Table>| {
        let mut found = BTreeSet::new();
        if let Some(t) = t {
            collect_dependencies(t, &mut found);
        }
        found
    };
    if let Some(new) = deps(&after).difference(&deps(&before)).next() {
        return reject(
            RejectionCode::NewDependency,
            format!("{path} adds the dependency `{new}`; dependencies are frozen"),
        );
    }
    let build_key = |t: &Option<toml::Table>| {
        t.as_ref()
            .and_then(|t| t.get("package"))
            .and_then(|p| p.get("build"))
            .cloned()
    };
    if build_key(&after).is_some() && build_key(&after) != build_key(&before) {
        return reject(
            RejectionCode::BuildScript,
            format!("{path} declares a build script; build scripts are refused"),
        );
    }
    reject(
        RejectionCode::FrozenPath,
        format!("{path} is frozen: manifests are off limits"),
    )
}

/// Names in every `*dependencies` table, at any depth (`[target.'cfg(..)'.dependencies]` too).
fn collect_dependencies(table: &toml::Table, found: &mut BTreeSet<String>) {
    for (key, value) in table {
        if let toml::Value::Table(inner) = value {
            if key.ends_with("dependencies") {
                found.extend(inner.keys().cloned());
            } else {
                collect_dependencies(inner, found);
            }
        }
    }
}

/// Bytes of removed plus added lines.
fn changed_bytes(file: &FileChange) -> usize {
    let before = file.before.as_deref().unwrap_or("");
    match file.after.as_deref().map(std::str::from_utf8) {
        Some(Ok(after)) => {
            let diff = similar::TextDiff::from_lines(before, after);
            diff.iter_all_changes()
                .filter(|c| c.tag() != similar::ChangeTag::Equal)
                .map(|c| c.value().len())
                .sum()
        }
        Some(Err(_)) => before.len() + file.after.as_ref().map_or(0, Vec::len),
        None => before.len(),
    }
}
