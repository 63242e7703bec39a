"""results.tsv: one row per run, appended atomically, never rewritten.

The first five columns are exactly the original project's (commit, val_bpb, memory_gb, status,
description), so its analysis still reads the file; the lab's own columns follow.

An experiment is one proposal with all the runs it took to judge it (its number is `experiment`).
The row that ends it carries its verdict as `status` (keep, discard, crash, timeout, rejected,
pruned) and in `val_bpb` the experiment's mean over its runs, so a reader that takes the keep rows
gets the kept experiments with their mean val_bpb, as in the original project. The other rows of an
experiment (a confirmation, a control run of the best) have status `run` and their own value in
`val_bpb`; a candidate's run stopped early for training slower than the best has status `stopped`
and no value, and a control run of the best follows it. Every row's own measurement is `run_bpb`.
When an experiment ends on a run that is not the candidate's, its verdict is a row of its own, with
role `verdict` and no run. Ledgers written before runs had rows of their own (one row per
experiment, no `experiment` column) still read, and every reader here accepts statuses it has never
heard of.

An append is a single write() of one whole line to a file opened with O_APPEND, under an exclusive
flock, then fsync: two appenders never interleave, and a crash can at worst leave a torn last line
without a newline, which readers skip.
"""
from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

COLUMNS = [
    "commit", "val_bpb", "memory_gb", "status", "description",
    "experiment", "role", "seed", "run_bpb", "runs", "diff", "diff_low", "diff_high", "noise", "era", "policy",
    "confidence", "parent", "lines_added", "lines_removed", "score", "training_seconds", "total_seconds",
    "num_steps", "total_tokens_M", "tokens_per_s", "mfu_percent", "peak_vram_mb", "agent", "started", "finished",
    "lab_seconds", "run_seconds", "reason", "device", "sandbox", "worker", "profile", "data_hash", "tokenizer_hash", "time_budget",
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd",
]
SEED_COLUMNS = COLUMNS[:5]
# the columns a ledger must have for the lab to go on appending to it (older ones still read)
RUN_COLUMNS = ("experiment", "role", "seed", "run_bpb", "era")

# statuses: the verdicts, which end an experiment, and RUN, a row that does not
KEEP, DISCARD, CRASH, TIMEOUT, REJECTED, PRUNED = "keep", "discard", "crash", "timeout", "rejected", "pruned"
OVERRUN = "overrun"  # trained past its budget, by the lab's clock: its number is not judged
VERDICTS = (KEEP, DISCARD, CRASH, TIMEOUT, REJECTED, PRUNED, OVERRUN)
RUN = "run"
STOPPED = "stopped"  # a candidate's run stopped early for training slower than the best: a control says why
STATUSES = VERDICTS + (RUN, STOPPED)
FAILED = (CRASH, TIMEOUT, OVERRUN)  # ran and produced no number that counts
# roles: what a run was for
ROLES = ("baseline", "candidate", "confirm", "control", "repeat", "verdict")
# the columns that say where a number was measured: rows that differ here are not comparable
FINGERPRINT = ("device", "profile", "data_hash", "tokenizer_hash", "time_budget")


FORMATS = {"val_bpb": "{:.6f}", "run_bpb": "{:.6f}", "score": "{:.6f}", "diff": "{:.6f}", "diff_low": "{:.6f}",
           "diff_high": "{:.6f}", "noise": "{:.6f}", "memory_gb": "{:.1f}", "lab_seconds": "{:.3f}", "run_seconds": "{:.1f}",
           "tokens_per_s": "{:.0f}", "cost_usd": "{:.4f}"}


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # terminal escapes among them: a cell is printed as it is


def one_line(text) -> str:
    """Text as one printable line: whitespace runs as one space, control characters gone."""
    return CONTROL.sub("", " ".join(str(text).split()))


def clean(column: str, value) -> str:
    """One cell: one printable line (no tabs, newlines or terminal escapes), numbers at the column's
    precision, None as empty."""
    if value is None:
        return ""
    if isinstance(value, float) and column in FORMATS:
        value = FORMATS[column].format(value)
    return one_line(value)


def append(path: Path, row: dict) -> None:
    """Append one row (missing columns empty; unknown keys are an error)."""
    unknown = set(row) - set(COLUMNS)
    assert not unknown, f"unknown ledger columns {unknown}"
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        # an existing file keeps its own header: rows follow its columns (an older file simply lacks
        # the newer ones), so a file is never rewritten
        columns = COLUMNS if size == 0 else _header(path)
        line = "\t".join(clean(c, row.get(c)) for c in columns) + "\n"
        if size == 0:
            line = "\t".join(COLUMNS) + "\n" + line
        elif _ends_torn(path, size):
            line = "\n" + line  # seal a torn line left by a crash, so this row starts on its own line
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _header(path: Path) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.readline().rstrip("\n").split("\t")


def _ends_torn(path: Path, size: int) -> bool:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1) != b"\n"


def read_rows(path: Path) -> list[dict]:
    """Rows as dicts of strings. A torn or malformed line is skipped; a five-column file written by
    the original project reads with the lab's columns empty."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    if not lines or not lines[0].strip():
        return []
    header = lines[0].split("\t")
    body = lines[1:]
    complete = body[:-1]  # the text after the last newline is torn (or empty)
    rows = []
    for line in complete:
        cells = line.split("\t")
        if len(cells) != len(header) or not line.strip():
            continue
        row = dict.fromkeys(COLUMNS, "")
        row.update(zip(header, cells))
        rows.append(row)
    return rows


def read_frame(path: Path):
    """The ledger as a polars DataFrame with numeric columns typed (empty -> null)."""
    import polars as pl
    rows = read_rows(path)
    columns = list(dict.fromkeys(COLUMNS + [k for r in rows[:1] for k in r]))
    frame = pl.DataFrame({c: [r.get(c, "") for r in rows] for c in columns}, schema={c: pl.Utf8 for c in columns})
    numeric = ["val_bpb", "memory_gb", "experiment", "seed", "run_bpb", "runs", "diff", "diff_low", "diff_high", "noise",
               "era", "lines_added", "lines_removed", "score", "training_seconds", "total_seconds", "num_steps",
               "total_tokens_M", "tokens_per_s", "mfu_percent", "peak_vram_mb", "lab_seconds", "run_seconds", "time_budget",
               "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd"]
    return frame.with_columns([pl.col(c).cast(pl.Float64, strict=False) for c in numeric if c in columns])


def header(path: Path) -> list[str]:
    """The columns of an existing ledger ([] when there is none yet)."""
    path = Path(path)
    return _header(path) if path.exists() and path.stat().st_size else []


def fingerprint(row: dict) -> dict:
    return {k: row.get(k, "") for k in FINGERPRINT}


def mismatch(rows: list[dict], current: dict) -> str | None:
    """Why this ledger's measurements are not comparable with the current environment, if so."""
    for row in reversed(rows):
        if row.get("profile"):  # the lab's own rows carry a fingerprint; the seed's do not
            for key in FINGERPRINT:
                if key in current and str(current[key]) != row.get(key, ""):
                    return f"{key} was {row.get(key)!r}, now {current[key]!r}"
            return None
    return None
