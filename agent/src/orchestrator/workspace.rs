//! The target repository and the loop's state directory `<repo>/.agentloop/`, plus the lock
//! that keeps two loops (or a loop and a rollback) from working on it at once.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::git::Git;

pub const STATE_DIR: &str = ".agentloop";

pub struct Workspace {
    pub git: Git,
    pub root: PathBuf,
    pub state: PathBuf,
}

impl Workspace {
    /// `repo`: the `--repo` flag; default the repository containing the current directory.
    pub fn open(repo: Option<&Path>) -> Result<Workspace> {
        let start = match repo {
            Some(p) => p.to_path_buf(),
            None => std::env::current_dir().context("reading the current directory")?,
        };
        let git = Git::discover(&start)?;
        let root = git.root().to_path_buf();
        let state = root.join(STATE_DIR);
        Ok(Workspace { git, root, state })
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.state.join("ledger.db")
    }

    /// Creates the state directory (kept out of `git status` via `.git/info/exclude`).
    pub fn prepare(&self) -> Result<()> {
        std::fs::create_dir_all(&self.state)
            .with_context(|| format!("creating {}", self.state.display()))?;
        self.git.exclude_state_dir()?;
        Ok(())
    }

    /// Takes the exclusive lock; the kernel drops it when the process dies, even by SIGKILL.
    pub fn lock(&self) -> Result<Lock> {
        self.prepare()?;
        let path = self.state.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; no memory is shared with the kernel call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            bail!(
                "another agentloop process is working on {} (lock {} is held); wait for it or stop it first",
                self.root.display(),
                path.display()
            );
        }
        Ok(Lock { _file: file })
    }
}

/// Held for as long as the value lives.
pub struct Lock {
    _file: File,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        git2::Repository::init(dir.path()).unwrap();
        let ws = Workspace::open(Some(dir.path())).unwrap();
        let first = ws.lock().unwrap();
        let err = ws.lock().err().unwrap().to_string();
        assert!(err.contains("another agentloop process"), "{err}");
        drop(first);
        ws.lock().unwrap();
    }
}
