//! The corpus: a directory of `*.txt` documents, split train / validation / holdout by whole
//! documents, deterministically (by folder: `val/` and `holdout/` beside the training
//! documents; or by a hash of the file names in a flat folder), or a directory prepared by `agentloop-trainer prepare`
//! (detected by its `manifest.json`), whose shards are memory-mapped; and the training-batch
//! source. Frozen.
//!
//! The training loop only ever receives a [`BatchSource`]. Validation and holdout tokens are
//! loaded by [`load_eval_tokens`], which needs an [`EvalAccess`] that only the frozen runner
//! can create, so editable code cannot read them.

use crate::prepare::manifest::{self, Manifest, ManifestError};
use crate::runner::access::EvalAccess;
use crate::shards::{ShardError, ShardSet};
use crate::tokenizer::spec::SpecError;
use crate::tokenizer::{ByteTokenizer, Tokenizer};
use crate::Split;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Fixed salt of the document split: the split never depends on the run seed.
const SPLIT_SALT: &[u8] = b"agentloop-trainer/split/v1";
/// Mixed into the run seed for the data order, so it differs from the initialization stream.
const DATA_ORDER_SALT: u64 = 0x5eed_da7a_0000_0001;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data directory {path} cannot be read: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} holds {found} `*.txt` documents; at least 3 are needed (train, val, holdout)")]
    TooFewDocuments { path: PathBuf, found: usize },
    #[error("data directory {path} holds no `*.txt` documents")]
    EmptySplit { path: PathBuf },
    #[error("data file {path} cannot be read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("the training split has {tokens} tokens, too few for sequences of {seq_len}")]
    TooShort { tokens: usize, seq_len: usize },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error("the tokenizer of prepared data {path}: {source}")]
    Tokenizer { path: PathBuf, source: SpecError },
    #[error("prepared data {path}: the manifest says {manifest} tokens but its tokenizer has {tokenizer}")]
    VocabMismatch {
        path: PathBuf,
        manifest: usize,
        tokenizer: usize,
    },
}

/// The tokenizer of a data directory: the one saved beside prepared shards (checked against
/// its bytes-per-token table), else bytes.
pub fn tokenizer_for(dir: &Path) -> Result<Box<dyn Tokenizer>, DataError> {
    if !manifest::is_prepared(dir) {
        return Ok(Box::new(ByteTokenizer));
    }
    let manifest = Manifest::read(dir)?;
    let tokenizer_error = |source| DataError::Tokenizer {
        path: dir.to_path_buf(),
        source,
    };
    let tok = manifest.tokenizer.load(dir).map_err(tokenizer_error)?;
    crate::tokenizer::spec::check_token_bytes(dir, tok.as_ref()).map_err(tokenizer_error)?;
    if tok.vocab_size() != manifest.vocab_size || tok.bos() != manifest.bos {
        return Err(DataError::VocabMismatch {
            path: dir.to_path_buf(),
            manifest: manifest.vocab_size,
            tokenizer: tok.vocab_size(),
        });
    }
    Ok(tok)
}

/// A split's tokens: in memory (text documents) or memory-mapped shards (prepared data).
enum TokenStream {
    Memory(Vec<u32>),
    Mapped(ShardSet),
}

impl TokenStream {
    fn len(&self) -> usize {
        match self {
            TokenStream::Memory(tokens) => tokens.len(),
            TokenStream::Mapped(shards) => shards.len(),
        }
    }

    fn extend_window(&self, start: usize, count: usize, out: &mut Vec<u32>) {
        match self {
            TokenStream::Memory(tokens) => out.extend_from_slice(&tokens[start..start + count]),
            TokenStream::Mapped(shards) => shards.read_into(start, count, out),
        }
    }
}

/// The memory-mapped shards of a prepared split, after checking the tokenizer matches.
fn open_prepared_split(
    dir: &Path,
    tok: &dyn Tokenizer,
    pick: impl Fn(&Manifest) -> &manifest::SplitInfo,
) -> Result<ShardSet, DataError> {
    let manifest = Manifest::read(dir)?;
    if manifest.vocab_size != tok.vocab_size() {
        return Err(DataError::VocabMismatch {
            path: dir.to_path_buf(),
            manifest: manifest.vocab_size,
            tokenizer: tok.vocab_size(),
        });
    }
    Ok(ShardSet::open(&Manifest::shard_paths(
        dir,
        pick(&manifest),
    ))?)
}

/// Which documents belong to which split (paths only).
#[derive(Debug, Clone, PartialEq)]
pub struct SplitManifest {
    pub train: Vec<PathBuf>,
    pub val: Vec<PathBuf>,
    pub holdout: Vec<PathBuf>,
}

/// The `*.txt` files directly in `dir`, sorted, and whether `dir` lists a `val` or `holdout`
/// entry (the per-split layout). Only the listing is read: no file is opened.
fn list_documents(dir: &Path) -> Result<(Vec<PathBuf>, bool), DataError> {
    let dir_error = |source| DataError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    let mut docs = Vec::new();
    let mut per_split = false;
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let path = entry.map_err(dir_error)?.path();
        let name = path.file_name().unwrap_or_default();
        per_split |= name == "val" || name == "holdout";
        if path.extension().is_some_and(|e| e == "txt") && !path.is_dir() {
            docs.push(path);
        }
    }
    docs.sort();
    Ok((docs, per_split))
}

/// Flat layout: ranks documents by a salted hash of their file name: 5% (at least one) go to
/// validation, as many to the holdout, the rest to training. Adding a document moves no other
/// document.
fn hash_split(dir: &Path, mut docs: Vec<PathBuf>) -> Result<SplitManifest, DataError> {
    if docs.len() < 3 {
        return Err(DataError::TooFewDocuments {
            path: dir.to_path_buf(),
            found: docs.len(),
        });
    }
    let rank = |p: &PathBuf| {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        let mut h = Sha256::new();
        h.update(SPLIT_SALT);
        h.update(name.as_bytes());
        h.finalize().to_vec()
    };
    docs.sort_by_cached_key(rank);
    let n_eval = (docs.len() / 20).max(1);
    let mut val: Vec<_> = docs.drain(..n_eval).collect();
    let mut holdout: Vec<_> = docs.drain(..n_eval).collect();
    val.sort();
    holdout.sort();
    docs.sort();
    Ok(SplitManifest {
        train: docs,
        val,
        holdout,
    })
}

/// The documents of one evaluation split in the per-split layout: `dir/<split>/*.txt`.
fn split_folder(dir: &Path, split: Split) -> Result<Vec<PathBuf>, DataError> {
    let folder = dir.join(split.name());
    let (docs, _) = list_documents(&folder)?;
    if docs.is_empty() {
        return Err(DataError::EmptySplit { path: folder });
    }
    Ok(docs)
}

/// The training documents, without opening or listing anything of the validation or holdout
/// split in the per-split layout (so a sandbox may hide those folders from a training run).
pub fn train_documents(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let (docs, per_split) = list_documents(dir)?;
    if !per_split {
        return Ok(hash_split(dir, docs)?.train);
    }
    if docs.is_empty() {
        return Err(DataError::EmptySplit {
            path: dir.to_path_buf(),
        });
    }
    Ok(docs)
}

/// The documents of an evaluation split.
fn eval_documents(dir: &Path, split: Split) -> Result<Vec<PathBuf>, DataError> {
    let (docs, per_split) = list_documents(dir)?;
    if per_split {
        return split_folder(dir, split);
    }
    let m = hash_split(dir, docs)?;
    Ok(match split {
        Split::Val => m.val,
        Split::Holdout => m.holdout,
    })
}

/// Splits a folder of documents by whole documents. Per-split layout (the folder lists a `val`
/// or `holdout` entry): training documents at the top, `val/*.txt` and `holdout/*.txt` beside
/// them, so the evaluation documents can be hidden by path. Flat layout: by a salted hash of the
/// file names (see `hash_split`).
pub fn split_manifest(dir: &Path) -> Result<SplitManifest, DataError> {
    let (docs, per_split) = list_documents(dir)?;
    if !per_split {
        return hash_split(dir, docs);
    }
    Ok(SplitManifest {
        train: train_documents(dir)?,
        val: split_folder(dir, Split::Val)?,
        holdout: split_folder(dir, Split::Holdout)?,
    })
}

/// Reads one document, refusing anything that is not UTF-8 text.
pub fn read_document(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.is_empty() {
        return Err(DataError::Corrupt {
            path: path.to_path_buf(),
            reason: "the file is empty".into(),
        });
    }
    if let Err(e) = std::str::from_utf8(&bytes) {
        return Err(DataError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            ),
        });
    }
    Ok(bytes)
}

/// Concatenates documents into one token stream, each one preceded by BOS.
pub fn tokenize_documents(paths: &[PathBuf], tok: &dyn Tokenizer) -> Result<Vec<u32>, DataError> {
    let mut tokens = Vec::new();
    for path in paths {
        tokens.push(tok.bos());
        tokens.extend(tok.encode(&read_document(path)?));
    }
    Ok(tokens)
}

/// The tokens of the validation or holdout split, for the frozen evaluation only.
pub struct EvalTokens {
    tokens: Vec<u32>,
    split: Split,
}

impl EvalTokens {
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
    pub fn split(&self) -> Split {
        self.split
    }
}

pub fn load_eval_tokens(
    dir: &Path,
    split: Split,
    tok: &dyn Tokenizer,
    _access: &EvalAccess,
) -> Result<EvalTokens, DataError> {
    if manifest::is_prepared(dir) {
        let shards = open_prepared_split(dir, tok, |m| m.split(split))?;
        // The evaluation scores a fixed number of targets; more would only cost memory.
        let count = shards.len().min(crate::eval::EVAL_TOKENS + 1);
        return Ok(EvalTokens {
            tokens: shards.read(0, count),
            split,
        });
    }
    let docs = eval_documents(dir, split)?;
    Ok(EvalTokens {
        tokens: tokenize_documents(&docs, tok)?,
        split,
    })
}

pub use agentloop_trainer_api::contract::{Batch, BatchSource};

/// Random windows of the training stream. Batch `i` depends only on (seed, i), so the data
/// position alone restores the order on resume.
pub struct TrainBatches {
    tokens: TokenStream,
    batch_size: usize,
    seq_len: usize,
    seed: u64,
    position: u64,
    device: Device,
}

impl TrainBatches {
    pub fn load(
        dir: &Path,
        tok: &dyn Tokenizer,
        batch_size: usize,
        seq_len: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self, DataError> {
        let tokens = if manifest::is_prepared(dir) {
            TokenStream::Mapped(open_prepared_split(dir, tok, |m| &m.train)?)
        } else {
            TokenStream::Memory(tokenize_documents(&train_documents(dir)?, tok)?)
        };
        if tokens.len() < seq_len + 2 {
            return Err(DataError::TooShort {
                tokens: tokens.len(),
                seq_len,
            });
        }
        Ok(Self {
            tokens,
            batch_size,
            seq_len,
            seed,
            position: 0,
            device: device.clone(),
        })
    }

    /// Batches drawn so far (the data position stored in checkpoints).
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn set_position(&mut self, position: u64) {
        self.position = position;
    }

    pub fn tokens_drawn(&self) -> u64 {
        self.position * (self.batch_size * self.seq_len) as u64
    }

    fn rng_for(&self, batch: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ DATA_ORDER_SALT);
        rng.set_stream(batch);
        rng
    }
}

impl BatchSource for TrainBatches {
    fn next_batch(&mut self) -> candle_core::Result<Batch> {
        let mut rng = self.rng_for(self.position);
        let (b, t) = (self.batch_size, self.seq_len);
        let mut inputs = Vec::with_capacity(b * t);
        let mut targets = Vec::with_capacity(b * t);
        for _ in 0..b {
            let start = rng.random_range(0..self.tokens.len() - t - 1);
            self.tokens.extend_window(start, t, &mut inputs);
            self.tokens.extend_window(start + 1, t, &mut targets);
        }
        self.position += 1;
        Ok(Batch {
            inputs: Tensor::from_vec(inputs, (b, t), &self.device)?,
            targets: Tensor::from_vec(targets, (b, t), &self.device)?,
        })
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn seq_len(&self) -> usize {
        self.seq_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::ByteTokenizer;

    fn corpus_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/shakespeare")
    }

    #[test]
    fn split_is_by_whole_documents_disjoint_and_stable() {
        let m = split_manifest(&corpus_dir()).unwrap();
        assert_eq!((m.val.len(), m.holdout.len()), (2, 2));
        assert_eq!(m.train.len(), 38);
        let mut all: Vec<_> = m.train.iter().chain(&m.val).chain(&m.holdout).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 42, "a document appears in two splits");
        assert_eq!(m, split_manifest(&corpus_dir()).unwrap());
        let names = |docs: &[PathBuf]| -> Vec<String> {
            docs.iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(&m.val), ["john.txt", "richard_iii.txt"]);
        assert_eq!(
            names(&m.holdout),
            ["rape_of_lucrece.txt", "timon_of_athens.txt"]
        );
    }

    /// The per-split folders hold exactly the documents the hash split of a flat folder picks,
    /// so moving them changed no run's data.
    #[test]
    fn per_split_folders_hold_what_the_flat_hash_split_picks() {
        let flat = tempfile::tempdir().unwrap();
        let m = split_manifest(&corpus_dir()).unwrap();
        for doc in m.train.iter().chain(&m.val).chain(&m.holdout) {
            std::fs::copy(doc, flat.path().join(doc.file_name().unwrap())).unwrap();
        }
        let hashed = split_manifest(flat.path()).unwrap();
        let names = |docs: &[PathBuf]| -> Vec<std::ffi::OsString> {
            docs.iter()
                .map(|p| p.file_name().unwrap().to_owned())
                .collect()
        };
        assert_eq!(names(&hashed.train), names(&m.train));
        assert_eq!(names(&hashed.val), names(&m.val));
        assert_eq!(names(&hashed.holdout), names(&m.holdout));
        assert_eq!(train_documents(&corpus_dir()).unwrap(), m.train);
    }

    #[test]
    fn batch_order_depends_on_seed_and_position_only() {
        let tok = ByteTokenizer;
        let mut a = TrainBatches::load(&corpus_dir(), &tok, 2, 8, 7, &Device::Cpu).unwrap();
        let first: Vec<Vec<u32>> = a.next_batch().unwrap().inputs.to_vec2().unwrap();
        let second: Vec<Vec<u32>> = a.next_batch().unwrap().inputs.to_vec2().unwrap();
        assert_ne!(first, second);
        let mut b = TrainBatches::load(&corpus_dir(), &tok, 2, 8, 7, &Device::Cpu).unwrap();
        b.set_position(1);
        assert_eq!(
            b.next_batch().unwrap().inputs.to_vec2::<u32>().unwrap(),
            second
        );
        let mut c = TrainBatches::load(&corpus_dir(), &tok, 2, 8, 8, &Device::Cpu).unwrap();
        assert_ne!(
            c.next_batch().unwrap().inputs.to_vec2::<u32>().unwrap(),
            first
        );
        assert_eq!(a.tokens_drawn(), 32);
    }
}
