//! `agentloop init`: a commented `agentloop.toml` fitted to the repository it finds, and
//! (`check`) a dry run of the contract before a budget is spent.

pub mod check;
mod detect;
mod template;

use std::path::{Path, PathBuf};

use agentloop_guardrails::target::TARGET_FILE;
use anyhow::{bail, Context, Result};

pub use detect::{detect, Found, Kind};

/// Writes `<root>/agentloop.toml` for what `detect` finds; refuses to overwrite one.
/// Returns the path written and what was found.
pub fn write(root: &Path) -> Result<(PathBuf, Found)> {
    let path = root.join(TARGET_FILE);
    if path.symlink_metadata().is_ok() {
        bail!(
            "{} already exists; agentloop init never overwrites it. Check it with \
             `agentloop init --check`, or move it away to generate a new one",
            path.display()
        );
    }
    let found = detect(root)?;
    let text = template::render(&found);
    // Create-new: a file that appeared meanwhile is not overwritten either.
    use std::io::Write;
    let mut file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((path, found))
}

#[cfg(test)]
mod tests;
