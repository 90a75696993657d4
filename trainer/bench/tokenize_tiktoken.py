"""Python tiktoken's throughput on the same corpus and tokenizers as benches/tokenize.rs.

Usage: python tokenize_tiktoken.py CORPUS_DIR TOKENIZER_JSON R50K_FILE THREADS
The trained BPE is loaded from its Hugging Face tokenizer.json into a tiktoken Encoding with
the same ranks (rank = token id) and the same GPT-4 pre-split pattern as the Rust side. GPT-2
is tiktoken's own `gpt2` encoding built from a local copy of its rank file (the one tiktoken-rs
embeds), since tiktoken would otherwise download it and this machine has no such network.
"""
import json
import sys
import time
from pathlib import Path

import tiktoken
import tiktoken.load

ROUNDS = 3
# Keep in sync with trainer/src/tokenizer/bpe.rs GPT4_PATTERN.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT4_PATTERN = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"


def byte_to_char():
    table, extra = {}, 0
    for b in range(256):
        if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF:
            table[b] = chr(b)
        else:
            extra += 1
            table[b] = chr(255 + extra)
    return table


def trained_encoding(path):
    vocab = json.loads(Path(path).read_text())["model"]["vocab"]
    char_to_byte = {c: b for b, c in byte_to_char().items()}
    ranks = {bytes(char_to_byte[c] for c in token): rank for token, rank in vocab.items()}
    return tiktoken.Encoding(
        "trained", pat_str=GPT4_PATTERN, mergeable_ranks=ranks, special_tokens={"<|bos|>": len(ranks)}
    ), len(ranks) + 1


def gpt2_encoding(r50k_file):
    ranks = tiktoken.load.load_tiktoken_bpe(r50k_file)
    return tiktoken.Encoding(
        "gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256}
    )


def measure(enc, docs, threads, nbytes):
    best, tokens = float("inf"), 0
    for _ in range(ROUNDS):
        started = time.perf_counter()
        out = enc.encode_ordinary_batch(docs, num_threads=threads)
        best = min(best, time.perf_counter() - started)
        tokens = sum(map(len, out))
    return nbytes / 1e6 / best, tokens


def main():
    corpus, tokenizer_json, r50k_file, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    docs = [p.read_text(encoding="utf-8") for p in sorted(Path(corpus).glob("*.txt"))]
    nbytes = sum(len(d.encode()) for d in docs)
    trained, vocab = trained_encoding(tokenizer_json)
    bpe_mb_s, bpe_tokens = measure(trained, docs, threads, nbytes)
    gpt2_mb_s, gpt2_tokens = measure(gpt2_encoding(r50k_file), docs, threads, nbytes)
    print(json.dumps({
        "impl": "python-tiktoken " + getattr(tiktoken, "__version__", "?"),
        "threads": threads, "documents": len(docs), "mb": nbytes / 1e6, "bpe_vocab": vocab,
        "bpe_mb_s": bpe_mb_s, "bpe_tokens": bpe_tokens, "gpt2_mb_s": gpt2_mb_s, "gpt2_tokens": gpt2_tokens,
    }))


if __name__ == "__main__":
    main()
