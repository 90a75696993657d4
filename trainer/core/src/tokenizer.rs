//! Tokenizers. Frozen: the evaluation counts bytes through `bytes_of`, so a tokenizer the agent
//! could edit would let it change the metric's denominator.
//!
//! Three kinds sit behind [`Tokenizer`]: [`ByteTokenizer`] (the default), a BPE trained on the
//! training split ([`bpe`]) and GPT-2's BPE ([`tiktoken::TiktokenTokenizer::gpt2`]). [`spec`]
//! names them, saves them beside prepared shards and loads them back.

pub mod bpe;
pub mod spec;
pub mod tiktoken;

/// What the data loader and the evaluation need from a tokenizer. A trained BPE tokenizer
/// plugs in here later.
pub trait Tokenizer: Send + Sync {
    /// Tokens of one document's raw bytes (no special tokens added).
    fn encode(&self, text: &[u8]) -> Vec<u32>;
    /// The bytes the tokens stand for; special tokens contribute nothing.
    fn decode(&self, tokens: &[u32]) -> Vec<u8>;
    /// How many bytes of text one token stands for (0 for special tokens).
    fn bytes_of(&self, token: u32) -> u64;
    fn is_special(&self, token: u32) -> bool;
    /// Number of distinct token ids, special tokens included.
    fn vocab_size(&self) -> usize;
    /// The beginning-of-document token, put before every document.
    fn bos(&self) -> u32;
}

/// One token per byte (ids 0..=255) and one special BOS token (id 256).
#[derive(Debug, Clone, Copy, Default)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    pub const BOS: u32 = 256;
}

impl Tokenizer for ByteTokenizer {
    fn encode(&self, text: &[u8]) -> Vec<u32> {
        text.iter().map(|&b| u32::from(b)).collect()
    }

    fn decode(&self, tokens: &[u32]) -> Vec<u8> {
        tokens
            .iter()
            .filter(|&&t| t < 256)
            .map(|&t| t as u8)
            .collect()
    }

    fn bytes_of(&self, token: u32) -> u64 {
        u64::from(token < 256)
    }

    fn is_special(&self, token: u32) -> bool {
        token >= 256
    }

    fn vocab_size(&self) -> usize {
        257
    }

    fn bos(&self) -> u32 {
        Self::BOS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokenizer_round_trips_and_marks_only_bos_special() {
        let tok = ByteTokenizer;
        let text = "To be, or not to be — that is the question".as_bytes();
        let mut tokens = vec![tok.bos()];
        tokens.extend(tok.encode(text));
        assert_eq!(tok.decode(&tokens), text);
        assert!(tok.is_special(tok.bos()));
        assert_eq!(tok.bytes_of(tok.bos()), 0);
        assert!((0..256).all(|t| !tok.is_special(t) && tok.bytes_of(t) == 1));
        assert_eq!(tok.vocab_size(), 257);
    }
}
