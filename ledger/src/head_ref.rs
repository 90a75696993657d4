//! The chain head kept in git, outside the database: `refs/agentloop/ledger-head` points at a
//! blob `<seq>:<hash>`, and its reflog keeps every value it ever had.
//!
//! The loop moves the ref at every decision, merge, rollback, audit and session end, so
//! deleting the events after one of those (the triggers dropped, the derived rows cleaned up)
//! leaves an anchored seq beyond the database's end, which `ledger verify` reports. Rewriting
//! the record without a trace then needs write access to the git directory as well.

use std::path::Path;

use git2::{Oid, Repository, Signature};

use crate::{trailer, ChainHead, LedgerError, Result};

/// The ref; outside `refs/heads`, so no branch listing shows it and no checkout moves it.
pub const HEAD_REF: &str = "refs/agentloop/ledger-head";

/// One anchored value read back: where it came from, and the head or why it is unreadable.
pub struct RefAnchor {
    /// `reflog entry <n>` (0 is the newest) or `ref value`.
    pub source: String,
    pub head: std::result::Result<ChainHead, String>,
}

fn git_err(repo: &Path) -> impl Fn(git2::Error) -> LedgerError + '_ {
    move |e| LedgerError::Git {
        path: repo.to_path_buf(),
        message: e.message().to_string(),
    }
}

/// Moves the ref to `head` and makes sure its reflog holds the value: git writes reflogs for
/// refs outside `refs/heads` only once the log exists, so the first entry is appended here.
/// `why` (the event kind that triggered it) goes into the reflog message.
pub fn record(repo: &Path, head: &ChainHead, why: &str) -> Result<()> {
    let err = git_err(repo);
    let repository = Repository::open(repo).map_err(&err)?;
    let value = format!("{}:{}\n", head.seq, head.hash);
    let oid = repository.blob(value.as_bytes()).map_err(&err)?;
    let message = format!("agentloop ledger head {}:{} ({why})", head.seq, head.hash);
    repository
        .reference(HEAD_REF, oid, true, &message)
        .map_err(&err)?;
    let mut reflog = repository.reflog(HEAD_REF).map_err(&err)?;
    let logged = reflog.get(0).is_some_and(|entry| entry.id_new() == oid);
    if !logged {
        let signature = Signature::now("agentloop", "agentloop@localhost").map_err(&err)?;
        reflog
            .append(oid, &signature, Some(&message))
            .map_err(&err)?;
        reflog.write().map_err(&err)?;
    }
    Ok(())
}

/// Every value the ref's reflog holds, newest first, then the ref's current value (which a
/// deleted reflog would leave behind). Empty when the repository never had the ref.
pub fn anchors(repo: &Path) -> Result<Vec<RefAnchor>> {
    let err = git_err(repo);
    let repository = Repository::open(repo).map_err(&err)?;
    let mut found = Vec::new();
    let reflog = repository.reflog(HEAD_REF).map_err(&err)?;
    for (i, entry) in reflog.iter().enumerate() {
        let message = entry.message().unwrap_or_default().to_string();
        found.push(RefAnchor {
            source: format!("{HEAD_REF} reflog entry {i}"),
            head: read_value(&repository, entry.id_new(), Some(&message)),
        });
    }
    if let Ok(reference) = repository.find_reference(HEAD_REF) {
        if let Some(oid) = reference.target() {
            found.push(RefAnchor {
                source: format!("{HEAD_REF} (current value)"),
                head: read_value(&repository, oid, None),
            });
        }
    }
    Ok(found)
}

/// The `<seq>:<hash>` in the blob, or in the reflog message when the blob is gone.
fn read_value(
    repository: &Repository,
    oid: Oid,
    message: Option<&str>,
) -> std::result::Result<ChainHead, String> {
    let text = match repository.find_blob(oid) {
        Ok(blob) => String::from_utf8_lossy(blob.content()).trim().to_string(),
        Err(_) => match message.and_then(|m| m.split_whitespace().nth(3)) {
            Some(value) => value.to_string(),
            None => {
                return Err(format!(
                    "object {oid} is missing and the entry has no value"
                ))
            }
        },
    };
    match trailer::parse(&format!("{}: {text}", trailer::KEY)) {
        Ok(Some(head)) => Ok(head),
        Ok(None) => Err(format!("object {oid} holds no ledger head")),
        Err(e) => Err(format!("object {oid}: {e}")),
    }
}
