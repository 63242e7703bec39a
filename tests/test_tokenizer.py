"""Tokenizer round trip, and a cache that loads without executing code.
Run: uv run pytest tests/test_tokenizer.py"""
import pickle

import numpy as np

import prepare


def test_round_trip_and_bos(use_cache):
    tok = prepare.Tokenizer.from_directory()
    assert tok.get_vocab_size() == 4096
    for text in ["def f(x):\n    return x ** 2  # ünïcödé ✓\n", "", "    \t\n\n", "数学 🙂 " * 10]:
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode(["a = 1", "b = 2"], prepend=tok.get_bos_token_id())
    assert all(row[0] == tok.get_bos_token_id() for row in ids)
    assert tok.encode("<|bos|>") != [tok.get_bos_token_id()]  # text never turns into a special token


def test_token_bytes_match_the_vocabulary(use_cache):
    tok = prepare.Tokenizer.from_directory()
    token_bytes = prepare.get_token_bytes().numpy()
    assert token_bytes[tok.get_bos_token_id()] == 0
    for i in [0, 100, 255, 256, 1000, 4000]:
        assert token_bytes[i] == len(tok.enc.decode_single_token_bytes(i))


def test_no_pickle_anywhere_in_the_cache(use_cache, monkeypatch):
    for path in use_cache.rglob("*"):
        if path.is_file():
            head = path.read_bytes()[:2]
            assert not (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"), f"{path} looks like a pickle"
            assert path.suffix not in (".pkl", ".pickle", ".pt", ".pth")
            if path.suffix == ".npy":
                np.load(path, allow_pickle=False)

    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    prepare.Tokenizer.from_directory()
    prepare.get_token_bytes()
    prepare.load_split("train")
