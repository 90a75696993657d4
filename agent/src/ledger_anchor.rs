//! Sends the ledger head outside the database after every event that settles something
//! (decision, merge, rollback, audit, session end): to the git ref
//! `refs/agentloop/ledger-head`, whose reflog keeps each value, and to the user's optional
//! `[ledger] anchor_command` (another disk, a remote log). `ledger verify` reads them back.
//!
//! Anchoring never stops the loop: a failure is a warning on stderr and a line in
//! `.agentloop/anchors.log`; the record itself is already safe in the ledger.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agentloop_ledger::redact::Redactor;
use agentloop_ledger::{head_ref, ChainHead, EventKind, Ledger};

/// How long the anchor command may take before it is killed (and the failure logged).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Serializes the ref updates of a session's worker threads (git takes a lock file per ref;
/// a second writer would fail instead of waiting).
static REF_WRITER: Mutex<()> = Mutex::new(());

/// Where the head goes for one workspace.
#[derive(Debug, Clone)]
pub struct HeadAnchor {
    repo: PathBuf,
    command: Option<Result<String, String>>,
    log: PathBuf,
}

/// Events after which the head is anchored.
pub fn settles(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Decision
            | EventKind::Merge
            | EventKind::Rollback
            | EventKind::Audit
            | EventKind::SessionEnd
    )
}

/// `[ledger] anchor_command` of a target's extra tables: `None` when unset, `Err` when it is
/// not a string.
pub fn anchor_command(extra: &toml::Table) -> Option<Result<String, String>> {
    let value = extra.get("ledger")?.get("anchor_command")?;
    Some(match value.as_str() {
        Some(command) => Ok(command.to_string()),
        None => Err(format!(
            "[ledger] anchor_command must be a string, not {value}"
        )),
    })
}

impl HeadAnchor {
    /// The anchor for the ledger at `<repo>/.agentloop/ledger.db`, with the anchor command of
    /// `<repo>/agentloop.toml`; `None` for a ledger outside a workspace (tests, imports).
    pub fn for_ledger(ledger_path: &Path) -> Option<HeadAnchor> {
        let state = ledger_path.parent()?;
        // The workspace's state directory (`orchestrator::workspace::STATE_DIR`).
        if state.file_name()? != ".agentloop" {
            return None;
        }
        let repo = state.parent()?.to_path_buf();
        if !repo.join(".git").exists() {
            return None;
        }
        let command = std::fs::read_to_string(repo.join("agentloop.toml"))
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
            .and_then(|doc| anchor_command(&doc));
        Some(HeadAnchor {
            repo,
            command,
            log: state.join("anchors.log"),
        })
    }

    /// Anchors the ledger's current head; `why` is the event kind that settled something.
    pub fn anchor(&self, ledger: &Ledger, why: EventKind) {
        let head = match ledger.head() {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(e) => return self.failed("reading the head", &e.to_string()),
        };
        let written = {
            let _one_writer = REF_WRITER.lock().unwrap_or_else(|e| e.into_inner());
            head_ref::record(&self.repo, &head, why.as_str())
        };
        if let Err(e) = written {
            self.failed(&format!("writing {}", head_ref::HEAD_REF), &e.to_string());
        }
        match &self.command {
            None => {}
            Some(Err(why)) => self.failed("[ledger] anchor_command", why),
            Some(Ok(command)) => {
                if let Err(why) = self.run_command(command, &head, why) {
                    let seq = head.seq;
                    self.failed(&format!("[ledger] anchor_command at seq {seq}"), &why);
                }
            }
        }
    }

    /// Runs `sh -c <command> agentloop-anchor <seq> <hash> <event>` in the repository, with
    /// the same three values in `AGENTLOOP_LEDGER_SEQ`, `_HASH` and `_EVENT`.
    fn run_command(&self, command: &str, head: &ChainHead, why: EventKind) -> Result<(), String> {
        let seq = head.seq.to_string();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .args(["agentloop-anchor", &seq, &head.hash, why.as_str()])
            .current_dir(&self.repo)
            .env("AGENTLOOP_LEDGER_SEQ", &seq)
            .env("AGENTLOOP_LEDGER_HASH", &head.hash)
            .env("AGENTLOOP_LEDGER_EVENT", why.as_str())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start sh: {e}"))?;
        // Read stderr while it runs: a full pipe would otherwise block it until the timeout.
        let mut pipe = child.stderr.take();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(pipe) = pipe.as_mut() {
                let _ = std::io::Read::read_to_string(pipe, &mut text);
            }
            text
        });
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() > COMMAND_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("timed out after {}s", COMMAND_TIMEOUT.as_secs()));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("waiting for it: {e}")),
            }
        };
        let stderr = stderr.join().unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        let tail: String = stderr
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect();
        Err(format!("{status}: {tail}"))
    }

    /// A warning now and a line in the anchor log, secrets scrubbed.
    fn failed(&self, what: &str, why: &str) {
        let line = Redactor::from_env().redact_text(&format!("{what} failed: {why}"));
        tracing::warn!("ledger anchor: {line}");
        let entry = format!("{} {line}\n", chrono::Utc::now().to_rfc3339());
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .and_then(|mut f| f.write_all(entry.as_bytes()));
        if let Err(e) = appended {
            tracing::warn!("cannot write {}: {e}", self.log.display());
        }
    }
}
