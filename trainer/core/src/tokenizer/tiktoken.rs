//! Byte-pair encoding run by tiktoken-rs's `CoreBPE`: GPT-2's vocabulary (embedded in the
//! crate) and, with its trained ranks, the BPE of [`super::bpe`]. One encoder for both keeps the
//! throughput of the two on par with Python's `tiktoken`.

use super::Tokenizer;
use tiktoken_rs::CoreBPE;

/// GPT-2's pre-split pattern, as tiktoken's `r50k_base` has it.
const GPT2_PATTERN: &str =
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s";
/// GPT-2's only special token, used as the beginning-of-document token.
const GPT2_ENDOFTEXT: u32 = 50_256;

#[derive(Debug, thiserror::Error)]
#[error("cannot build the BPE encoder: {0}")]
pub struct EncoderError(String);

/// A BPE tokenizer whose ordinary tokens are ids `0..n` (rank = id) and whose BOS is id `n`.
pub struct TiktokenTokenizer {
    bpe: CoreBPE,
    /// The bytes of every ordinary token, indexed by id.
    pieces: Vec<Vec<u8>>,
    bos: u32,
}

impl TiktokenTokenizer {
    /// GPT-2's BPE: 50 256 ordinary tokens, `<|endoftext|>` (50 256) as BOS.
    pub fn gpt2() -> Result<Self, EncoderError> {
        let bpe = tiktoken_rs::r50k_base().map_err(|e| EncoderError(e.to_string()))?;
        let pieces = (0..GPT2_ENDOFTEXT)
            .map(|id| {
                bpe.decode_bytes(&[id])
                    .map_err(|e| EncoderError(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_pieces(pieces, GPT2_PATTERN)
    }

    /// Builds the encoder from the bytes of each token (index = id = merge rank) and the
    /// pre-split pattern; BOS gets the next id.
    pub fn from_pieces(pieces: Vec<Vec<u8>>, pattern: &str) -> Result<Self, EncoderError> {
        let bos =
            u32::try_from(pieces.len()).map_err(|_| EncoderError("too many tokens".into()))?;
        let encoder = pieces
            .iter()
            .enumerate()
            .map(|(id, bytes)| (bytes.clone(), id as u32))
            .collect::<std::collections::HashMap<_, _, _>>();
        if encoder.len() != pieces.len() {
            return Err(EncoderError("two tokens have the same bytes".into()));
        }
        if let Some(byte) = (0..=255u8).find(|b| !encoder.contains_key(&vec![*b])) {
            return Err(EncoderError(format!(
                "byte {byte:#04x} has no token, so some text could not be encoded"
            )));
        }
        let bpe = CoreBPE::new(encoder, Default::default(), pattern)
            .map_err(|e| EncoderError(e.to_string()))?;
        Ok(Self { bpe, pieces, bos })
    }
}

impl Tokenizer for TiktokenTokenizer {
    fn encode(&self, text: &[u8]) -> Vec<u32> {
        // Callers pass UTF-8 (`prepare` rejects anything else); lossy keeps this total.
        match std::str::from_utf8(text) {
            Ok(s) => self.bpe.encode_ordinary(s),
            Err(_) => self.bpe.encode_ordinary(&String::from_utf8_lossy(text)),
        }
    }

    fn decode(&self, tokens: &[u32]) -> Vec<u8> {
        tokens
            .iter()
            .filter_map(|&t| self.pieces.get(t as usize))
            .flatten()
            .copied()
            .collect()
    }

    fn bytes_of(&self, token: u32) -> u64 {
        self.pieces
            .get(token as usize)
            .map_or(0, |p| p.len() as u64)
    }

    fn is_special(&self, token: u32) -> bool {
        token as usize >= self.pieces.len()
    }

    fn vocab_size(&self) -> usize {
        self.pieces.len() + 1
    }

    fn bos(&self) -> u32 {
        self.bos
    }
}
