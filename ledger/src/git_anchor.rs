//! Reads the `Ledger-Head` trailers that the loop wrote into git commits.

use std::path::Path;

use crate::{trailer, ChainHead, LedgerError, Result};

/// Branches whose commits the loop writes (trunks and change branches) and the refs where it
/// keeps rejected changes.
const ANCHOR_REF_GLOBS: &[&str] = &["refs/heads/agentloop/*", "refs/agentloop/*"];

/// One commit's trailer: a head, or the reason it could not be read.
pub struct Anchor {
    pub commit: String,
    pub head: Result<ChainHead, String>,
}

/// Every commit reachable from the agentloop refs of `repo` that carries a `Ledger-Head`
/// trailer, each once.
pub fn anchors(repo: &Path) -> Result<Vec<Anchor>> {
    let git_err = |e: git2::Error| LedgerError::Git {
        path: repo.to_path_buf(),
        message: e.message().to_string(),
    };
    let repository = git2::Repository::open(repo).map_err(git_err)?;
    let mut walk = repository.revwalk().map_err(git_err)?;
    let mut pushed_any = false;
    for glob in ANCHOR_REF_GLOBS {
        for reference in repository.references_glob(glob).map_err(git_err)? {
            let reference = reference.map_err(git_err)?;
            if let Ok(commit) = reference.peel_to_commit() {
                walk.push(commit.id()).map_err(git_err)?;
                pushed_any = true;
            }
        }
    }
    let mut found = Vec::new();
    if !pushed_any {
        return Ok(found);
    }
    for oid in walk {
        let oid = oid.map_err(git_err)?;
        let commit = repository.find_commit(oid).map_err(git_err)?;
        let message = String::from_utf8_lossy(commit.message_bytes());
        match trailer::parse(&message) {
            Ok(None) => {}
            Ok(Some(head)) => found.push(Anchor {
                commit: oid.to_string(),
                head: Ok(head),
            }),
            Err(e) => found.push(Anchor {
                commit: oid.to_string(),
                head: Err(e.to_string()),
            }),
        }
    }
    Ok(found)
}
