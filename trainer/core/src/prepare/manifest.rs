//! `manifest.json`: written last by `prepare`, so its presence marks a complete dataset, and
//! read by the trainer to find the shards and the tokenizer.

use crate::tokenizer::spec::TokenizerSpec;
use crate::Split;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const MANIFEST_FORMAT: &str = "agentloop-shards/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// Hash of the inputs and settings that produced the dataset.
    pub key: String,
    pub tokenizer: TokenizerSpec,
    pub vocab_size: usize,
    pub bos: u32,
    /// Bytes per stored token (2 or 4).
    pub token_width: u32,
    pub split_seed: u64,
    pub train: SplitInfo,
    pub val: SplitInfo,
    pub holdout: SplitInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    pub documents: u64,
    pub tokens: u64,
    pub text_bytes: u64,
    /// Shard file names, in stream order, relative to the manifest's directory.
    pub shards: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {path} cannot be read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// Whether `dir` holds a prepared dataset (rather than plain-text documents).
pub fn is_prepared(dir: &Path) -> bool {
    dir.join(MANIFEST_FILE).is_file()
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read(&path).map_err(|source| ManifestError::Read {
            path: path.clone(),
            source,
        })?;
        let manifest: Self = serde_json::from_slice(&text).map_err(|e| ManifestError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(ManifestError::Corrupt {
                path,
                reason: format!(
                    "format {:?}, this build reads {MANIFEST_FORMAT:?}",
                    manifest.format
                ),
            });
        }
        Ok(manifest)
    }

    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("the manifest serializes");
        crate::shards::write_file_atomically(&dir.join(MANIFEST_FILE), &json)
    }

    pub fn split(&self, split: Split) -> &SplitInfo {
        match split {
            Split::Val => &self.val,
            Split::Holdout => &self.holdout,
        }
    }

    /// Absolute paths of a split's shards.
    pub fn shard_paths(dir: &Path, info: &SplitInfo) -> Vec<PathBuf> {
        info.shards.iter().map(|name| dir.join(name)).collect()
    }
}
