"""evaluate_bpb, the fixed metric, against values computed by hand.
Run: uv run pytest tests/test_evaluate.py"""
import json
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import prepare
from harness import build


class Bigram(nn.Module):
    """A tiny model with the harness's call shape: model(idx) -> logits (and, with targets, the loss)."""

    def __init__(self, vocab, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.table = nn.Parameter(torch.randn(vocab, vocab) * 2)

    def forward(self, x, y=None, reduction="mean"):
        logits = self.table[x]
        if y is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1), reduction=reduction)


def hand_bpb(table, rows, token_bytes):
    """Bits per byte from first principles, in float64 numpy."""
    table = table.astype(np.float64)
    log_probs = table - np.log(np.exp(table - table.max(1, keepdims=True)).sum(1, keepdims=True)) - table.max(1, keepdims=True)
    x, y = rows[:, :-1].ravel(), rows[:, 1:].ravel()
    nbytes = token_bytes[y]
    nats = -(log_probs[x, y] * (nbytes > 0)).sum()
    return nats / (math.log(2) * nbytes.sum())


def test_uniform_model_gives_log_vocab_per_counted_token(use_cache):
    tok = prepare.Tokenizer.from_directory()
    V = tok.get_vocab_size()
    model = Bigram(V)
    with torch.no_grad():
        model.table.zero_()
    rows = prepare.validation_rows(tok).numpy()
    token_bytes = np.load(use_cache / "tokenizer" / "token_bytes.npy")
    targets = rows[:, 1:].ravel()
    counted = (token_bytes[targets] > 0).sum()
    expected = counted * math.log(V) / (math.log(2) * token_bytes[targets].sum())
    assert abs(prepare.evaluate_bpb(model, tok, 16) - expected) < 1e-6 * expected


def test_matches_a_hand_computation_whatever_the_batch_size(use_cache):
    tok = prepare.Tokenizer.from_directory()
    model = Bigram(tok.get_vocab_size(), seed=3)
    rows = prepare.validation_rows(tok).numpy()
    assert rows.shape == (prepare.EVAL_TOKENS // prepare.MAX_SEQ_LEN, prepare.MAX_SEQ_LEN + 1)
    expected = hand_bpb(model.table.detach().numpy(), rows, np.load(use_cache / "tokenizer" / "token_bytes.npy"))
    values = [prepare.evaluate_bpb(model, tok, b) for b in (1, 7, 64, 10_000)]
    for v in values:
        assert abs(v - expected) / expected < 1e-5
    assert max(values) - min(values) < 1e-6


def test_the_model_never_sees_the_targets(use_cache):
    """The harness computes the loss from the logits: a model that would read targets gets none."""
    tok = prepare.Tokenizer.from_directory()
    seen = []

    class Peeking(Bigram):
        def forward(self, x, y=None, reduction="mean"):
            seen.append(y)
            return super().forward(x, y, reduction)

    assert prepare.evaluate_bpb(Peeking(tok.get_vocab_size()), tok, 32) > 0
    assert seen and all(y is None for y in seen)


def test_special_tokens_are_left_out(tmp_path, monkeypatch):
    """Short documents put BOS among the targets: it must count neither nats nor bytes."""
    (tmp_path / "corpus").mkdir()
    lines = [json.dumps({"text": f"short record number {i} says {'hi ' * (i % 7)}"}) for i in range(10000)]
    (tmp_path / "corpus" / "records.jsonl").write_text("\n".join(lines))
    cache = tmp_path / "cache"
    assert build.main(["--source", "files", "--path", str(tmp_path / "corpus"), "--vocab-size", "400",
                         "--eval-tokens", "1024", "--cache", str(cache)]) == 0
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(cache))
    tok = prepare.Tokenizer.from_directory()
    model = Bigram(tok.get_vocab_size())
    with torch.no_grad():
        model.table.zero_()
    targets = prepare.validation_rows(tok)[:, 1:].numpy().ravel()
    token_bytes = np.load(cache / "tokenizer" / "token_bytes.npy")
    counted = (token_bytes[targets] > 0).sum()
    assert (targets == tok.get_bos_token_id()).sum() > 50 and counted < targets.size
    expected = counted * math.log(tok.get_vocab_size()) / (math.log(2) * token_bytes[targets].sum())
    assert abs(prepare.evaluate_bpb(model, tok, 3) - expected) < 1e-6 * expected
