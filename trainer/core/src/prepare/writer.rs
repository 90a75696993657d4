//! Cuts one split's token stream into shards at document boundaries: a shard closes after the
//! document that brings it to `shard_tokens` tokens. The cut depends only on the split's
//! documents, so a resumed run writes the same shards as an uninterrupted one.

use super::split::DocSplit;
use super::PrepareError;
use crate::shards::{Shard, ShardHeader, TokenWidth};
use std::path::{Path, PathBuf};

pub struct SplitWriter {
    split: DocSplit,
    dir: PathBuf,
    width: TokenWidth,
    shard_tokens: usize,
    bos: u32,
    buffer: Vec<u32>,
    buffer_docs: u64,
    buffer_bytes: u64,
    /// Documents before this global index are already in finished shards.
    resume_from: u64,
    shards: Vec<(String, ShardHeader)>,
    pub written: usize,
    pub reused: usize,
}

pub fn shard_name(split: DocSplit, index: usize) -> String {
    format!("{}_{index:06}.bin", split.name())
}

impl SplitWriter {
    /// Picks up the finished shards of an earlier run (complete by construction: they were
    /// renamed into place), so only the rest is written.
    pub fn resume(
        dir: &Path,
        split: DocSplit,
        width: TokenWidth,
        shard_tokens: usize,
        bos: u32,
    ) -> Result<Self, PrepareError> {
        let mut shards = Vec::new();
        loop {
            let name = shard_name(split, shards.len());
            let path = dir.join(&name);
            if !path.exists() {
                break;
            }
            let header = *Shard::open(&path)?.header();
            if header.width != width {
                return Err(PrepareError::OutDirInUse {
                    path: dir.to_path_buf(),
                    reason: format!("shard {name} has another token width"),
                });
            }
            shards.push((name, header));
        }
        Ok(Self {
            split,
            dir: dir.to_path_buf(),
            width,
            shard_tokens,
            bos,
            buffer: Vec::new(),
            buffer_docs: 0,
            buffer_bytes: 0,
            resume_from: shards.last().map_or(0, |(_, h)| h.next_doc),
            reused: shards.len(),
            shards,
            written: 0,
        })
    }

    /// The first global document index this writer still needs.
    pub fn resume_from(&self) -> u64 {
        self.resume_from
    }

    /// Appends document `doc` (BOS first) and closes the shard if it is full.
    pub fn push(&mut self, doc: u64, tokens: &[u32], text_bytes: u64) -> Result<(), PrepareError> {
        debug_assert!(doc >= self.resume_from);
        self.buffer.push(self.bos);
        self.buffer.extend_from_slice(tokens);
        self.buffer_docs += 1;
        self.buffer_bytes += text_bytes;
        if self.buffer.len() >= self.shard_tokens {
            self.flush(doc + 1)?;
        }
        Ok(())
    }

    /// Writes what is buffered as the last shard; `total_docs` is the corpus size.
    pub fn finish(&mut self, total_docs: u64) -> Result<(), PrepareError> {
        self.flush(total_docs)
    }

    fn flush(&mut self, next_doc: u64) -> Result<(), PrepareError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let name = shard_name(self.split, self.shards.len());
        let path = self.dir.join(&name);
        let header = ShardHeader {
            width: self.width,
            tokens: self.buffer.len() as u64,
            next_doc,
            documents: self.buffer_docs,
            text_bytes: self.buffer_bytes,
        };
        crate::shards::write_shard(&path, &header, &self.buffer)
            .map_err(|source| PrepareError::Write { path, source })?;
        self.shards.push((name, header));
        self.written += 1;
        self.buffer.clear();
        self.buffer_docs = 0;
        self.buffer_bytes = 0;
        self.resume_from = next_doc;
        Ok(())
    }

    pub fn info(&self) -> super::manifest::SplitInfo {
        let sum = |f: fn(&ShardHeader) -> u64| self.shards.iter().map(|(_, h)| f(h)).sum();
        super::manifest::SplitInfo {
            documents: sum(|h| h.documents),
            tokens: sum(|h| h.tokens),
            text_bytes: sum(|h| h.text_bytes),
            shards: self.shards.iter().map(|(n, _)| n.clone()).collect(),
        }
    }
}
