//! `[target] inputs`: files every worktree needs that git does not hold (data, tokenizers).
//!
//! They are found in the repository root by their globs, linked into each worktree as
//! symlinks to their real files (so the worktree sees them at the same relative paths and the
//! `eval_data` globs hide them exactly like tracked evaluation files), granted read-only to the
//! sandbox by their real paths, and fingerprinted once per session into `session_start`.

use std::path::{Path, PathBuf};

use agentloop_guardrails::target::{TargetSpec, TARGET_FILE};
use anyhow::{bail, Context, Result};
use globset::{GlobBuilder, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a session records about its inputs (`session_start.extra.inputs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub globs: Vec<String>,
    pub files: usize,
    pub bytes: u64,
    /// SHA-256 over each file's relative path and contents, in sorted path order.
    pub sha256: String,
}

/// The input files (relative, `/`-separated, sorted) under `root`. Each glob must match at
/// least one file: a missing input is refused here, named, before anything runs.
pub fn resolve(root: &Path, globs: &[String]) -> Result<Vec<String>> {
    if globs.is_empty() {
        return Ok(Vec::new());
    }
    let mut sets = Vec::new();
    for g in globs {
        let glob = GlobBuilder::new(g)
            .literal_separator(true)
            .build()
            .with_context(|| format!("{TARGET_FILE}: key `target.inputs`: bad glob {g:?}"))?;
        sets.push((g, GlobSetBuilder::new().add(glob).build()?));
    }
    let mut all = Vec::new();
    walk(root, "", &mut all)?;
    let mut found = Vec::new();
    for (g, set) in &sets {
        let matched: Vec<&String> = all.iter().filter(|f| set.is_match(f.as_str())).collect();
        if matched.is_empty() {
            bail!(
                "input {g:?} ([target] inputs in {}) matches no file under {}: create the data \
                 (for example with the repository's data preparation script) or fix the glob",
                root.join(TARGET_FILE).display(),
                root.display()
            );
        }
        found.extend(matched.into_iter().cloned());
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// Regular files under `dir` (following directory symlinks once), skipping git's and the
/// loop's own state.
fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if rel.is_empty() && (name == ".git" || name == ".agentloop") {
            continue;
        }
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let path = entry.path();
        let meta = std::fs::metadata(&path);
        match meta {
            Ok(m) if m.is_dir() => {
                if entry.file_type()?.is_symlink() {
                    // A linked directory: its files count, but never a loop back into the tree.
                    if path.canonicalize()?.starts_with(dir.canonicalize()?) {
                        continue;
                    }
                }
                walk(&path, &child, out)?
            }
            Ok(m) if m.is_file() => out.push(child),
            _ => {}
        }
    }
    Ok(())
}

/// The fingerprint of `files` (relative to `root`).
pub fn fingerprint(root: &Path, globs: &[String], files: &[String]) -> Result<Fingerprint> {
    let mut hash = Sha256::new();
    let mut bytes = 0u64;
    for rel in files {
        let path = root.join(rel);
        let mut file = std::fs::File::open(&path)
            .with_context(|| format!("reading input {}", path.display()))?;
        hash.update((rel.len() as u64).to_le_bytes());
        hash.update(rel.as_bytes());
        let len = file.metadata()?.len();
        hash.update(len.to_le_bytes());
        bytes += std::io::copy(&mut file, &mut hash)?;
    }
    Ok(Fingerprint {
        globs: globs.to_vec(),
        files: files.len(),
        bytes,
        sha256: hex::encode(hash.finalize()),
    })
}

/// The target's input files. An input the agent may edit is refused: a patch could commit a
/// file of its own at that path, and the worktree's tracked file would replace the data.
pub fn resolve_target(target: &TargetSpec) -> Result<Vec<String>> {
    let files = resolve(&target.root, &target.inputs)?;
    if let Some(f) = files.iter().find(|f| target.is_editable(f)) {
        bail!(
            "input {f} ([target] inputs in {}) is also matched by [target] editable: the agent \
             could replace the data with a file of its own; narrow one of the two globs",
            target.root.join(TARGET_FILE).display()
        );
    }
    Ok(files)
}

/// Resolves and fingerprints the target's inputs (`None` when it declares none).
pub fn fingerprint_target(target: &TargetSpec) -> Result<Option<Fingerprint>> {
    if target.inputs.is_empty() {
        return Ok(None);
    }
    let files = resolve_target(target)?;
    Ok(Some(fingerprint(&target.root, &target.inputs, &files)?))
}

/// A resumed session must train on the data it started with: a changed input would make the
/// runs before and after the change incomparable, so the loop refuses to go on.
pub fn check_unchanged(
    session: &str,
    recorded: &serde_json::Value,
    now: Option<&Fingerprint>,
) -> Result<()> {
    let was: Option<Fingerprint> = serde_json::from_value(recorded.clone()).ok();
    let was_hash = was.as_ref().map(|f| f.sha256.as_str());
    let now_hash = now.map(|f| f.sha256.as_str());
    if was_hash != now_hash {
        bail!(
            "the input data ([target] inputs in {TARGET_FILE}) changed since session {session} \
             started (sha256 {} then, {} now): its runs would no longer be comparable. Restore \
             the data it started with to resume it",
            was_hash.unwrap_or("none"),
            now_hash.unwrap_or("none")
        );
    }
    Ok(())
}

/// Links every input into `worktree` (a symlink to the real file at the same relative path),
/// unless the worktree already has a file there (tracked files win). Safe to call again and
/// from several runs at once.
pub fn link_into(root: &Path, worktree: &Path, files: &[String]) -> Result<()> {
    for rel in files {
        let link = worktree.join(rel);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        let real = root
            .join(rel)
            .canonicalize()
            .with_context(|| format!("input {rel} is gone from {}", root.display()))?;
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        match std::os::unix::fs::symlink(&real, &link) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(e).with_context(|| format!("linking input {}", link.display()))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Links the target's inputs into `worktree` and returns their real paths (what the sandbox
/// grants read access to).
pub fn prepare_worktree(target: &TargetSpec, worktree: &Path) -> Result<Vec<PathBuf>> {
    if target.inputs.is_empty() {
        return Ok(Vec::new());
    }
    let files = resolve_target(target)?;
    link_into(&target.root, worktree, &files)?;
    files
        .iter()
        .map(|rel| {
            target
                .root
                .join(rel)
                .canonicalize()
                .with_context(|| format!("input {rel}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (f, text) in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    #[test]
    fn a_glob_matching_nothing_is_refused_naming_it() {
        let dir = repo(&[("data/train.txt", "abc")]);
        let e = resolve(dir.path(), &["data/**".into(), "tok/*.json".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"tok/*.json\"") && e.contains("[target] inputs"),
            "{e}"
        );
        assert!(e.contains("agentloop.toml"), "{e}");
    }

    #[test]
    fn fingerprint_changes_with_contents_and_names_and_not_with_order() {
        let dir = repo(&[
            ("data/a.txt", "abc"),
            ("data/b.txt", "de"),
            (".git/x", "no"),
        ]);
        let globs = vec!["data/**".to_string()];
        let files = resolve(dir.path(), &globs).unwrap();
        assert_eq!(files, ["data/a.txt", "data/b.txt"]);
        let one = fingerprint(dir.path(), &globs, &files).unwrap();
        assert_eq!((one.files, one.bytes), (2, 5));
        assert_eq!(one, fingerprint(dir.path(), &globs, &files).unwrap());
        std::fs::write(dir.path().join("data/b.txt"), "dE").unwrap();
        let two = fingerprint(dir.path(), &globs, &files).unwrap();
        assert_ne!(one.sha256, two.sha256);
        // Moving bytes from one file to the next is a different data set.
        std::fs::write(dir.path().join("data/a.txt"), "ab").unwrap();
        std::fs::write(dir.path().join("data/b.txt"), "cde").unwrap();
        let three = fingerprint(dir.path(), &globs, &files).unwrap();
        assert_ne!(one.sha256, three.sha256);
        let e = check_unchanged("s1", &serde_json::to_value(&one).unwrap(), Some(&three))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("changed since session s1") && e.contains("inputs"),
            "{e}"
        );
        check_unchanged("s1", &serde_json::to_value(&one).unwrap(), Some(&one)).unwrap();
        check_unchanged("s1", &serde_json::Value::Null, None).unwrap();
    }

    #[test]
    fn an_input_the_agent_may_edit_is_refused() {
        let dir = repo(&[("data/train.txt", "abc"), ("data/val.txt", "de")]);
        let text = "[target]\neditable = [\"*.py\", \"data/val.txt\"]\ninputs = [\"data/*\"]\n\
             [build]\ncommand = \"true\"\ntimeout = \"1m\"\n\
             [train]\ncommand = \"t {budget} {out}\"\nbudget = \"1\"\nsmoke_budget = \"1\"\n\
             timeout = \"1m\"\nmemory_limit = \"1GiB\"\n";
        let target = TargetSpec::parse(dir.path(), &dir.path().join(TARGET_FILE), text).unwrap();
        let e = fingerprint_target(&target).unwrap_err().to_string();
        assert!(
            e.contains("data/val.txt") && e.contains("[target] editable"),
            "{e}"
        );
        let wt = tempfile::tempdir().unwrap();
        assert!(prepare_worktree(&target, wt.path()).is_err());
        assert!(!wt.path().join("data/val.txt").exists());
    }

    #[test]
    fn links_point_at_the_real_files_and_tracked_files_win() {
        let root = repo(&[("data/a.txt", "abc"), ("data/keep.py", "root")]);
        let wt = repo(&[("data/keep.py", "tracked")]);
        let files = resolve(root.path(), &["data/*".into()]).unwrap();
        link_into(root.path(), wt.path(), &files).unwrap();
        link_into(root.path(), wt.path(), &files).unwrap();
        assert_eq!(
            std::fs::read_to_string(wt.path().join("data/a.txt")).unwrap(),
            "abc"
        );
        assert!(wt
            .path()
            .join("data/a.txt")
            .symlink_metadata()
            .unwrap()
            .is_symlink());
        assert_eq!(
            std::fs::read_to_string(wt.path().join("data/keep.py")).unwrap(),
            "tracked"
        );
    }
}
