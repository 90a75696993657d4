//! `agentloop-trainer prepare`: documents in (text, JSONL, Parquet), token shards out.
//!
//! 1. Resolve the inputs and hash them with the settings (the run key).
//! 2. Scan every document once: counts them and rejects bad input (unreadable paths, missing
//!    columns or fields, invalid UTF-8) before anything is written.
//! 3. Draw the val / holdout documents from the seed ([`split::SplitPlan`]).
//! 4. Train the BPE on the training split (when asked), save the tokenizer and its
//!    bytes-per-token table.
//! 5. Stream the documents again in batches tokenized on all cores, cutting each split into
//!    shards ([`writer::SplitWriter`]); finished shards of an interrupted run are kept.
//! 6. Write `manifest.json` last.
//!
//! Memory bound: one batch of text ([`BATCH_BYTES`]) and its tokens, plus per split one shard
//! buffer (`shard_tokens` + the longest document, 4 bytes a token), plus, when training a BPE,
//! up to `bpe_train_bytes` of training text and the trainer's word counts.

pub mod input;
pub mod manifest;
pub mod split;
mod writer;

use crate::shards::TokenWidth;
use crate::tokenizer::spec::{self, SpecError, TokenizerSpec};
use crate::tokenizer::{bpe, Tokenizer};
use input::{Format, InputFile};
use manifest::{Manifest, MANIFEST_FORMAT};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use split::{DocSplit, SplitPlan};
use std::path::{Path, PathBuf};
use writer::SplitWriter;

/// Text handed to the tokenizer threads at once.
pub const BATCH_BYTES: usize = 8 << 20;
/// Records which run an output directory belongs to, until the manifest does.
const KEY_FILE: &str = ".prepare-key";

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{path} cannot be read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid UTF-8 ({place})")]
    InvalidUtf8 { path: PathBuf, place: String },
    #[error("{path}: {place}: {reason}")]
    BadRecord {
        path: PathBuf,
        place: String,
        reason: String,
    },
    #[error("Parquet file {path} has no column `{field}` (columns: {found}); name the text column with --field")]
    MissingColumn {
        path: PathBuf,
        field: String,
        found: String,
    },
    #[error("the inputs hold no documents (every file is empty or has no non-empty text)")]
    NoDocuments,
    #[error("the inputs hold {found} documents; {needed} are needed ({val} val + {holdout} holdout + at least 1 train)")]
    TooFewDocuments {
        found: u64,
        needed: u64,
        val: u64,
        holdout: u64,
    },
    #[error("output directory {path} cannot be used: {reason}")]
    OutDirInUse { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid setting: {0}")]
    BadSetting(String),
    #[error(transparent)]
    Tokenizer(#[from] SpecError),
    #[error(transparent)]
    Shard(#[from] crate::shards::ShardError),
    /// Ends a document stream early; never escapes this module.
    #[error("internal: stream stopped early")]
    StopEarly,
}

#[derive(Debug, Clone)]
pub struct PrepareArgs {
    pub inputs: Vec<PathBuf>,
    pub format: Format,
    /// JSONL field or Parquet column holding the text.
    pub field: String,
    pub tokenizer: TokenizerSpec,
    pub out: PathBuf,
    pub val_docs: u64,
    pub holdout_docs: u64,
    pub split_seed: u64,
    /// A shard closes after the document that brings it to this many tokens.
    pub shard_tokens: u64,
    /// Training text the BPE trainer sees at most (the first training documents).
    pub bpe_train_bytes: u64,
    pub progress: bool,
}

impl PrepareArgs {
    pub const DEFAULT_SHARD_TOKENS: u64 = 16 << 20;
    pub const DEFAULT_BPE_TRAIN_BYTES: u64 = 256 << 20;

    pub fn new(inputs: Vec<PathBuf>, tokenizer: TokenizerSpec, out: PathBuf) -> Self {
        Self {
            inputs,
            format: Format::Auto,
            field: "text".into(),
            tokenizer,
            out,
            val_docs: 1,
            holdout_docs: 1,
            split_seed: 0,
            shard_tokens: Self::DEFAULT_SHARD_TOKENS,
            bpe_train_bytes: Self::DEFAULT_BPE_TRAIN_BYTES,
            progress: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub manifest: Manifest,
    pub shards_written: usize,
    pub shards_reused: usize,
}

/// What the scan found: documents and text bytes per input file.
struct Scan {
    files: Vec<(InputFile, u64)>,
    documents: u64,
    bytes: u64,
}

pub fn prepare(args: &PrepareArgs) -> Result<Summary, PrepareError> {
    if args.shard_tokens == 0 {
        return Err(PrepareError::BadSetting(
            "--shard-tokens must be at least 1".into(),
        ));
    }
    if args.val_docs == 0 || args.holdout_docs == 0 {
        return Err(PrepareError::BadSetting(
            "--val-docs and --holdout-docs must each be at least 1".into(),
        ));
    }
    if let TokenizerSpec::Bpe { vocab_size } = args.tokenizer {
        if vocab_size < bpe::MIN_VOCAB {
            return Err(SpecError::Bpe(bpe::BpeError::VocabTooSmall(vocab_size)).into());
        }
    }
    let files = input::resolve(&args.inputs, args.format)?;
    let key = run_key(args, &files)?;
    if manifest::is_prepared(&args.out) {
        let existing = Manifest::read(&args.out).map_err(|e| PrepareError::OutDirInUse {
            path: args.out.clone(),
            reason: e.to_string(),
        })?;
        if existing.key != key {
            return Err(PrepareError::OutDirInUse {
                path: args.out.clone(),
                reason: "it holds a dataset prepared from other inputs or settings".into(),
            });
        }
        let reused = [&existing.train, &existing.val, &existing.holdout]
            .iter()
            .map(|s| s.shards.len())
            .sum();
        return Ok(Summary {
            manifest: existing,
            shards_written: 0,
            shards_reused: reused,
        });
    }
    let scan = scan(files, &args.field)?;
    if scan.documents == 0 {
        return Err(PrepareError::NoDocuments);
    }
    let needed = args.val_docs + args.holdout_docs + 1;
    if scan.documents < needed {
        return Err(PrepareError::TooFewDocuments {
            found: scan.documents,
            needed,
            val: args.val_docs,
            holdout: args.holdout_docs,
        });
    }
    claim_out_dir(&args.out, &key)?;
    let plan = SplitPlan::new(
        scan.documents,
        args.val_docs,
        args.holdout_docs,
        args.split_seed,
    );
    let tokenizer = load_or_train_tokenizer(args, &scan, &plan)?;
    spec::save_token_bytes(&args.out, tokenizer.as_ref())?;
    let width = TokenWidth::for_vocab(tokenizer.vocab_size());
    let mut writers = DocSplit::ALL
        .iter()
        .map(|&s| {
            SplitWriter::resume(
                &args.out,
                s,
                width,
                args.shard_tokens as usize,
                tokenizer.bos(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    tokenize_into_shards(args, &scan, &plan, tokenizer.as_ref(), &mut writers)?;
    for w in &mut writers {
        w.finish(scan.documents)?;
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        key,
        tokenizer: args.tokenizer,
        vocab_size: tokenizer.vocab_size(),
        bos: tokenizer.bos(),
        token_width: width.bytes() as u32,
        split_seed: args.split_seed,
        train: writers[0].info(),
        val: writers[1].info(),
        holdout: writers[2].info(),
    };
    manifest
        .write(&args.out)
        .map_err(|source| PrepareError::Write {
            path: args.out.join(manifest::MANIFEST_FILE),
            source,
        })?;
    Ok(Summary {
        manifest,
        shards_written: writers.iter().map(|w| w.written).sum(),
        shards_reused: writers.iter().map(|w| w.reused).sum(),
    })
}

/// Hash of the inputs (path, size, modification time) and every setting that shapes the
/// shards: a re-run with the same key may reuse finished shards, any other may not.
fn run_key(args: &PrepareArgs, files: &[InputFile]) -> Result<String, PrepareError> {
    let mut h = Sha256::new();
    h.update(MANIFEST_FORMAT.as_bytes());
    for file in files {
        let meta = std::fs::metadata(&file.path).map_err(|source| PrepareError::Read {
            path: file.path.clone(),
            source,
        })?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        h.update(
            format!(
                "{:?}|{:?}|{}|{modified}\n",
                file.path,
                file.format,
                meta.len()
            )
            .as_bytes(),
        );
    }
    h.update(
        format!(
            "field={}|tok={}|val={}|holdout={}|seed={}|shard={}|bpe_bytes={}",
            args.field,
            args.tokenizer,
            args.val_docs,
            args.holdout_docs,
            args.split_seed,
            args.shard_tokens,
            args.bpe_train_bytes
        )
        .as_bytes(),
    );
    Ok(hex::encode(h.finalize()))
}

fn scan(files: Vec<InputFile>, field: &str) -> Result<Scan, PrepareError> {
    let mut scanned = Vec::with_capacity(files.len());
    let (mut documents, mut bytes) = (0u64, 0u64);
    for file in files {
        let mut count = 0u64;
        input::for_each_document(&file, field, &mut |doc| {
            count += 1;
            bytes += doc.len() as u64;
            Ok(())
        })?;
        documents += count;
        scanned.push((file, count));
    }
    Ok(Scan {
        files: scanned,
        documents,
        bytes,
    })
}

/// Creates `out` or reuses it when an earlier run with the same key left it; anything else in
/// it is refused, so nothing of the user's is overwritten.
fn claim_out_dir(out: &Path, key: &str) -> Result<(), PrepareError> {
    let in_use = |reason: String| PrepareError::OutDirInUse {
        path: out.to_path_buf(),
        reason,
    };
    let write_error = |source| PrepareError::Write {
        path: out.to_path_buf(),
        source,
    };
    let key_path = out.join(KEY_FILE);
    if out.exists() {
        match std::fs::read_to_string(&key_path) {
            Ok(found) if found == key => {}
            Ok(_) => {
                return Err(in_use(
                    "an unfinished run with other inputs or settings left it; remove it or choose another --out".into(),
                ))
            }
            Err(_) => {
                let empty = std::fs::read_dir(out)
                    .map_err(write_error)?
                    .next()
                    .is_none();
                if !empty {
                    return Err(in_use("it is not empty and was not made by `prepare`".into()));
                }
            }
        }
        remove_temporaries(out)?;
    } else {
        std::fs::create_dir_all(out).map_err(write_error)?;
    }
    crate::shards::write_file_atomically(&key_path, key.as_bytes()).map_err(write_error)
}

/// Removes what a killed run was writing (`.name.tmp`), which no reader would take anyway.
fn remove_temporaries(out: &Path) -> Result<(), PrepareError> {
    let write_error = |source| PrepareError::Write {
        path: out.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(out).map_err(write_error)? {
        let path = entry.map_err(write_error)?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") {
            std::fs::remove_file(&path).map_err(write_error)?;
        }
    }
    Ok(())
}

fn load_or_train_tokenizer(
    args: &PrepareArgs,
    scan: &Scan,
    plan: &SplitPlan,
) -> Result<Box<dyn Tokenizer>, PrepareError> {
    let TokenizerSpec::Bpe { vocab_size } = args.tokenizer else {
        return Ok(args.tokenizer.load(&args.out)?);
    };
    let path = args.out.join(spec::BPE_FILE);
    if path.exists() {
        // Written atomically by an earlier run with the same key: the same training result.
        return Ok(args.tokenizer.load(&args.out)?);
    }
    let mut texts = Vec::new();
    let mut taken = 0u64;
    let streamed = for_each_file_document(scan, &args.field, 0, &mut |index, text| {
        if plan.of(index) == DocSplit::Train {
            if taken >= args.bpe_train_bytes {
                return Err(PrepareError::StopEarly);
            }
            taken += text.len() as u64;
            texts.push(text);
        }
        Ok(())
    });
    match streamed {
        Ok(()) | Err(PrepareError::StopEarly) => {}
        Err(e) => return Err(e),
    }
    Ok(Box::new(
        bpe::train(texts.into_iter(), vocab_size, &path).map_err(SpecError::from)?,
    ))
}

/// Streams documents with their global index, starting at document `from` (whole files
/// before it are skipped unread).
fn for_each_file_document(
    scan: &Scan,
    field: &str,
    from: u64,
    each: &mut dyn FnMut(u64, String) -> Result<(), PrepareError>,
) -> Result<(), PrepareError> {
    let mut first = 0u64;
    for (file, count) in &scan.files {
        if first + count <= from {
            first += count;
            continue;
        }
        let mut index = first;
        input::for_each_document(file, field, &mut |text| {
            let result = each(index, text);
            index += 1;
            result
        })?;
        first += count;
    }
    Ok(())
}

fn tokenize_into_shards(
    args: &PrepareArgs,
    scan: &Scan,
    plan: &SplitPlan,
    tokenizer: &dyn Tokenizer,
    writers: &mut [SplitWriter],
) -> Result<(), PrepareError> {
    let writer_of = |s: DocSplit| s as usize;
    let from = writers.iter().map(|w| w.resume_from()).min().unwrap_or(0);
    let progress = if args.progress {
        let bar = indicatif::ProgressBar::new(scan.bytes);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("a valid template"),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut batch: Vec<(u64, DocSplit, String)> = Vec::new();
    let mut batch_bytes = 0usize;
    let flush = |batch: &mut Vec<(u64, DocSplit, String)>,
                 writers: &mut [SplitWriter]|
     -> Result<(), PrepareError> {
        let tokens: Vec<Vec<u32>> = batch
            .par_iter()
            .map(|(_, _, text)| tokenizer.encode(text.as_bytes()))
            .collect();
        for ((doc, split, text), tokens) in batch.drain(..).zip(tokens) {
            writers[writer_of(split)].push(doc, &tokens, text.len() as u64)?;
            progress.inc(text.len() as u64);
        }
        Ok(())
    };
    for_each_file_document(scan, &args.field, from, &mut |doc, text| {
        let split = plan.of(doc);
        if doc < writers[writer_of(split)].resume_from() {
            progress.inc(text.len() as u64);
            return Ok(());
        }
        batch_bytes += text.len();
        batch.push((doc, split, text));
        if batch_bytes >= BATCH_BYTES {
            flush(&mut batch, writers)?;
            batch_bytes = 0;
        }
        Ok(())
    })?;
    flush(&mut batch, writers)?;
    Ok(())
}
