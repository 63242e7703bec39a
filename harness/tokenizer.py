"""The tokenizer: BPE trained with rustbpe, used through tiktoken, stored as plain files (base64 ranks
and json) so that loading it runs no code."""
import json
from pathlib import Path

import numpy as np
import tiktoken

from harness.manifest import cache_dir, load_manifest

SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
SPECIAL_TOKENS = ["<|bos|>", "<|reserved_1|>", "<|reserved_2|>", "<|reserved_3|>"]
BOS_TOKEN = SPECIAL_TOKENS[0]


class Tokenizer:
    """A tiktoken encoding loaded from plain files (base64 ranks + json): loading runs no code."""

    def __init__(self, enc):
        self.enc = enc
        self.bos_token_id = enc.encode_single_token(BOS_TOKEN)

    @classmethod
    def from_directory(cls, tokenizer_dir=None):
        import base64
        directory = Path(tokenizer_dir) if tokenizer_dir else cache_dir() / "tokenizer"
        if tokenizer_dir is None:
            load_manifest()  # a clear message when nothing is prepared
        meta = json.loads((directory / "tokenizer.json").read_text())
        ranks = {}
        for line in (directory / "ranks.txt").read_text().splitlines():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        enc = tiktoken.Encoding(name="autoresearch", pat_str=meta["pattern"], mergeable_ranks=ranks,
                                special_tokens=meta["special_tokens"])
        return cls(enc)

    def get_vocab_size(self):
        return self.enc.n_vocab

    def get_bos_token_id(self):
        return self.bos_token_id

    def encode(self, text, prepend=None, num_threads=8):
        prefix = [] if prepend is None else [prepend if isinstance(prepend, int) else self.enc.encode_single_token(prepend)]
        if isinstance(text, str):
            return prefix + self.enc.encode_ordinary(text)
        return [prefix + ids for ids in self.enc.encode_ordinary_batch(text, num_threads=num_threads)]

    def decode(self, ids):
        return self.enc.decode(list(ids))


def train_tokenizer(texts, vocab_size, directory):
    """Train BPE on an iterator of texts and write tokenizer.json, ranks.txt and token_bytes.npy."""
    import base64
    import rustbpe
    n_special = len(SPECIAL_TOKENS)
    assert vocab_size > 256 + n_special, "vocab_size must leave room for the 256 byte tokens"
    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(texts, vocab_size - n_special, pattern=SPLIT_PATTERN)
    ranks = {bytes(token): rank for token, rank in bpe.get_mergeable_ranks()}
    special = {name: len(ranks) + i for i, name in enumerate(SPECIAL_TOKENS)}
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"{base64.b64encode(token).decode()} {rank}" for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])]
    (directory / "ranks.txt").write_text("\n".join(lines) + "\n")
    (directory / "tokenizer.json").write_text(json.dumps(
        {"pattern": bpe.get_pattern(), "special_tokens": special, "bos": BOS_TOKEN}, indent=1))
    token_bytes = np.zeros(len(ranks) + n_special, dtype=np.int32)  # special tokens count 0 bytes
    for token, rank in ranks.items():
        token_bytes[rank] = len(token)
    np.save(directory / "token_bytes.npy", token_bytes)


def token_bytes(directory=None):
    """UTF-8 byte length of every token id (0 for special tokens), as numpy; no pickle involved."""
    return np.load(cache_dir(directory) / "tokenizer" / "token_bytes.npy", allow_pickle=False)
