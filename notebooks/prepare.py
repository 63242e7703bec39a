# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "autoresearch",
#     "marimo>=0.10",
#     "altair>=5.4",
#     "polars>=1.0",
# ]
#
# [tool.uv.sources]
# autoresearch = { path = "..", editable = true }
# ///
"""Prepare the data and look at what was made: documents, tokens, a packed batch, the tokenizer.

Open it from the repository root:  uv run marimo edit notebooks/prepare.py
Preparing runs prepare.py's own CLI (prepare.main) in the kernel; nothing runs until you press the
button. The cache shown is the folder in the "cache" box (default: AUTORESEARCH_CACHE).
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="autoresearch: prepare data")

with app.setup:
    import contextlib
    import importlib
    import io
    import html
    import os
    import sys
    from pathlib import Path

    import marimo as mo

    import altair as alt
    import numpy as np
    import polars as pl

    # the harness is the repository's prepare.py, which this notebook's own name would shadow:
    # put the checkout first on the path and import it as `harness`
    REPO = Path(__file__).resolve().parents[1]
    if sys.path[:1] != [str(REPO)]:
        sys.path.insert(0, str(REPO))
    harness = importlib.import_module("prepare")
    if Path(harness.__file__).resolve() != REPO / "prepare.py":
        raise ImportError(f"imported {harness.__file__} instead of {REPO / 'prepare.py'}")

    BOS_MARK = "⟨BOS⟩"
    SAMPLE_TOKENS = 2_000_000  # bytes per token is measured on at most this many tokens per split


@app.function
def console_text(text: str) -> str:
    """Captured console output as a terminal would leave it: a progress bar redrawn with carriage
    returns keeps only its last state."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n")).strip()


@app.function
@contextlib.contextmanager
def using_cache(directory):
    """AUTORESEARCH_CACHE set to `directory` for the duration (prepare's dataloader reads it)."""
    before = os.environ.get("AUTORESEARCH_CACHE")
    os.environ["AUTORESEARCH_CACHE"] = str(directory)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("AUTORESEARCH_CACHE", None)
        else:
            os.environ["AUTORESEARCH_CACHE"] = before


@app.function
def split_stats(directory, manifest) -> pl.DataFrame:
    """Documents, tokens and UTF-8 bytes per token (over up to SAMPLE_TOKENS tokens) of each split."""
    token_bytes = np.load(Path(directory) / "tokenizer" / "token_bytes.npy", allow_pickle=False)
    rows = []
    for split in ("train", "val"):
        tokens, offsets = harness.load_split(split, directory)
        sample = np.asarray(tokens[:SAMPLE_TOKENS]).astype(np.int64)
        nbytes = token_bytes[sample]
        text_tokens = int((nbytes > 0).sum())  # special tokens (BOS) have no bytes
        lengths = np.diff(offsets)
        rows.append(dict(split=split, documents=len(offsets) - 1, tokens=int(offsets[-1]),
                         mean_doc_tokens=float(lengths.mean()) if len(lengths) else 0.0,
                         bytes_per_token=float(nbytes.sum() / max(text_tokens, 1))))
    return pl.DataFrame(rows)


@app.function
def length_histogram(directory, max_seq_len: int, bins: int = 40):
    """Document lengths in tokens (log-spaced bins, stacked by split), the sequence length marked."""
    lengths = {s: np.diff(harness.load_split(s, directory)[1]) for s in ("train", "val")}
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


@app.function
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


@app.function
def tokenizer_checks(tokenizer, directory, manifest) -> pl.DataFrame:
    """Round trips and sizes that must hold for the cache to be usable."""
    sample = "def add(a, b):\n    return a + b  # héllo wörld, ünïcode ✓ 🙂\n\n\tTabs and   spaces.\n"
    ids = tokenizer.encode(sample)
    tokens, offsets = harness.load_split("val", directory)
    lengths = np.diff(offsets[:1001])
    short = np.flatnonzero(lengths <= 4000)  # a whole document (a cut one could end inside a merge)
    i = int(short[0]) if len(short) else 0
    doc = [int(t) for t in tokens[int(offsets[i]) + 1:min(int(offsets[i + 1]), int(offsets[i]) + 4001)]]
    doc_text = tokenizer.decode(doc)
    vocab = tokenizer.get_vocab_size()
    token_bytes = np.load(Path(directory) / "tokenizer" / "token_bytes.npy", allow_pickle=False)
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


@app.cell(hide_code=True)
def _():
    mo.md("""
    # Prepare the data

    `prepare.py` reads documents from a source, trains a BPE tokenizer and writes the documents as
    token files into a cache folder; its `manifest.json` freezes the profile's constants
    (sequence length, vocabulary, evaluation tokens, time budget), so every experiment against the cache
    is judged the same way. Preparing again with the same settings does nothing; other settings on the
    same folder are refused unless you tick **force**.
    """)
    return


@app.cell
def _():
    source = mo.ui.dropdown(options=["python", "files", "climbmix"], value="python", label="source")
    profile = mo.ui.dropdown(options=sorted(harness.PROFILES), value="tiny", label="profile")
    path_box = mo.ui.text(placeholder="a folder or glob of .txt/.md/.jsonl/.parquet", label="path (files)",
                          full_width=True)
    cache_box = mo.ui.text(value=str(harness.cache_dir()), label="cache", full_width=True)
    max_chars = mo.ui.number(start=0, stop=10**12, step=1_000_000, value=0, label="max characters (0: all)")
    time_budget = mo.ui.number(start=0, stop=86_400, step=10, value=0, label="time budget s (0: the profile's)")
    eval_tokens = mo.ui.number(start=0, stop=10**10, step=4096, value=0, label="eval tokens (0: the profile's)")
    force = mo.ui.checkbox(label="force (rebuild a folder that holds another cache)")
    run_prepare = mo.ui.run_button(label="prepare", kind="success")
    mo.vstack([
        mo.hstack([source, profile, max_chars], justify="start", gap=2),
        mo.hstack([time_budget, eval_tokens], justify="start", gap=2),
        path_box, cache_box,
        mo.hstack([run_prepare, force], justify="start", gap=2),
    ])
    return cache_box, eval_tokens, force, max_chars, path_box, profile, run_prepare, source, time_budget


@app.cell
def _():
    get_generation, set_generation = mo.state(0)  # bumped after each prepare: the views below reload
    return get_generation, set_generation


@app.cell
def do_prepare(cache_box, eval_tokens, force, max_chars, path_box, profile, run_prepare, set_generation, source,
               time_budget):
    mo.stop(not run_prepare.value, mo.md("_Press **prepare** to build (or confirm) the cache._"))
    _args = ["--source", source.value, "--profile", profile.value, "--cache", cache_box.value]
    if source.value == "files":
        _args += ["--path", path_box.value]
    if max_chars.value:
        _args += ["--max-chars", str(int(max_chars.value))]
    if time_budget.value:
        _args += ["--time-budget", str(int(time_budget.value))]
    if eval_tokens.value:
        _args += ["--eval-tokens", str(int(eval_tokens.value))]
    if force.value:
        _args.append("--force")
    with mo.status.spinner(title=f"prepare.py {' '.join(_args)}"):
        _out = io.StringIO()  # stdout and stderr (tqdm's bars) in the order they were written
        with contextlib.redirect_stdout(_out), contextlib.redirect_stderr(_out):
            try:
                _code = harness.main(_args)
            except Exception as _e:  # shown, not raised: the notebook stays usable
                _code = f"{type(_e).__name__}: {_e}"
    set_generation(lambda n: n + 1)
    _log = console_text(_out.getvalue())
    mo.vstack([
        mo.callout(mo.md(f"`prepare.py {' '.join(_args)}` " + ("finished" if _code == 0 else f"failed: {_code}")),
                   kind="success" if _code == 0 else "danger"),
        mo.plain_text(_log),
    ])
    return


@app.cell
def _(cache_box, get_generation):
    get_generation()
    cache = Path(cache_box.value).expanduser()
    try:
        manifest = harness.load_manifest(cache)
    except harness.CacheError as _e:
        manifest = None
        _view = mo.callout(mo.md(f"Nothing to show yet: {_e}"), kind="warn")
    else:
        _c = manifest["constants"]
        _facts = {
            "cache": str(cache), "profile": manifest["profile"], "source": manifest["source"]["name"],
            "characters": f"{manifest['characters']:,}", "MAX_SEQ_LEN": _c["MAX_SEQ_LEN"],
            "VOCAB_SIZE": _c["VOCAB_SIZE"], "EVAL_TOKENS": f"{_c['EVAL_TOKENS']:,}",
            "TIME_BUDGET": f"{_c['TIME_BUDGET']} s", "overrides": manifest.get("overrides") or "none",
            "data hash": manifest["data_hash"][:12], "created": manifest["created"],
            "prepared in": f"{manifest.get('prepare_seconds', '?')} s",
        }
        _view = mo.vstack([mo.md("## What was made"),
                           mo.ui.table(pl.DataFrame(dict(field=list(_facts), value=[str(v) for v in _facts.values()])),
                                       selection=None, pagination=False, show_column_summaries=False)])
    _view
    return cache, manifest


@app.cell
def _(cache, manifest):
    mo.stop(manifest is None)
    _stats = split_stats(cache, manifest)
    _max = manifest["constants"]["MAX_SEQ_LEN"]
    _longer = sum(int((np.diff(harness.load_split(s, cache)[1]) > _max).sum()) for s in ("train", "val"))
    mo.vstack([
        mo.md("### Documents and tokens per split"),
        mo.ui.table(_stats, selection=None, pagination=False, show_column_summaries=False,
                    format_mapping={"documents": "{:,}".format, "tokens": "{:,}".format,
                                    "mean_doc_tokens": "{:,.1f}".format, "bytes_per_token": "{:.3f}".format}),
        mo.md(f"Bytes per token: UTF-8 bytes of text per text token (BOS excluded), over at most "
              f"{SAMPLE_TOKENS:,} tokens of each split; `val_bpb` divides the loss by these bytes. "
              f"{_longer:,} documents are longer than a row ({_max} tokens) and are cut across rows."),
        length_histogram(cache, _max),
    ])
    return


@app.cell
def _(manifest):
    mo.stop(manifest is None)
    sample_split = mo.ui.dropdown(options=["train", "val"], value="train", label="split")
    sample_rows = mo.ui.slider(1, 8, value=2, label="rows", show_value=True)
    mo.vstack([mo.md("### A packed batch, as the model sees it"),
               mo.md(f"Each row is `MAX_SEQ_LEN + 1` tokens from `make_dataloader`; documents are packed "
                     f"best-fit with no padding and each starts with {BOS_MARK} (a cut document's tail gets "
                     f"a fresh one in a later row)."),
               mo.hstack([sample_split, sample_rows], justify="start", gap=2)])
    return sample_rows, sample_split


@app.cell
def _(cache, sample_rows, sample_split):
    tokenizer = harness.Tokenizer.from_directory(cache / "tokenizer")
    _T = harness.load_manifest(cache)["constants"]["MAX_SEQ_LEN"]
    with using_cache(cache):
        _loader = harness.make_dataloader(tokenizer, sample_rows.value, _T, sample_split.value, device="cpu")
        _x, _y, _epoch = next(_loader)
    _rows = np.concatenate([_x.numpy(), _y.numpy()[:, -1:]], axis=1)
    mo.Html(decoded_rows(tokenizer, _rows))
    return (tokenizer,)


@app.cell
def _(cache, manifest, tokenizer):
    _checks = tokenizer_checks(tokenizer, cache, manifest)
    _sample = "def greet(name):\n    print(f'hello {name}')\n"
    _pieces = [tokenizer.decode([t]) for t in tokenizer.encode(_sample)]
    _shown = "".join(f'<span style="border:1px solid #bbb;border-radius:3px;margin:1px;padding:0 1px">'
                     f"{html.escape(p).replace(' ', '·').replace(chr(10), '↵')}</span>" for p in _pieces)
    mo.vstack([
        mo.md("### Tokenizer checks"),
        mo.ui.table(_checks, selection=None, pagination=False, show_column_summaries=False),
        mo.md(f"A sample split into its {len(_pieces)} tokens (· a space, ↵ a newline):"),
        mo.Html(f'<div style="font-family:monospace;line-height:1.9">{_shown}</div>'),
    ])
    return


if __name__ == "__main__":
    app.run()
