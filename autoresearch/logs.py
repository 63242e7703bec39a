"""The run's logs: one file per run, `logs/NNNN-COMMIT-sSEED.log`, and what the lab reads back from
them (loss curves for early abort and the live view, the tail of a crash for the agent).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from . import measurements
from .runner import progress_points


def log_path(workdir: Path, experiment: int, commit: str, seed) -> Path:
    """One log per run: experiment number, commit and seed."""
    return Path(workdir) / "logs" / f"{experiment:04d}-{commit[:7]}-s{seed}.log"


def row_log(workdir: Path, row: dict, index: int) -> Path:
    """The log of the run a ledger row records (an older ledger named logs by row number alone)."""
    n = measurements.experiment_of(row, index)
    if row.get("experiment"):
        return log_path(workdir, n, row["commit"], row.get("seed"))
    return Path(workdir) / "logs" / f"{n:04d}-{row['commit']}.log"


# what a compiled extension (triton's, loaded by torch) prints as the interpreter exits: its report of
# objects still alive then, tens of lines after the summary block that would push it out of a tail
EXIT_NOISE = re.compile(r"^(nanobind: |\s+- (leaked |\.\.\. skipped)|See https://nanobind\.)")


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log, without the exit noise (the file keeps everything)."""
    if not path.exists():
        return ""
    kept = [line for line in path.read_text(errors="replace").splitlines() if not EXIT_NOISE.match(line)]
    return "\n".join(kept[-lines:])


def end_line(path: Path) -> None:
    """A newline after the log's last line where it has none (a line appended then starts on its own)."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) != b"\n":
            f.write(b"\n")


def era_curves(workdir: Path, rows: list[dict], best: str, era: int) -> tuple[dict[int, list], list[list], list[list]]:
    """The loss curves of an era's runs: the best commit's by seed, and every commit's grouped by
    commit (their seed-to-seed spread is what a candidate's curve is held to); and the best's
    tokens/s against the share of its budget, one list per run (a candidate's speed so far is held
    to the best's over the same share)."""
    by_seed, groups, speeds = {}, {}, []
    for i, row in enumerate(rows):
        if (measurements.number(row.get("era"), int) or 1) != era or measurements.run_value(row) is None:
            continue
        points = progress_points(row_log(workdir, row, i))
        if not points:
            continue
        groups.setdefault(row["commit"], []).append([(p["progress"], p["loss"]) for p in points])
        if row["commit"] == best[:7]:
            by_seed[measurements.number(row.get("seed"), int)] = groups[row["commit"]][-1]
            speeds.append([(p["progress"], p["tokens_per_s"]) for p in points])
    return by_seed, list(groups.values()), speeds
