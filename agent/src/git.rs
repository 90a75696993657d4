//! Git operations of the loop, all through git2 and all away from the user's checkout:
//! commits are built in memory from trees, refs are moved directly, and code is checked out
//! only into linked worktrees under `.agentloop/worktrees/`. The user's HEAD, index and
//! working tree are never read for writing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use git2::build::{CheckoutBuilder, TreeUpdateBuilder};
use git2::{
    FileMode, ObjectType, Oid, Repository, Signature, WorktreeAddOptions, WorktreePruneOptions,
};

/// Prefix under which discarded change branches are kept for review.
pub const REJECTED_PREFIX: &str = "refs/agentloop/rejected/";

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{path} is not inside a git repository (pass --repo)")]
    NotARepository { path: PathBuf },
    #[error(
        "the repository at {0} has no working directory (bare repositories are not supported)"
    )]
    Bare(PathBuf),
    #[error(
        "the repository has no commit checked out yet (HEAD is unborn); commit something first"
    )]
    UnbornHead,
    #[error("branch {0} does not exist")]
    MissingBranch(String),
    #[error("reverting {commit} conflicts in {paths:?} with later changes {later_changes:?}")]
    RevertConflict {
        commit: String,
        paths: Vec<String>,
        later_changes: Vec<String>,
    },
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("io on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, GitError>;

/// One file's new content in a commit; `None` deletes the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    pub path: String,
    pub contents: Option<Vec<u8>>,
}

pub struct Git {
    repo: Repository,
    root: PathBuf,
}

impl Git {
    /// Opens the repository containing `path` (the target repository).
    pub fn discover(path: &Path) -> Result<Git> {
        let repo = Repository::discover(path).map_err(|_| GitError::NotARepository {
            path: path.to_path_buf(),
        })?;
        // A linked worktree discovers its own checkout; the loop always wants the main one.
        let repo = if repo.is_worktree() {
            let common = repo.commondir().to_path_buf();
            Repository::open(common)?
        } else {
            repo
        };
        let root = repo
            .workdir()
            .ok_or_else(|| GitError::Bare(repo.path().to_path_buf()))?
            .to_path_buf();
        let root = root.canonicalize().map_err(|source| GitError::Io {
            path: root.clone(),
            source,
        })?;
        Ok(Git { repo, root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    /// Keeps `.agentloop/` out of `git status` without editing any tracked file.
    pub fn exclude_state_dir(&self) -> Result<()> {
        let info = self.repo.path().join("info");
        let exclude = info.join("exclude");
        let current = std::fs::read_to_string(&exclude).unwrap_or_default();
        if current.lines().any(|l| l.trim() == "/.agentloop/") {
            return Ok(());
        }
        std::fs::create_dir_all(&info).map_err(|source| GitError::Io {
            path: info.clone(),
            source,
        })?;
        let mut text = current;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("/.agentloop/\n");
        std::fs::write(&exclude, text).map_err(|source| GitError::Io {
            path: exclude,
            source,
        })
    }

    /// Removes ref lock files a killed loop left in its own namespaces (`refs/heads/agentloop/`,
    /// `refs/agentloop/` and the latter's reflogs). Only called while holding the loop's lock,
    /// so no live writer of ours can own them; the user's refs are never touched.
    pub fn clear_stale_locks(&self) -> Result<usize> {
        fn walk(dir: &Path, removed: &mut usize) -> std::io::Result<()> {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return Ok(());
            };
            for e in entries.flatten() {
                let path = e.path();
                if e.file_type()?.is_dir() {
                    walk(&path, removed)?;
                } else if path.extension().is_some_and(|x| x == "lock") {
                    std::fs::remove_file(&path)?;
                    *removed += 1;
                }
            }
            Ok(())
        }
        let mut removed = 0;
        // `logs/refs/agentloop`: the reflog of the anchored ledger head (`ledger_anchor`).
        for dir in [
            "refs/heads/agentloop",
            "refs/agentloop",
            "logs/refs/agentloop",
        ] {
            let dir = self.repo.path().join(dir);
            walk(&dir, &mut removed).map_err(|source| GitError::Io { path: dir, source })?;
        }
        // A kill while a loop worktree's index or HEAD was being written leaves
        // `.git/worktrees/<name>/index.lock`; only the loop's own worktrees are touched.
        for name in self.loop_worktrees()? {
            let admin = self.repo.path().join("worktrees").join(&name);
            for lock in ["index.lock", "HEAD.lock"] {
                let path = admin.join(lock);
                if path.exists() {
                    std::fs::remove_file(&path).map_err(|source| GitError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// The commit the user has checked out: the starting point of a new session's trunk.
    pub fn head_commit(&self) -> Result<Oid> {
        let head = self.repo.head().map_err(|_| GitError::UnbornHead)?;
        Ok(head.peel_to_commit()?.id())
    }

    pub fn branch_tip(&self, branch: &str) -> Result<Option<Oid>> {
        match self.repo.find_reference(&format!("refs/heads/{branch}")) {
            Ok(r) => Ok(Some(r.peel_to_commit()?.id())),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn ref_exists(&self, full_name: &str) -> bool {
        self.repo.find_reference(full_name).is_ok()
    }

    /// Points `branch` at `oid`, creating it if needed.
    pub fn set_branch(&self, branch: &str, oid: Oid, why: &str) -> Result<()> {
        self.repo
            .reference(&format!("refs/heads/{branch}"), oid, true, why)?;
        Ok(())
    }

    pub fn tree_of(&self, commit: Oid) -> Result<Oid> {
        Ok(self.repo.find_commit(commit)?.tree_id())
    }

    pub fn commit_message(&self, commit: Oid) -> Result<String> {
        Ok(self
            .repo
            .find_commit(commit)?
            .message()
            .unwrap_or_default()
            .to_string())
    }

    /// Reads a file at `path` in `commit`; `None` when it does not exist there.
    pub fn read_file(&self, commit: Oid, path: &str) -> Result<Option<Vec<u8>>> {
        let tree = self.repo.find_commit(commit)?.tree()?;
        let entry = match tree.get_path(Path::new(path)) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if entry.kind() != Some(ObjectType::Blob) {
            return Ok(None);
        }
        Ok(Some(self.repo.find_blob(entry.id())?.content().to_vec()))
    }

    /// Every file path in `commit`'s tree, `/`-separated.
    pub fn list_files(&self, commit: Oid) -> Result<Vec<String>> {
        let tree = self.repo.find_commit(commit)?.tree()?;
        let mut out = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() == Some(ObjectType::Blob) {
                out.push(format!("{dir}{}", entry.name().unwrap_or_default()));
            }
            git2::TreeWalkResult::Ok
        })?;
        Ok(out)
    }

    /// Whether `path` is a symlink in `commit`.
    pub fn is_symlink(&self, commit: Oid, path: &str) -> Result<bool> {
        let tree = self.repo.find_commit(commit)?.tree()?;
        Ok(
            matches!(tree.get_path(Path::new(path)), Ok(e) if e.filemode() == i32::from(FileMode::Link)),
        )
    }

    /// Creates a commit on top of `parent` with `writes` applied to its tree, without moving
    /// any ref and without touching any working tree.
    pub fn commit_on(&self, parent: Oid, writes: &[FileWrite], message: &str) -> Result<Oid> {
        let parent = self.repo.find_commit(parent)?;
        let base = parent.tree()?;
        let mut update = TreeUpdateBuilder::new();
        for w in writes {
            match &w.contents {
                Some(bytes) => {
                    let blob = self.repo.blob(bytes)?;
                    // Keep an executable bit the file already had.
                    let mode = match base.get_path(Path::new(&w.path)) {
                        Ok(e) if e.filemode() == i32::from(FileMode::BlobExecutable) => {
                            FileMode::BlobExecutable
                        }
                        _ => FileMode::Blob,
                    };
                    update.upsert(&w.path, blob, mode);
                }
                None => {
                    update.remove(&w.path);
                }
            }
        }
        let tree_id = update.create_updated(&self.repo, &base)?;
        self.commit_tree(&parent, tree_id, message)
    }

    fn commit_tree(&self, parent: &git2::Commit<'_>, tree: Oid, message: &str) -> Result<Oid> {
        let tree = self.repo.find_tree(tree)?;
        let sig = signature()?;
        Ok(self
            .repo
            .commit(None, &sig, &sig, message, &tree, &[parent])?)
    }

    /// A commit on `parent` whose tree is exactly `tree_of`'s: used to squash an accepted
    /// change onto the trunk as one commit carrying the merge trailers.
    pub fn commit_with_tree_of(&self, parent: Oid, tree_of: Oid, message: &str) -> Result<Oid> {
        let parent = self.repo.find_commit(parent)?;
        let tree = self.repo.find_commit(tree_of)?.tree_id();
        self.commit_tree(&parent, tree, message)
    }

    /// Deletes a branch of the loop's own; fine if it does not exist.
    pub fn delete_branch(&self, branch: &str) -> Result<()> {
        match self.repo.find_reference(&format!("refs/heads/{branch}")) {
            Ok(mut r) => Ok(r.delete()?),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves a discarded change branch under `refs/agentloop/rejected/` (kept for review).
    /// Idempotent: a branch already moved is left alone.
    pub fn reject_branch(&self, branch: &str) -> Result<()> {
        let from = format!("refs/heads/{branch}");
        let to = format!("{REJECTED_PREFIX}{branch}");
        match self.repo.find_reference(&from) {
            Ok(mut r) => {
                r.rename(&to, true, "agentloop: change rejected")?;
                Ok(())
            }
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn worktrees_dir(&self) -> PathBuf {
        self.root.join(".agentloop").join("worktrees")
    }

    /// Checks `branch` out into `.agentloop/worktrees/<name>`, replacing a stale one.
    pub fn add_worktree(&self, name: &str, branch: &str) -> Result<PathBuf> {
        self.remove_worktree(name)?;
        let _one_at_a_time = worktree_lock();
        let dir = self.worktrees_dir();
        std::fs::create_dir_all(&dir).map_err(|source| GitError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(name);
        let reference = self
            .repo
            .find_reference(&format!("refs/heads/{branch}"))
            .map_err(|_| GitError::MissingBranch(branch.to_string()))?;
        let mut opts = WorktreeAddOptions::new();
        opts.reference(Some(&reference));
        self.repo.worktree(name, &path, Some(&opts))?;
        Ok(path)
    }

    /// Brings a worktree's files to its branch's current tip (after the branch ref moved).
    pub fn refresh_worktree(&self, path: &Path) -> Result<()> {
        let wt = Repository::open(path)?;
        wt.checkout_head(Some(CheckoutBuilder::new().force()))?;
        Ok(())
    }

    /// Removes a worktree (its directory and its registration); fine if it does not exist.
    pub fn remove_worktree(&self, name: &str) -> Result<()> {
        let _one_at_a_time = worktree_lock();
        if let Ok(wt) = self.repo.find_worktree(name) {
            wt.prune(Some(
                WorktreePruneOptions::new()
                    .valid(true)
                    .locked(true)
                    .working_tree(true),
            ))?;
        }
        // A worktree whose creation was killed half-way has an admin directory that libgit2
        // cannot open (so cannot prune): remove it as `git worktree prune` would.
        let admin = self.repo.path().join("worktrees").join(name);
        if admin.exists() {
            std::fs::remove_dir_all(&admin).map_err(|source| GitError::Io {
                path: admin.clone(),
                source,
            })?;
        }
        let path = self.worktrees_dir().join(name);
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|source| GitError::Io { path, source })?;
        }
        Ok(())
    }

    /// Names of the worktrees under `.agentloop/worktrees/` (registered, half-registered or
    /// merely on disk).
    pub fn loop_worktrees(&self) -> Result<BTreeSet<String>> {
        let mut names = BTreeSet::new();
        if let Ok(entries) = std::fs::read_dir(self.repo.path().join("worktrees")) {
            for e in entries.flatten() {
                let gitdir = std::fs::read_to_string(e.path().join("gitdir")).unwrap_or_default();
                // Half-created ones may lack `gitdir`; ours are named after changes or trunks.
                let ours =
                    gitdir.is_empty() || Path::new(gitdir.trim()).starts_with(self.worktrees_dir());
                if ours {
                    names.insert(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        let dir = self.worktrees_dir();
        for name in self.repo.worktrees()?.iter().flatten() {
            if let Ok(wt) = self.repo.find_worktree(name) {
                if wt.path().starts_with(&dir) {
                    names.insert(name.to_string());
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                names.insert(e.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }

    /// Reverts `commit` on top of `onto` as a new commit (refs untouched). When the revert
    /// conflicts, nothing is written and the error names the paths and the later changes
    /// (by their `Change-Id` trailer) that touched them.
    pub fn revert_on(&self, commit: Oid, onto: Oid, message: &str) -> Result<Oid> {
        let target = self.repo.find_commit(commit)?;
        let ours = self.repo.find_commit(onto)?;
        let mut index = self.repo.revert_commit(&target, &ours, 0, None)?;
        if index.has_conflicts() {
            let mut paths = BTreeSet::new();
            for conflict in index.conflicts()? {
                let conflict = conflict?;
                for entry in [conflict.ancestor, conflict.our, conflict.their]
                    .into_iter()
                    .flatten()
                {
                    paths.insert(String::from_utf8_lossy(&entry.path).into_owned());
                }
            }
            let paths: Vec<String> = paths.into_iter().collect();
            let later_changes = self.changes_touching(commit, onto, &paths)?;
            return Err(GitError::RevertConflict {
                commit: commit.to_string(),
                paths,
                later_changes,
            });
        }
        let tree = index.write_tree_to(&self.repo)?;
        self.commit_tree(&ours, tree, message)
    }

    /// `Change-Id`s of the commits after `since` up to `tip` that modify any of `paths`.
    fn changes_touching(&self, since: Oid, tip: Oid, paths: &[String]) -> Result<Vec<String>> {
        let mut walk = self.repo.revwalk()?;
        walk.push(tip)?;
        walk.hide(since)?;
        let mut found = Vec::new();
        for oid in walk {
            let c = self.repo.find_commit(oid?)?;
            let parent_tree = match c.parent(0) {
                Ok(p) => Some(p.tree()?),
                Err(_) => None,
            };
            let diff = self
                .repo
                .diff_tree_to_tree(parent_tree.as_ref(), Some(&c.tree()?), None)?;
            let touches = diff.deltas().any(|d| {
                [d.old_file().path(), d.new_file().path()]
                    .into_iter()
                    .flatten()
                    .any(|p| paths.iter().any(|q| Path::new(q) == p))
            });
            if touches {
                let msg = c.message().unwrap_or_default();
                found.push(change_id_trailer(msg).unwrap_or_else(|| oid_short(c.id())));
            }
        }
        found.reverse();
        Ok(found)
    }
}

fn signature() -> Result<Signature<'static>> {
    Ok(Signature::now("agentloop", "agentloop@localhost")?)
}

/// libgit2 creates `.git/worktrees/` racily: workers of one loop add and remove worktrees one
/// at a time.
fn worktree_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn oid_short(oid: Oid) -> String {
    oid.to_string()[..10].to_string()
}

/// The `Change-Id: <id>` trailer of a commit message.
pub fn change_id_trailer(message: &str) -> Option<String> {
    message
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("Change-Id:"))
        .map(|v| v.trim().to_string())
}

/// Branch names of a session: the trunk and one branch per change.
pub fn trunk_branch(session: &str) -> String {
    format!("agentloop/{session}")
}

/// Not `agentloop/<session>/<change>`: git cannot hold both `agentloop/<s>` and a ref
/// beneath it (a file and a directory of the same name), so change branches live beside it.
/// Where a discarded change's branch is kept (readable in logs and the ledger).
pub fn kept_ref(session: &str, change: &str) -> String {
    format!("{REJECTED_PREFIX}{}", change_branch(session, change))
}

pub fn change_branch(session: &str, change: &str) -> String {
    format!("agentloop/changes/{session}/{change}")
}

#[cfg(test)]
mod tests;
