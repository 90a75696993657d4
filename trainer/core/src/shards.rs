//! Token shards on disk, after llm.c's layout: a 1024-byte header of 256 little-endian `u32`
//! words, then the tokens as little-endian `u16` (vocabularies up to 65 536) or `u32`.
//!
//! Header words: 0 magic, 1 version, 2 token width in bytes, 3 reserved (0), 4-5 token count
//! (`u64`), 6-7 the global index of the first document after this shard (`u64`, lets `prepare`
//! resume), 8-9 documents in the shard, 10-11 text bytes in the shard. Shards are written
//! under a temporary name and renamed, so a file with a shard's name is always complete.
//! Frozen: the evaluation reads its tokens from here.

use memmap2::Mmap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const SHARD_MAGIC: u32 = 0x414c_5348; // "HSLA" on disk
pub const SHARD_VERSION: u32 = 1;
pub const HEADER_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("shard {path} cannot be read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("shard {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// Bytes per stored token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenWidth {
    U16,
    U32,
}

impl TokenWidth {
    /// The narrowest width that holds every id of a vocabulary of `vocab_size` tokens.
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= 1 << 16 {
            Self::U16
        } else {
            Self::U32
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            Self::U16 => 2,
            Self::U32 => 4,
        }
    }

    fn from_bytes(bytes: u32) -> Option<Self> {
        match bytes {
            2 => Some(Self::U16),
            4 => Some(Self::U32),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardHeader {
    pub width: TokenWidth,
    pub tokens: u64,
    /// Global index of the first input document after this shard's last one.
    pub next_doc: u64,
    pub documents: u64,
    pub text_bytes: u64,
}

impl ShardHeader {
    fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut words = [0u32; HEADER_BYTES / 4];
        words[0] = SHARD_MAGIC;
        words[1] = SHARD_VERSION;
        words[2] = self.width.bytes() as u32;
        for (at, value) in [
            (4, self.tokens),
            (6, self.next_doc),
            (8, self.documents),
            (10, self.text_bytes),
        ] {
            words[at] = value as u32;
            words[at + 1] = (value >> 32) as u32;
        }
        let mut out = [0u8; HEADER_BYTES];
        for (chunk, word) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8], path: &Path) -> Result<Self, ShardError> {
        let corrupt = |reason: String| ShardError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.len() < HEADER_BYTES {
            return Err(corrupt(format!(
                "{} bytes, shorter than the {HEADER_BYTES}-byte header",
                bytes.len()
            )));
        }
        let word = |i: usize| u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
        let long = |i: usize| u64::from(word(i)) | (u64::from(word(i + 1)) << 32);
        if word(0) != SHARD_MAGIC {
            return Err(corrupt(format!("bad magic {:#010x}", word(0))));
        }
        if word(1) != SHARD_VERSION {
            return Err(corrupt(format!(
                "version {}, this build reads {SHARD_VERSION}",
                word(1)
            )));
        }
        let width = TokenWidth::from_bytes(word(2))
            .ok_or_else(|| corrupt(format!("token width {} is neither 2 nor 4", word(2))))?;
        Ok(Self {
            width,
            tokens: long(4),
            next_doc: long(6),
            documents: long(8),
            text_bytes: long(10),
        })
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// `path` either does not exist or is complete.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temporary_name(path);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `dir/.name.tmp`: hidden, and never mistaken for a shard.
pub fn temporary_name(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Writes one shard (atomically); every token must fit `header.width`.
pub fn write_shard(path: &Path, header: &ShardHeader, tokens: &[u32]) -> std::io::Result<()> {
    debug_assert_eq!(header.tokens, tokens.len() as u64);
    let mut bytes = Vec::with_capacity(HEADER_BYTES + tokens.len() * header.width.bytes());
    bytes.extend_from_slice(&header.encode());
    match header.width {
        TokenWidth::U16 => {
            for &t in tokens {
                let t = u16::try_from(t).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("token {t} does not fit a u16 shard"),
                    )
                })?;
                bytes.extend_from_slice(&t.to_le_bytes());
            }
        }
        TokenWidth::U32 => tokens
            .iter()
            .for_each(|t| bytes.extend_from_slice(&t.to_le_bytes())),
    }
    write_file_atomically(path, &bytes)
}

/// One memory-mapped shard.
pub struct Shard {
    map: Mmap,
    header: ShardHeader,
}

impl Shard {
    pub fn open(path: &Path) -> Result<Self, ShardError> {
        let io = |source| ShardError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: shards are written once under a temporary name and renamed into place, never
        // modified afterwards; the map is read-only.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let header = ShardHeader::decode(&map, path)?;
        let expected = HEADER_BYTES as u64 + header.tokens * header.width.bytes() as u64;
        if map.len() as u64 != expected {
            return Err(ShardError::Corrupt {
                path: path.to_path_buf(),
                reason: format!(
                    "{} bytes, but its header announces {} tokens ({expected} bytes)",
                    map.len(),
                    header.tokens
                ),
            });
        }
        Ok(Self { map, header })
    }

    pub fn header(&self) -> &ShardHeader {
        &self.header
    }

    pub fn len(&self) -> usize {
        self.header.tokens as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends tokens `start..start + count` to `out`.
    pub fn read_into(&self, start: usize, count: usize, out: &mut Vec<u32>) {
        let body = &self.map[HEADER_BYTES..];
        match self.header.width {
            TokenWidth::U16 => out.extend(
                body[2 * start..2 * (start + count)]
                    .chunks_exact(2)
                    .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]]))),
            ),
            TokenWidth::U32 => out.extend(
                body[4 * start..4 * (start + count)]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
        }
    }
}

/// The shards of one split, read as one concatenated token stream.
pub struct ShardSet {
    shards: Vec<Shard>,
    /// Stream offset of each shard's first token.
    starts: Vec<usize>,
    len: usize,
}

impl ShardSet {
    pub fn open(paths: &[PathBuf]) -> Result<Self, ShardError> {
        let shards = paths
            .iter()
            .map(|p| Shard::open(p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut starts = Vec::with_capacity(shards.len());
        let mut len = 0;
        for shard in &shards {
            starts.push(len);
            len += shard.len();
        }
        Ok(Self {
            shards,
            starts,
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends stream tokens `start..start + count` to `out`, across shard boundaries.
    pub fn read_into(&self, start: usize, count: usize, out: &mut Vec<u32>) {
        assert!(start + count <= self.len, "read past the end of the shards");
        let mut at = start;
        let end = start + count;
        let mut index = self.starts.partition_point(|&s| s <= at) - 1;
        while at < end {
            let shard = &self.shards[index];
            let offset = at - self.starts[index];
            let take = (shard.len() - offset).min(end - at);
            shard.read_into(offset, take, out);
            at += take;
            index += 1;
        }
    }

    pub fn read(&self, start: usize, count: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(count);
        self.read_into(start, count, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_round_trip_in_both_widths_and_read_across_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let a: Vec<u32> = (0..1000).map(|i| i * 37 % 65_536).collect();
        let b: Vec<u32> = (0..500).map(|i| 70_000 + i).collect();
        let header = |width, tokens: &[u32]| ShardHeader {
            width,
            tokens: tokens.len() as u64,
            next_doc: 7,
            documents: 3,
            text_bytes: 99,
        };
        let (pa, pb) = (dir.path().join("a.bin"), dir.path().join("b.bin"));
        write_shard(&pa, &header(TokenWidth::U16, &a), &a).unwrap();
        write_shard(&pb, &header(TokenWidth::U32, &b), &b).unwrap();
        assert_eq!(
            std::fs::metadata(&pa).unwrap().len(),
            HEADER_BYTES as u64 + 2000
        );
        let set = ShardSet::open(&[pa.clone(), pb]).unwrap();
        assert_eq!(set.len(), 1500);
        let all: Vec<u32> = a.iter().chain(&b).copied().collect();
        assert_eq!(set.read(0, 1500), all);
        assert_eq!(set.read(990, 20), all[990..1010]);
        assert_eq!(
            Shard::open(&pa).unwrap().header(),
            &header(TokenWidth::U16, &a)
        );
        assert!(!temporary_name(&pa).exists());
    }

    #[test]
    fn a_token_too_wide_for_u16_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.bin");
        let header = ShardHeader {
            width: TokenWidth::U16,
            tokens: 1,
            next_doc: 1,
            documents: 1,
            text_bytes: 1,
        };
        assert!(write_shard(&path, &header, &[70_000]).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn truncated_or_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.bin");
        let tokens = [1u32, 2, 3];
        let header = ShardHeader {
            width: TokenWidth::U16,
            tokens: 3,
            next_doc: 1,
            documents: 1,
            text_bytes: 3,
        };
        write_shard(&path, &header, &tokens).unwrap();
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 1]).unwrap();
        let err = Shard::open(&path).err().unwrap().to_string();
        assert!(err.contains("announces 3 tokens"), "{err}");
        std::fs::write(&path, vec![0u8; 2000]).unwrap();
        let err = Shard::open(&path).err().unwrap().to_string();
        assert!(err.contains("bad magic"), "{err}");
    }
}
