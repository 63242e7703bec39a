"""A look inside a prepared cache, for the prepare notebook: per-split sizes, document lengths,
decoded packed rows with document starts marked, and tokenizer checks."""
from __future__ import annotations

import html
import io
import re
import time

import altair as alt
import numpy as np
import polars as pl

from harness.packing import load_split
from harness.tokenizer import token_bytes as read_token_bytes

BOS_MARK = "⟨BOS⟩"
LINE_EVERY = 0.25  # seconds between two latest lines shown (tqdm redraws its bar ten times a second)
SAMPLE_TOKENS = 2_000_000  # bytes per token is measured on at most this many tokens per split


def split_stats(directory, manifest) -> pl.DataFrame:
    """Documents, tokens and UTF-8 bytes per token (over up to SAMPLE_TOKENS tokens) of each split."""
    token_bytes = read_token_bytes(directory)
    rows = []
    for split in ("train", "val"):
        tokens, offsets = load_split(split, directory)
        sample = np.asarray(tokens[:SAMPLE_TOKENS]).astype(np.int64)
        nbytes = token_bytes[sample]
        text_tokens = int((nbytes > 0).sum())  # special tokens (BOS) have no bytes
        lengths = np.diff(offsets)
        rows.append(dict(split=split, documents=len(offsets) - 1, tokens=int(offsets[-1]),
                         mean_doc_tokens=float(lengths.mean()) if len(lengths) else 0.0,
                         bytes_per_token=float(nbytes.sum() / max(text_tokens, 1))))
    return pl.DataFrame(rows)


def length_histogram(directory, max_seq_len: int, bins: int = 40):
    """Document lengths in tokens (log-spaced bins, stacked by split), the sequence length marked."""
    lengths = {s: np.diff(load_split(s, directory)[1]) for s in ("train", "val")}
    top = max(int(max(v.max() for v in lengths.values() if len(v))), 2)
    edges = np.unique(np.geomspace(1, top + 1, bins + 1).round().astype(np.int64))
    counts = {split: np.histogram(values, bins=edges)[0] for split, values in lengths.items()}
    below = np.zeros(len(edges) - 1, dtype=np.int64)
    frames = []
    for split in ("train", "val"):  # stacked: val on top of train
        frames.append(pl.DataFrame(dict(split=split, start=edges[:-1], end=edges[1:], documents=counts[split],
                                        bottom=below, top=below + counts[split])))
        below = below + counts[split]
    data = pl.concat(frames).filter(pl.col("documents") > 0)
    x = alt.X("start:Q", title="document length (tokens, BOS included)", scale=alt.Scale(type="log"))
    bars = alt.Chart(data).mark_rect(opacity=0.85, stroke="white", strokeWidth=0.5).encode(
        x=x, x2="end:Q", y=alt.Y("bottom:Q", title="documents"), y2="top:Q",
        color=alt.Color("split:N", scale=alt.Scale(domain=["train", "val"], range=["#2e86ab", "#e4572e"])),
        tooltip=["split:N", alt.Tooltip("start:Q", title="from"), alt.Tooltip("end:Q", title="below"),
                 "documents:Q"])
    rule = alt.Chart(pl.DataFrame(dict(start=[max_seq_len], label=[f"MAX_SEQ_LEN {max_seq_len}"]))).mark_rule(
        strokeDash=[4, 4], color="#555").encode(x="start:Q", tooltip=["label:N"])
    return (bars + rule).properties(width=640, height=260, title="document lengths")


def decoded_rows(tokenizer, rows) -> str:
    """HTML of packed rows, decoded, with each BOS (a document's start) shown as a marker."""
    bos = tokenizer.get_bos_token_id()
    mark = f'<span style="background:#ffe08a;color:#7a4b00;border-radius:3px;padding:0 2px">{BOS_MARK}</span>'
    parts = []
    for i, row in enumerate(rows):
        row = [int(t) for t in row]
        pieces, current = [], []
        for t in row:
            if t == bos:
                pieces.append(html.escape(tokenizer.decode(current)))
                pieces.append(mark)
                current = []
            else:
                current.append(t)
        pieces.append(html.escape(tokenizer.decode(current)))
        docs = sum(1 for t in row if t == bos)
        parts.append(f"<p><b>row {i}</b>: {len(row)} tokens, {docs} document start{'' if docs == 1 else 's'}</p>"
                     f'<pre style="white-space:pre-wrap;max-height:22em;overflow:auto;border:1px solid #ddd;'
                     f'padding:.5em;font-size:12px">{"".join(pieces)}</pre>')
    return "".join(parts)


def tokenizer_checks(tokenizer, directory, manifest) -> pl.DataFrame:
    """Round trips and sizes that must hold for the cache to be usable."""
    sample = "def add(a, b):\n    return a + b  # héllo wörld, ünïcode ✓ 🙂\n\n\tTabs and   spaces.\n"
    ids = tokenizer.encode(sample)
    tokens, offsets = load_split("val", directory)
    lengths = np.diff(offsets[:1001])
    short = np.flatnonzero(lengths <= 4000)  # a whole document (a cut one could end inside a merge)
    i = int(short[0]) if len(short) else 0
    doc = [int(t) for t in tokens[int(offsets[i]) + 1:min(int(offsets[i + 1]), int(offsets[i]) + 4001)]]
    doc_text = tokenizer.decode(doc)
    vocab = tokenizer.get_vocab_size()
    token_bytes = read_token_bytes(directory)
    checks = [
        ("vocab size matches the profile", f"{vocab:,} vs VOCAB_SIZE {manifest['constants']['VOCAB_SIZE']:,}",
         vocab == manifest["constants"]["VOCAB_SIZE"]),
        ("token_bytes.npy covers the vocabulary", f"{len(token_bytes):,} entries", len(token_bytes) == vocab),
        ("BOS is a special token", f"id {tokenizer.get_bos_token_id()}, 0 bytes",
         token_bytes[tokenizer.get_bos_token_id()] == 0),
        ("decode(encode(text)) == text", f"{len(sample)} characters -> {len(ids)} tokens",
         tokenizer.decode(ids) == sample),
        (f"validation document {i} re-encodes to the same ids", f"{len(doc):,} tokens, {len(doc_text):,} characters",
         tokenizer.encode(doc_text) == doc),
    ]
    return pl.DataFrame([dict(check=c, detail=d, ok="✓" if ok else "✗") for c, d, ok in checks])


class ConsoleLines(io.TextIOBase):
    """A console stream (stdout and stderr together) kept whole, its latest line handed to `on_line`
    as it is written, at most every LINE_EVERY seconds: a bar tqdm redraws with carriage returns is
    a line each time. What prepare is doing, under the notebook's progress bar."""

    def __init__(self, on_line):
        super().__init__()
        self.whole, self.pending, self.on_line, self.shown = io.StringIO(), "", on_line, 0.0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.whole.write(text)
        *done, self.pending = re.split(r"[\r\n]", self.pending + text)
        latest = next((line for line in reversed([*done, self.pending]) if line.strip()), None)
        if latest is not None and time.monotonic() - self.shown >= LINE_EVERY:
            self.shown = time.monotonic()
            self.on_line(latest.strip())
        return len(text)

    def getvalue(self) -> str:
        return self.whole.getvalue()


def prepare_with_progress(title: str, **options) -> tuple[str | None, str]:
    """harness.build.prepare(**options) run in a marimo cell under a progress bar through its PHASES,
    the latest console line under it. Returns (None, or the error as one line; the console text):
    an error is shown by the notebook, never raised."""
    import contextlib
    import marimo as mo
    from harness import build
    with mo.status.progress_bar(total=len(build.PHASES), title=title, subtitle="checking the cache folder",
                                show_rate=False, remove_on_exit=True) as bar:
        begun = []

        def on_phase(name):  # each phase is named as it begins; the bar counts those finished
            bar.update(increment=1 if begun else 0, title=f"{len(begun) + 1} of {len(build.PHASES)}: {name}")
            begun.append(name)

        console = ConsoleLines(lambda line: bar.update(increment=0, subtitle=line[:160]))
        with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
            try:
                build.prepare(**options, on_phase=on_phase)
                error = None
            except Exception as e:  # a CacheError and what the build raises
                error = f"{type(e).__name__}: {e}"
    return error, console.getvalue()
