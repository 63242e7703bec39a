"""Dataloader invariants: BOS first, no padding, no dropped tokens, validation never trained on,
deterministic.  Run: uv run pytest tests/test_dataloader.py"""
import hashlib

import numpy as np
import torch

import prepare
from harness.packing import Packer


def docs_of(split):
    tokens, offsets = prepare.load_split(split)
    return [np.asarray(tokens[offsets[i]:offsets[i + 1]]) for i in range(len(offsets) - 1)]


def segments(row, bos):
    """Split a row at BOS tokens: the pieces it was packed from."""
    cuts = [0] + [i for i in range(1, len(row)) if row[i] == bos] + [len(row)]
    return [row[a:b] for a, b in zip(cuts, cuts[1:])]


def test_rows_start_with_bos_and_are_made_only_of_document_pieces(use_cache):
    tok = prepare.Tokenizer.from_directory()
    bos = tok.get_bos_token_id()
    train_docs = {hashlib.sha1(d[1:].tobytes()).hexdigest(): d for d in docs_of("train")}
    texts = [d[1:].tobytes() for d in train_docs.values()]
    joined = b"|".join(texts)
    loader = prepare.make_dataloader(tok, 8, 256, "train", device="cpu")
    for _ in range(5):
        x, y, epoch = next(loader)
        assert x.shape == y.shape == (8, 256) and x.dtype == y.dtype == torch.int64 and x.device.type == "cpu"
        assert torch.equal(x[:, 1:], y[:, :-1])
        assert (x[:, 0] == bos).all()
        assert ((x >= 0) & (x < tok.get_vocab_size())).all()  # no padding or ignore-index
        full = torch.cat([x, y[:, -1:]], dim=1).numpy()
        for row in full:
            for piece in segments(row, bos):
                assert piece[0] == bos
                assert piece[1:].astype(np.uint16).tobytes() in joined  # a contiguous slice of one training document


def test_packing_uses_every_token_exactly_once():
    """Cropped documents keep their tails (behind a new BOS) for later rows: nothing is dropped or
    repeated, and every piece is a contiguous run of one document."""
    rng = np.random.default_rng(0)
    bos, lengths = 0, rng.integers(1, 120, size=400)
    docs, next_id = [], 1
    for n in lengths:  # every token id is unique, and ascending within a document
        docs.append(np.concatenate([[bos], np.arange(next_id, next_id + n)]))
        next_id += n
    tokens = np.concatenate(docs)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    packer = Packer(tokens, offsets, bos, lambda epoch: np.arange(len(docs)), buffer_size=30, wrap=False)
    rows = []
    while True:
        row = np.full(65, -1)
        try:
            packer.fill(row)
        except EOFError:
            rows.append(row[row >= 0])
            break
        assert row[0] == bos and (row >= 0).all()
        rows.append(row)
    emitted = np.concatenate(rows)
    content = np.sort(emitted[emitted != bos])
    assert np.array_equal(content, np.arange(1, next_id))  # each token exactly once
    for row in rows:
        for piece in segments(row, bos):
            assert piece[0] == bos and (np.diff(piece[1:]) == 1).all()


def test_validation_is_never_in_training(use_cache):
    train = {hashlib.sha1(d[1:].tobytes()).hexdigest() for d in docs_of("train")}
    val = {hashlib.sha1(d[1:].tobytes()).hexdigest() for d in docs_of("val")}
    assert val and not (train & val)
    tok = prepare.Tokenizer.from_directory()
    rows = prepare.validation_rows(tok)
    bos = tok.get_bos_token_id()
    val_bytes = b"|".join(d[1:].tobytes() for d in docs_of("val"))
    for row in rows[:20].numpy():
        for piece in segments(row, bos):
            assert piece[1:].astype(np.uint16).tobytes() in val_bytes


def test_deterministic_for_a_seed_and_shuffled_across_seeds(use_cache):
    tok = prepare.Tokenizer.from_directory()
    a = [next(prepare.make_dataloader(tok, 4, 256, "train", device="cpu", seed=1))[0] for _ in range(2)]
    b = prepare.make_dataloader(tok, 4, 256, "train", device="cpu", seed=2)
    assert torch.equal(a[0], a[1])
    assert not torch.equal(a[0], next(b)[0])


def test_epochs_advance_and_validation_order_is_pinned(use_cache):
    tok = prepare.Tokenizer.from_directory()
    val_tokens = prepare.load_split("val")[0]
    steps_per_epoch = len(val_tokens) // (32 * 257) + 2
    loader = prepare.make_dataloader(tok, 32, 256, "val", device="cpu")
    epochs = [next(loader)[2] for _ in range(steps_per_epoch + 2)]
    assert epochs[0] == 0 and epochs[-1] >= 1 and epochs == sorted(epochs)
    first = next(prepare.make_dataloader(tok, 4, 256, "val", device="cpu"))[0]
    again = next(prepare.make_dataloader(tok, 4, 256, "val", device="cpu", seed=99))[0]
    assert torch.equal(first, again)


def test_under_the_lab_the_training_order_follows_the_labs_seed_whatever_train_py_passes(use_cache, monkeypatch):
    """A train.py cannot pick a lucky data order: with AUTORESEARCH_SEED set, its own seed= is ignored."""
    tok = prepare.Tokenizer.from_directory()
    monkeypatch.delenv("AUTORESEARCH_SEED", raising=False)
    first = {s: next(prepare.make_dataloader(tok, 4, 64, "train", device="cpu", seed=s))[0] for s in (5, 123)}
    assert not torch.equal(first[5], first[123])
    monkeypatch.setenv("AUTORESEARCH_SEED", "5")
    chosen = next(prepare.make_dataloader(tok, 4, 64, "train", device="cpu", seed=123))[0]
    assert torch.equal(chosen, first[5])
