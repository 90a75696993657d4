//! This loop process's sandbox settings: installed once, read by every sandboxed command.

use std::path::PathBuf;
use std::sync::RwLock;

use anyhow::{Context, Result};

/// How this loop process sandboxes its commands; set once by `start` / `rollback`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// false with `--no-sandbox`: only the environment is scrubbed.
    pub enforce: bool,
    /// The `agentloop` binary that provides `sandbox-exec`.
    pub exe: PathBuf,
    /// Where policy files are written (`.agentloop/sandbox/`, content-addressed).
    pub policy_dir: PathBuf,
    /// Variables never passed on (the provider key's), whatever the allow-list says.
    pub never_env: Vec<String>,
}

static SETTINGS: RwLock<Option<Settings>> = RwLock::new(None);

pub fn install(settings: Settings) {
    *SETTINGS.write().unwrap_or_else(|e| e.into_inner()) = Some(settings);
}

pub(super) fn settings() -> Result<Settings> {
    SETTINGS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .context("internal: the sandbox was not set up before running a command")
}
