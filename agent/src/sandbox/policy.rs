//! What one sandboxed process may touch, and how that becomes Landlock rules.
//!
//! Landlock only *allows* (a rule grants access beneath a path), so hiding a file inside an
//! allowed directory means not granting that directory: the builder walks down from each root
//! along the hidden paths, grants every sibling that holds nothing hidden, and leaves the
//! directories on the way with the right to list them only.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::env::EnvPolicy;

/// What `agentloop sandbox-exec` reads (the policy file) before it restricts itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// false with `--no-sandbox`: only the environment is scrubbed.
    pub enforce: bool,
    /// Readable (and executable) beneath these paths.
    pub read: Vec<PathBuf>,
    /// Readable and writable beneath these paths.
    pub write: Vec<PathBuf>,
    /// Files taken out of every root above, found when the command starts.
    pub hide: Option<Hide>,
    pub env: EnvPolicy,
}

/// Paths under `root` matching `globs` (relative, `/`-separated, `*` within one directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hide {
    pub root: PathBuf,
    pub globs: Vec<String>,
}

/// How much of a path's subtree a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// List this directory only (a directory on the way to a hidden file in a read root).
    ListOnly,
    /// List, create and remove entries, write files, but read and execute nothing (a directory
    /// on the way to a hidden file in a write root: `mkdir .agentloop-bin` still works).
    WriteOnly,
    Read,
    Write,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub path: PathBuf,
    pub access: Access,
}

impl Hide {
    /// Every path under `root` the globs match, symlinks resolved (Landlock judges a file by
    /// where it really is). A matched directory is hidden whole.
    pub fn resolve(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut builder = globset::GlobSetBuilder::new();
        for g in &self.globs {
            let glob = globset::GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .map_err(|e| std::io::Error::other(format!("bad glob {g:?}: {e}")))?;
            builder.add(glob);
        }
        let set = builder.build().map_err(std::io::Error::other)?;
        let mut found = BTreeSet::new();
        let mut seen_dirs = BTreeSet::new();
        walk(&self.root, "", &set, &mut found, &mut seen_dirs)?;
        Ok(found.into_iter().collect())
    }
}

fn walk(
    dir: &Path,
    rel: &str,
    set: &globset::GlobSet,
    found: &mut BTreeSet<PathBuf>,
    seen: &mut BTreeSet<PathBuf>,
) -> std::io::Result<()> {
    // Following directory symlinks, but each real directory once (no loops).
    let Ok(real) = dir.canonicalize() else {
        return Ok(());
    };
    if !seen.insert(real) {
        return Ok(());
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let child_rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let path = entry.path();
        if set.is_match(&child_rel) {
            if let Ok(real) = path.canonicalize() {
                found.insert(real);
            }
            continue;
        }
        if path.is_dir() {
            walk(&path, &child_rel, set, found, seen)?;
        }
    }
    Ok(())
}

/// The Landlock rules for `roots` with every `hidden` path (canonical) taken out. Roots that
/// do not exist are skipped; symlinks are never granted themselves (their targets' own rules
/// decide, so a link to a hidden file reads nothing).
pub fn rules(roots: &[(PathBuf, Access)], hidden: &[PathBuf]) -> Vec<Rule> {
    let mut out = BTreeSet::new();
    for (root, access) in roots {
        let Ok(real) = root.canonicalize() else {
            continue;
        };
        grant(&real, *access, hidden, &mut out);
    }
    out.into_iter().collect()
}

fn grant(path: &Path, access: Access, hidden: &[PathBuf], out: &mut BTreeSet<Rule>) {
    if hidden.iter().any(|h| path.starts_with(h)) {
        return;
    }
    let holds_hidden = hidden.iter().any(|h| h.starts_with(path));
    if !holds_hidden {
        out.insert(Rule {
            path: path.to_path_buf(),
            access,
        });
        return;
    }
    out.insert(Rule {
        path: path.to_path_buf(),
        access: if access == Access::Write {
            Access::WriteOnly
        } else {
            Access::ListOnly
        },
    });
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(true);
        if !is_link {
            grant(&entry.path(), access, hidden, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "data/train/a.txt",
            "data/val/b.txt",
            "data/holdout/c.txt",
            "data/sub/val/d.txt",
            "src/main.rs",
        ] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        std::os::unix::fs::symlink(
            dir.path().join("data/val/b.txt"),
            dir.path().join("src/link-to-val"),
        )
        .unwrap();
        dir
    }

    fn hide(dir: &Path) -> Vec<PathBuf> {
        Hide {
            root: dir.to_path_buf(),
            globs: vec!["data/**/val/**".into(), "data/holdout/**".into()],
        }
        .resolve()
        .unwrap()
    }

    #[test]
    fn hidden_files_are_found_through_globs_and_symlinks() {
        let dir = tree();
        let root = dir.path().canonicalize().unwrap();
        let hidden = hide(dir.path());
        assert_eq!(
            hidden,
            [
                root.join("data/holdout/c.txt"),
                root.join("data/sub/val/d.txt"),
                root.join("data/val/b.txt"),
            ]
        );
    }

    #[test]
    fn rules_grant_siblings_and_only_list_the_way_to_hidden_files() {
        let dir = tree();
        let root = dir.path().canonicalize().unwrap();
        let hidden = hide(dir.path());
        let rules = rules(&[(dir.path().to_path_buf(), Access::Read)], &hidden);
        let got: Vec<(String, Access)> = rules
            .iter()
            .map(|r| {
                let rel = r.path.strip_prefix(&root).unwrap();
                (rel.to_string_lossy().into_owned(), r.access)
            })
            .collect();
        let want: Vec<(String, Access)> = [
            ("", Access::ListOnly),
            ("data", Access::ListOnly),
            ("data/holdout", Access::ListOnly),
            ("data/sub", Access::ListOnly),
            ("data/sub/val", Access::ListOnly),
            ("data/train", Access::Read),
            ("data/val", Access::ListOnly),
            ("src", Access::Read),
        ]
        .iter()
        .map(|(p, a)| (p.to_string(), *a))
        .collect();
        assert_eq!(got, want);
        // No rule reaches a hidden file, through a symlink or otherwise.
        for r in &rules {
            assert!(
                matches!(r.access, Access::ListOnly | Access::WriteOnly)
                    || !hidden.iter().any(|h| h.starts_with(&r.path)),
                "{r:?} grants a hidden file"
            );
        }
    }

    #[test]
    fn a_root_inside_a_hidden_directory_is_dropped() {
        let dir = tree();
        let hidden = vec![dir.path().join("data").canonicalize().unwrap()];
        let rules = rules(
            &[
                (dir.path().join("data/train"), Access::Write),
                (dir.path().join("missing"), Access::Read),
            ],
            &hidden,
        );
        assert!(rules.is_empty(), "{rules:?}");
    }
}
