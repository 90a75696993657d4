//! Checkpoints: `DIR/checkpoint/checkpoint.json` (counters, data position, hashes) pointing at
//! `state-<step>.safetensors` (parameters and optimizer moments). The JSON is replaced
//! atomically after its state file is complete, so a kill at any moment leaves either the old
//! or the new checkpoint, never a mix. Frozen.

use crate::contract::TrainState;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const FORMAT_VERSION: u32 = 1;
const MANIFEST: &str = "checkpoint.json";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("no checkpoint to resume from: {path} does not exist")]
    Missing { path: PathBuf },
    #[error("checkpoint file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("checkpoint {path} belongs to another run: {reason}")]
    Mismatch { path: PathBuf, reason: String },
    #[error("cannot write checkpoint file {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// The runner's counters at the moment of the checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub step: u64,
    pub data_position: u64,
    pub tokens: u64,
    pub elapsed_s: f64,
    pub loss_ema: f64,
    pub ema_weight: f64,
    pub best_loss_ema: f64,
    pub last_loss: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    seed: u64,
    config_fingerprint: String,
    progress: Progress,
    state_file: String,
    state_sha256: String,
    trainer_meta: serde_json::Value,
}

pub fn dir_of(out: &Path) -> PathBuf {
    out.join("checkpoint")
}

fn write_err(path: &Path, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn sha256_file(path: &Path) -> Result<String, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CheckpointError::Missing {
            path: path.to_path_buf(),
        },
        _ => CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

pub fn save(
    out: &Path,
    seed: u64,
    config_fingerprint: &str,
    progress: &Progress,
    state: TrainState,
) -> Result<(), CheckpointError> {
    let dir = dir_of(out);
    std::fs::create_dir_all(&dir).map_err(|e| write_err(&dir, e))?;
    let state_file = format!("state-{}.safetensors", progress.step);
    let state_path = dir.join(&state_file);
    let tmp_state = dir.join(format!("{state_file}.tmp"));
    let tensors: HashMap<String, Tensor> = state.tensors.into_iter().collect();
    candle_core::safetensors::save(&tensors, &tmp_state).map_err(|e| write_err(&tmp_state, e))?;
    std::fs::rename(&tmp_state, &state_path).map_err(|e| write_err(&state_path, e))?;
    let manifest = Manifest {
        version: FORMAT_VERSION,
        seed,
        config_fingerprint: config_fingerprint.to_string(),
        progress: progress.clone(),
        state_sha256: sha256_file(&state_path)?,
        state_file: state_file.clone(),
        trainer_meta: state.meta,
    };
    let manifest_path = dir.join(MANIFEST);
    let tmp_manifest = dir.join(format!("{MANIFEST}.tmp"));
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| write_err(&tmp_manifest, e))?;
    std::fs::write(&tmp_manifest, json).map_err(|e| write_err(&tmp_manifest, e))?;
    std::fs::rename(&tmp_manifest, &manifest_path).map_err(|e| write_err(&manifest_path, e))?;
    // Older state files are no longer referenced; removing them is best effort.
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("state-") && name != state_file {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

/// A loaded checkpoint, checked against the run it is resumed into.
pub struct Loaded {
    pub progress: Progress,
    pub state: TrainState,
}

pub fn load(
    out: &Path,
    seed: u64,
    config_fingerprint: &str,
    device: &Device,
) -> Result<Loaded, CheckpointError> {
    let manifest_path = dir_of(out).join(MANIFEST);
    let text = std::fs::read(&manifest_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CheckpointError::Missing {
            path: manifest_path.clone(),
        },
        _ => CheckpointError::Corrupt {
            path: manifest_path.clone(),
            reason: e.to_string(),
        },
    })?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| CheckpointError::Corrupt {
            path: manifest_path.clone(),
            reason: e.to_string(),
        })?;
    let mismatch = |reason: String| CheckpointError::Mismatch {
        path: manifest_path.clone(),
        reason,
    };
    if manifest.version != FORMAT_VERSION {
        return Err(mismatch(format!(
            "format version {} (this trainer writes {FORMAT_VERSION})",
            manifest.version
        )));
    }
    if manifest.seed != seed {
        return Err(mismatch(format!(
            "seed {} (resuming with {seed})",
            manifest.seed
        )));
    }
    if manifest.config_fingerprint != config_fingerprint {
        return Err(mismatch("it was written with a different config".into()));
    }
    if manifest.state_file.contains(['/', '\\']) {
        return Err(CheckpointError::Corrupt {
            path: manifest_path,
            reason: format!(
                "state file name {:?} is not a plain name",
                manifest.state_file
            ),
        });
    }
    let state_path = dir_of(out).join(&manifest.state_file);
    let actual = sha256_file(&state_path)?;
    if actual != manifest.state_sha256 {
        return Err(CheckpointError::Corrupt {
            path: state_path,
            reason: "its SHA-256 does not match checkpoint.json".into(),
        });
    }
    let tensors = candle_core::safetensors::load(&state_path, device).map_err(|e| {
        CheckpointError::Corrupt {
            path: state_path.clone(),
            reason: e.to_string(),
        }
    })?;
    let mut tensors: Vec<(String, Tensor)> = tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Loaded {
        progress: manifest.progress,
        state: TrainState {
            tensors,
            meta: manifest.trainer_meta,
        },
    })
}
