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
Preparing calls the harness's build (harness.build.prepare) in the kernel; nothing runs until you press the
button. The cache shown is the folder in the "cache" box (default: AUTORESEARCH_CACHE).
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="autoresearch: prepare data")

with app.setup:
    import contextlib
    import importlib
    import html
    import os
    import sys
    from pathlib import Path

    import marimo as mo

    import numpy as np
    import polars as pl

    # the harness is the repository's prepare.py, which this notebook's own name would shadow:
    # put the checkout first on the path and import it as `runtime` (the harness package is `harness`)
    REPO = Path(__file__).resolve().parents[1]
    if sys.path[:1] != [str(REPO)]:
        sys.path.insert(0, str(REPO))
    runtime = importlib.import_module("prepare")
    if Path(runtime.__file__).resolve() != REPO / "prepare.py":
        raise ImportError(f"imported {runtime.__file__} instead of {REPO / 'prepare.py'}")
    from harness import build

    from harness.sources import DOC_MAX_CHARS
    from autoresearch.cache_view import (BOS_MARK, SAMPLE_TOKENS, decoded_rows, length_histogram,
                                         prepare_with_progress, split_stats, tokenizer_checks)


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
    profile = mo.ui.dropdown(options=sorted(runtime.PROFILES), value="tiny", label="profile")
    path_box = mo.ui.text(placeholder="a folder or glob of .txt/.md/.jsonl/.parquet", label="path (files)",
                          full_width=True)
    cache_box = mo.ui.text(value=str(runtime.cache_dir()), label="cache", full_width=True)
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
    _options = dict(source=source.value, profile=profile.value, cache=cache_box.value,
                    path=path_box.value if source.value == "files" else None,
                    max_chars=int(max_chars.value) or None, time_budget=int(time_budget.value) or None,
                    eval_tokens=int(eval_tokens.value) or None, force=bool(force.value))
    _call = "prepare(" + ", ".join(f"{k}={v!r}" for k, v in _options.items() if v not in (None, False)) + ")"
    _error, _console = prepare_with_progress(_call, **_options)
    set_generation(lambda n: n + 1)
    _log = console_text(_console)
    mo.vstack([
        mo.callout(mo.md(f"`{_call}` " + ("finished" if _error is None else f"failed: {_error}")),
                   kind="success" if _error is None else "danger"),
        mo.plain_text(_log),
    ])
    return


@app.cell
def _(cache_box, get_generation):
    get_generation()
    cache = Path(cache_box.value).expanduser()
    try:
        manifest = runtime.load_manifest(cache)
    except runtime.CacheError as _e:
        manifest = None
        _why = (f"no prepared data in `{cache}` yet: press **prepare** above" if not (cache / "manifest.json").exists()
                else str(_e))
        _view = mo.callout(mo.md(f"Nothing to show yet: {_why}"), kind="warn")
    else:
        _c = manifest["constants"]
        _facts = {
            "cache": str(cache), "profile": manifest["profile"], "source": manifest["source"]["name"],
            "characters": f"{manifest['characters']:,}",
            "exact duplicates left out": f"{manifest['duplicates']:,}" if "duplicates" in manifest
            else "not checked (prepared before duplicates were left out)",
            "near-copies kept in one split": f"{manifest['near_copies']:,}" if "near_copies" in manifest
            else "not checked (prepared before near-copies were kept together)",
            "MAX_SEQ_LEN": _c["MAX_SEQ_LEN"],
            "VOCAB_SIZE": _c["VOCAB_SIZE"], "EVAL_TOKENS": f"{_c['EVAL_TOKENS']:,}" + (
                f" (lowered from the profile's {manifest['lowered']['EVAL_TOKENS']:,}: all the validation split holds)"
                if "EVAL_TOKENS" in manifest.get("lowered", {}) else ""),
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
    _longer = sum(int((np.diff(runtime.load_split(s, cache)[1]) > _max).sum()) for s in ("train", "val"))
    mo.vstack([
        mo.md("### Documents and tokens per split"),
        mo.ui.table(_stats, selection=None, pagination=False, show_column_summaries=False,
                    format_mapping={"documents": "{:,}".format, "tokens": "{:,}".format,
                                    "mean_doc_tokens": "{:,.1f}".format, "bytes_per_token": "{:.3f}".format}),
        mo.md(f"Bytes per token: UTF-8 bytes of text per text token (BOS excluded), over at most "
              f"{SAMPLE_TOKENS:,} tokens of each split; `val_bpb` divides the loss by these bytes. "
              f"{_longer:,} documents are longer than a row ({_max} tokens) and are cut across rows."),
        length_histogram(cache, _max),
        mo.md(f"The spike near the right: files longer than {DOC_MAX_CHARS:,} characters are split into "
              f"documents of {DOC_MAX_CHARS:,} characters each (the `python` and `files` sources), so most of a "
              f"long file's pieces have the same length in tokens; the last piece of each file is shorter. "
              f"The dashed line is a row's length (`MAX_SEQ_LEN`, {_max} tokens): a document to its right "
              f"is cut across rows, so the model sees it in pieces and never whole."),
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
    tokenizer = runtime.Tokenizer.from_directory(cache / "tokenizer")
    _T = runtime.load_manifest(cache)["constants"]["MAX_SEQ_LEN"]
    with using_cache(cache):
        _loader = runtime.make_dataloader(tokenizer, sample_rows.value, _T, sample_split.value, device="cpu")
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
