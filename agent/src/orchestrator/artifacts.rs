//! The build cache: a build's outputs are kept per build key (the git *tree*, less the target's
//! `[build] runtime_only` files: `build::build_key`), so each set of build inputs is built once,
//! whichever worktree or commit (candidate or squashed trunk commit) holds it.
//!
//! By the target contract the build command leaves what the train command needs in
//! `.agentloop-bin/` of the worktree; that directory is what is cached.

use std::path::{Path, PathBuf};

pub const BUILD_OUTPUT_DIR: &str = ".agentloop-bin";

pub struct BuildCache {
    dir: PathBuf,
}

impl BuildCache {
    pub fn new(state_dir: &Path) -> BuildCache {
        BuildCache {
            dir: state_dir.join("bin"),
        }
    }

    fn entry(&self, tree: &str) -> PathBuf {
        self.dir.join(tree)
    }

    pub fn contains(&self, tree: &str) -> bool {
        self.entry(tree).join(".complete").exists()
    }

    /// Copies the worktree's build outputs into the cache. Written to a temporary directory
    /// and renamed, so a kill mid-copy never leaves an entry that looks complete.
    pub fn store(&self, tree: &str, worktree: &Path) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(".tmp-{tree}-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        let out = worktree.join(BUILD_OUTPUT_DIR);
        if out.is_dir() {
            copy_dir(&out, &tmp.join(BUILD_OUTPUT_DIR))?;
        }
        std::fs::write(tmp.join(".complete"), tree)?;
        let dest = self.entry(tree);
        if dest.exists() {
            std::fs::remove_dir_all(&dest)?;
        }
        std::fs::rename(&tmp, &dest)
    }

    /// Puts the cached outputs of `tree` into `worktree`; false when the tree was never built.
    pub fn restore(&self, tree: &str, worktree: &Path) -> std::io::Result<bool> {
        if !self.contains(tree) {
            return Ok(false);
        }
        let src = self.entry(tree).join(BUILD_OUTPUT_DIR);
        let dest = worktree.join(BUILD_OUTPUT_DIR);
        if dest.exists() {
            std::fs::remove_dir_all(&dest)?;
        }
        if src.is_dir() {
            copy_dir(&src, &dest)?;
        }
        Ok(true)
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            // std::fs::copy keeps the permission bits, so binaries stay executable.
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn store_then_restore_into_another_worktree_keeps_executables() {
        let state = tempfile::tempdir().unwrap();
        let wt1 = tempfile::tempdir().unwrap();
        let wt2 = tempfile::tempdir().unwrap();
        let bin = wt1.path().join(BUILD_OUTPUT_DIR);
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("tool"), "#!/bin/sh\necho built\n").unwrap();
        std::fs::set_permissions(bin.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();

        let cache = BuildCache::new(state.path());
        assert!(!cache.restore("t1", wt2.path()).unwrap());
        cache.store("t1", wt1.path()).unwrap();
        assert!(cache.contains("t1"));
        assert!(cache.restore("t1", wt2.path()).unwrap());
        let restored = wt2.path().join(BUILD_OUTPUT_DIR).join("tool");
        let out = std::process::Command::new(&restored).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "built\n");
        assert!(!cache.contains("t2"));
    }

    #[test]
    fn an_interrupted_store_is_not_an_entry() {
        let state = tempfile::tempdir().unwrap();
        let cache = BuildCache::new(state.path());
        // What a kill mid-copy leaves behind: a temp directory without the completion mark.
        std::fs::create_dir_all(state.path().join("bin/.tmp-t9-1/.agentloop-bin")).unwrap();
        std::fs::create_dir_all(state.path().join("bin/t9")).unwrap();
        assert!(!cache.contains("t9"));
    }
}
