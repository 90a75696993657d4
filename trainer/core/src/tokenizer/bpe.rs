//! A byte-level BPE trained on the training split with the `tokenizers` crate and a GPT-4-style
//! pre-split pattern, saved as a Hugging Face `tokenizer.json` (so Python can load it too) and
//! run through [`TiktokenTokenizer`] (merge rank = token id).

use super::tiktoken::TiktokenTokenizer;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    SplitDelimiterBehavior, TokenizerImpl,
};

/// GPT-4's (cl100k) pre-split pattern: words, numbers of up to three digits, punctuation runs
/// and whitespace become separate pieces that merges never cross.
pub const GPT4_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";
/// The BOS token's name in the saved `tokenizer.json`.
pub const BOS_TOKEN: &str = "<|bos|>";
/// The smallest vocabulary: 256 byte tokens, BOS and at least one merge.
pub const MIN_VOCAB: usize = 258;

#[derive(Debug, thiserror::Error)]
pub enum BpeError {
    #[error("a BPE vocabulary of {0} is too small; it needs at least {MIN_VOCAB} (256 bytes, BOS, one merge)")]
    VocabTooSmall(usize),
    #[error("BPE vocabularies above 2^32 tokens are not supported ({0} asked)")]
    VocabTooLarge(usize),
    #[error("training the BPE tokenizer failed: {0}")]
    Train(String),
    #[error("tokenizer file {path} cannot be read or written: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("tokenizer file {path} is not a byte-level BPE tokenizer: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(transparent)]
    Encoder(#[from] super::tiktoken::EncoderError),
}

type HfBpe = TokenizerImpl<
    BPE,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// Trains a vocabulary of `vocab_size` tokens (BOS included) on `texts`, writes it to
/// `path` (Hugging Face format) and returns the tokenizer.
pub fn train<I>(texts: I, vocab_size: usize, path: &Path) -> Result<TiktokenTokenizer, BpeError>
where
    I: Iterator<Item = String> + Send,
{
    if vocab_size < MIN_VOCAB {
        return Err(BpeError::VocabTooSmall(vocab_size));
    }
    if u32::try_from(vocab_size).is_err() {
        return Err(BpeError::VocabTooLarge(vocab_size));
    }
    let split = Split::new(
        SplitPattern::Regex(GPT4_PATTERN.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| BpeError::Train(format!("the pre-split pattern: {e}")))?;
    let mut hf: HfBpe = TokenizerImpl::new(BPE::default());
    hf.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
    ]))));
    hf.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size - 1) // the last id is BOS
        .min_frequency(0)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    hf.train(&mut trainer, texts)
        .map_err(|e| BpeError::Train(e.to_string()))?;
    hf.add_special_tokens([AddedToken::from(BOS_TOKEN, true)])
        .map_err(|e| BpeError::Train(e.to_string()))?;
    let pieces = pieces_of(&hf.get_model().get_vocab(), path)?;
    let tokenizer = TiktokenTokenizer::from_pieces(pieces, GPT4_PATTERN)?;
    write_atomically(&hf, path)?;
    Ok(tokenizer)
}

/// Loads a tokenizer written by [`train`].
pub fn load(path: &Path) -> Result<TiktokenTokenizer, BpeError> {
    let text = std::fs::read_to_string(path).map_err(|e| BpeError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let corrupt = |reason: String| BpeError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    let vocab: HashMap<String, u32> = serde_json::from_value(json["model"]["vocab"].clone())
        .map_err(|e| corrupt(format!("`model.vocab`: {e}")))?;
    Ok(TiktokenTokenizer::from_pieces(
        pieces_of(&vocab, path)?,
        GPT4_PATTERN,
    )?)
}

/// Token bytes indexed by id, from the byte-level vocabulary (each char stands for one byte).
fn pieces_of(vocab: &HashMap<String, u32>, path: &Path) -> Result<Vec<Vec<u8>>, BpeError> {
    let char_to_byte: HashMap<char, u8> = byte_to_char()
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect();
    let mut pieces = vec![None; vocab.len()];
    for (token, &id) in vocab {
        let bytes = token
            .chars()
            .map(|c| char_to_byte.get(&c).copied())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| BpeError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("token {token:?} is not byte-level"),
            })?;
        match pieces.get_mut(id as usize) {
            Some(slot @ None) => *slot = Some(bytes),
            _ => {
                return Err(BpeError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!("token ids are not 0..{} without gaps", vocab.len()),
                })
            }
        }
    }
    Ok(pieces.into_iter().flatten().collect())
}

/// GPT-2's byte-to-printable-char table, which the byte-level pre-tokenizer uses.
fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("valid code point")
        };
    }
    table
}

fn write_atomically(hf: &HfBpe, path: &Path) -> Result<(), BpeError> {
    let file_error = |reason: String| BpeError::File {
        path: path.to_path_buf(),
        reason,
    };
    let json = hf.to_string(true).map_err(|e| file_error(e.to_string()))?;
    crate::shards::write_file_atomically(path, json.as_bytes())
        .map_err(|e| file_error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_table_is_a_bijection_onto_printable_chars() {
        let table = byte_to_char();
        let distinct: std::collections::HashSet<_> = table.iter().collect();
        assert_eq!(distinct.len(), 256);
        assert!(table.iter().all(|c| !c.is_whitespace() && !c.is_control()));
        assert_eq!(table[b' ' as usize], 'Ġ');
        let hf: std::collections::HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        assert_eq!(hf, table.iter().copied().collect());
    }
}
