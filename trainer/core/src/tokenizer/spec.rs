//! Which tokenizer a prepared dataset uses (`byte`, `bpe:<vocab>`, `gpt2`), and the files saved
//! beside its shards: `tokenizer.json` (trained BPE only) and `token_bytes.json`, the
//! bytes-per-token table that bits-per-byte divides by.

use super::bpe::{self, BpeError};
use super::tiktoken::{EncoderError, TiktokenTokenizer};
use super::{ByteTokenizer, Tokenizer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The trained BPE, beside the shards.
pub const BPE_FILE: &str = "tokenizer.json";
/// Bytes of each token id, beside the shards.
pub const TOKEN_BYTES_FILE: &str = "token_bytes.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TokenizerSpec {
    Byte,
    Bpe { vocab_size: usize },
    Gpt2,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(
        "unknown tokenizer {0:?}: expected `byte`, `gpt2` or `bpe:<vocab size>` (e.g. `bpe:4096`)"
    )]
    Unknown(String),
    #[error(transparent)]
    Bpe(#[from] BpeError),
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    #[error("{path}: {reason}")]
    TokenBytes { path: PathBuf, reason: String },
}

impl std::str::FromStr for TokenizerSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "byte" => Ok(Self::Byte),
            "gpt2" => Ok(Self::Gpt2),
            _ => s
                .strip_prefix("bpe:")
                .and_then(|n| n.parse().ok())
                .map(|vocab_size| Self::Bpe { vocab_size })
                .ok_or_else(|| SpecError::Unknown(s.into())),
        }
    }
}

impl std::fmt::Display for TokenizerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Byte => f.write_str("byte"),
            Self::Bpe { vocab_size } => write!(f, "bpe:{vocab_size}"),
            Self::Gpt2 => f.write_str("gpt2"),
        }
    }
}

impl TokenizerSpec {
    /// The tokenizer when it needs no training (`byte`, `gpt2`), or the trained BPE saved in
    /// `dir`.
    pub fn load(self, dir: &Path) -> Result<Box<dyn Tokenizer>, SpecError> {
        Ok(match self {
            Self::Byte => Box::new(ByteTokenizer),
            Self::Gpt2 => Box::new(TiktokenTokenizer::gpt2()?),
            Self::Bpe { .. } => Box::new(bpe::load(&dir.join(BPE_FILE))?),
        })
    }
}

/// The bytes of every token id (0 for special ones).
pub fn token_bytes(tok: &dyn Tokenizer) -> Vec<u32> {
    (0..tok.vocab_size() as u32)
        .map(|t| tok.bytes_of(t) as u32)
        .collect()
}

pub fn save_token_bytes(dir: &Path, tok: &dyn Tokenizer) -> Result<(), SpecError> {
    let path = dir.join(TOKEN_BYTES_FILE);
    let json = serde_json::to_vec(&token_bytes(tok)).expect("a list of numbers serializes");
    crate::shards::write_file_atomically(&path, &json).map_err(|e| SpecError::TokenBytes {
        path,
        reason: e.to_string(),
    })
}

/// Reads the table saved by [`save_token_bytes`] and checks it against `tok`, so an evaluation
/// never divides by bytes that disagree with the tokens.
pub fn check_token_bytes(dir: &Path, tok: &dyn Tokenizer) -> Result<(), SpecError> {
    let path = dir.join(TOKEN_BYTES_FILE);
    let error = |reason: String| SpecError::TokenBytes {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read(&path).map_err(|e| error(e.to_string()))?;
    let saved: Vec<u32> = serde_json::from_slice(&text).map_err(|e| error(e.to_string()))?;
    if saved != token_bytes(tok) {
        return Err(error(
            "the bytes-per-token table does not match the tokenizer".into(),
        ));
    }
    Ok(())
}
