"""
The fixed harness: data, tokenizer, dataloader and the metric.

One-time preparation (pick a profile and a data source; the result is frozen in a cache folder):

    uv run prepare.py --source python --profile tiny       # offline: this machine's Python source
    uv run prepare.py --source climbmix --profile h100     # the web-text shards over HTTP
    uv run prepare.py --source files --path ~/corpus       # your own .txt/.md/.jsonl/.parquet files

At run time train.py imports from here:

    from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, make_dataloader, evaluate_bpb

The constants come from the active cache (AUTORESEARCH_CACHE, default ~/.cache/autoresearch), whose
manifest.json records the profile, the constants, the source and the hashes of everything made. The
parts behind this file are in harness/ (its __init__ lists them); the preparation is harness/build.py.
DO NOT CHANGE this file or harness/ during experiments: they are the fixed metric, checked by hash.
"""

import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.machine import best_device
from harness.manifest import CONSTANTS, PROFILES, CacheError, cache_dir, load_manifest  # noqa: F401
from harness.packing import Packer, load_split, validation_packer
from harness.tokenizer import Tokenizer, token_bytes


# The constants that train.py imports are read from the active manifest on first use, so that
# `import prepare` works before anything is prepared and tests can point AUTORESEARCH_CACHE elsewhere.
def __getattr__(name):
    if name in (*CONSTANTS, "PROFILE"):
        try:
            manifest = load_manifest()
        except CacheError:
            sys.excepthook = one_line_errors  # should nothing catch it (train.py's import): one line
            raise
        values = dict(manifest["constants"], PROFILE=manifest["profile"])
        globals().update({k: values[k] for k in (*CONSTANTS, "PROFILE")})
        return values[name]
    raise AttributeError(f"module 'prepare' has no attribute {name!r}")


def one_line_errors(exc_type, exc, tb, _previous=sys.excepthook):
    """A missing or broken cache is a usage error, not a crash: what to run, in one line."""
    if issubclass(exc_type, CacheError):
        print(f"error: {exc}", file=sys.stderr)
    else:
        _previous(exc_type, exc, tb)


def get_token_bytes(device="cpu"):
    """UTF-8 byte length of every token id (0 for special tokens), as a tensor; no pickle involved."""
    return torch.from_numpy(token_bytes().astype(np.int64)).to(device)


def to_device(cpu, device):
    """A host tensor onto the device. On CUDA through pinned memory and without blocking: a plain
    copy would first wait for all queued GPU work, leaving the GPU idle while the next is launched."""
    if device.type != "cuda":
        return cpu.to(device)
    return cpu.pin_memory().to(device, non_blocking=True)


def make_dataloader(tokenizer, B, T, split, buffer_size=1000, device=None, seed=0):
    """Endless batches (inputs, targets, epoch): B rows of T tokens, each row starting with BOS.

    Training documents are shuffled per epoch (by seed and epoch); validation documents keep their
    pinned order. Under the lab the seed is the lab's (AUTORESEARCH_SEED), whatever `seed` says: the
    lab runs each experiment at its own seed schedule, and a train.py cannot pick a lucky data order.
    Batches land on `device` (default: the best available), pinned first on CUDA."""
    device = torch.device(device) if device is not None else best_device()
    if os.environ.get("AUTORESEARCH_SEED"):
        seed = int(os.environ["AUTORESEARCH_SEED"])
    tokens, offsets = load_split(split)
    n_docs = len(offsets) - 1
    if split == "train":
        def order_fn(epoch):
            return np.random.default_rng([seed, epoch]).permutation(n_docs)
    else:
        def order_fn(epoch):
            return np.arange(n_docs)
    buffer_size = max(1, min(buffer_size, n_docs // 4))  # a small corpus: keep epochs apart
    packer = Packer(tokens, offsets, tokenizer.get_bos_token_id(), order_fn, buffer_size)
    while True:
        batch = np.empty((B, T + 1), dtype=np.int64)
        epoch = min(packer.fill(row) for row in batch)
        gpu = to_device(torch.from_numpy(batch), device)
        yield gpu[:, :-1].contiguous(), gpu[:, 1:].contiguous(), epoch


# ---------------------------------------------------------------------------
# Evaluation (DO NOT CHANGE — this is the fixed metric)
# ---------------------------------------------------------------------------

_VAL_ROWS = {}


def validation_rows(tokenizer, directory=None):
    """The fixed evaluation set: EVAL_TOKENS // MAX_SEQ_LEN rows of MAX_SEQ_LEN + 1 tokens, packed
    from the validation documents in their pinned order. Identical whatever batch size is used."""
    directory = cache_dir(directory)
    manifest = load_manifest(directory)
    T, eval_tokens = manifest["constants"]["MAX_SEQ_LEN"], manifest["constants"]["EVAL_TOKENS"]
    key = (str(directory), manifest["data_hash"])
    if key not in _VAL_ROWS:
        tokens, offsets = load_split("val", directory)
        n_rows = eval_tokens // T
        packer = validation_packer(tokens, offsets, tokenizer.get_bos_token_id())
        rows = np.empty((n_rows, T + 1), dtype=np.int64)
        try:
            for row in rows:
                packer.fill(row)
        except EOFError:
            raise CacheError(f"the validation split is too small for EVAL_TOKENS={eval_tokens:,}: prepare "
                             f"again with a smaller --eval-tokens or a bigger corpus") from None
        _VAL_ROWS[key] = torch.from_numpy(rows)
    return _VAL_ROWS[key]


def score_rows(logits_of, rows, token_bytes, batch_size, device):
    """(nats, bytes, uniform nats) over the evaluation rows: logits_of(x) gives the logits for a batch
    of inputs, the loss of each target token is computed here from them (the model never sees the
    targets), and special tokens (0 bytes) count in neither sum. "uniform nats" is what a model that
    knows nothing (uniform over the vocabulary) would score, an upper bound for any real model."""
    total_nats = torch.zeros((), dtype=torch.float64, device=device)
    total_bytes = torch.zeros((), dtype=torch.int64, device=device)
    counted = torch.zeros((), dtype=torch.int64, device=device)
    vocab = len(token_bytes)
    for i in range(0, len(rows), batch_size):
        batch = to_device(rows[i:i + batch_size], device)
        x, y = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
        logits = logits_of(x)
        if tuple(logits.shape) != (*x.shape, vocab):
            raise ValueError(f"the model returned logits of shape {tuple(logits.shape)} for inputs of shape "
                             f"{tuple(x.shape)}: expected {(*x.shape, vocab)} (batch, sequence, vocabulary)")
        loss = F.cross_entropy(logits.reshape(-1, vocab).float(), y.reshape(-1), reduction="none").double()
        nbytes = token_bytes[y.reshape(-1)]
        total_nats += (loss * (nbytes > 0)).sum()
        total_bytes += nbytes.sum()
        counted += (nbytes > 0).sum()
    return total_nats.item(), int(total_bytes.item()), int(counted.item()) * math.log(vocab)


@torch.no_grad()
def evaluate_bpb(model, tokenizer, batch_size):
    """Bits per byte on the fixed validation rows: the sum of the model's loss in nats over target
    tokens, divided by ln(2) times the sum of their UTF-8 bytes. Special tokens (0 bytes) are
    excluded from both sums. The model is called as model(idx) and must return logits of shape
    (batch, sequence, vocabulary); the loss is computed here.

    Under the lab (AUTORESEARCH_HANDOFF names the run's hand-off file) nothing is evaluated in this
    process: the model is written there as a torch.export program (see hand_off), the lab's evaluator
    computes val_bpb from it outside the experiment, and nan is returned."""
    if os.environ.get("AUTORESEARCH_HANDOFF"):
        hand_off(model, batch_size, Path(os.environ["AUTORESEARCH_HANDOFF"]))
        print("# the model is handed off: the lab's evaluator computes val_bpb outside this run (nan here, its "
              "value ends this log)", flush=True)
        return math.nan
    device = next(model.parameters()).device
    nats, nbytes, _ = score_rows(model, validation_rows(tokenizer), get_token_bytes(device), batch_size, device)
    return nats / (math.log(2) * nbytes)


def hand_off(model, batch_size, path):
    """Write model(idx) -> logits as a torch.export program (graph and weights, no Python code) for
    inputs of the evaluation shape: min(batch_size, rows) x MAX_SEQ_LEN tokens. A model that cannot be
    exported ends the run with the export error's first line."""
    import torch.export
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper: the module it compiles
    device = next(model.parameters()).device
    constants = load_manifest()["constants"]
    T = constants["MAX_SEQ_LEN"]
    example = torch.zeros((max(1, min(batch_size, constants["EVAL_TOKENS"] // T)), T), dtype=torch.long, device=device)
    try:
        program = torch.export.export(model, (example,), strict=False).run_decompositions()
    except Exception as e:
        lines = str(e).strip().splitlines()
        raise SystemExit(f"FAIL: the model cannot be exported for the lab's evaluator ({type(e).__name__}: "
                         f"{lines[0][:200] if lines else ''}); see program.md on what forward may do") from None
    partial = path.with_name("partial-" + path.name)
    torch.export.save(program, partial)
    os.replace(partial, path)  # whole or not at all


if __name__ == "__main__":
    from harness.build import main
    sys.exit(main())
