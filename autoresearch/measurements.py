"""The ledger's rows as the judge reads them: runs, experiments, the best's value and the noise.

Pure functions of rows (dicts of strings, as ledger.read_rows gives them), so the scheduler, `status`,
the agents' context and the tests all derive the same numbers from the same file. A ledger written
before runs had rows of their own reads as one run per experiment.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from . import ledger, stats
from .judge import Experiment, Noise, Run, current_era, estimate_noise


def number(value, kind=float):
    try:
        v = kind(float(value)) if kind is int else float(value)
    except (TypeError, ValueError):
        return None
    return v if kind is int or math.isfinite(v) else None


def experiment_of(row: dict, index: int) -> int:
    """The row's experiment number; in an older ledger each row was an experiment of its own."""
    return number(row.get("experiment"), int) or index + 1


def rows_of(rows: list[dict], experiment: int) -> list[dict]:
    """The ledger rows of one experiment, in order."""
    return [r for i, r in enumerate(rows) if experiment_of(r, i) == experiment]


def run_value(row: dict) -> float | None:
    """What this row's run measured (an older ledger's val_bpb was its one run's)."""
    if row.get("role") == "verdict":
        return None
    value = number(row.get("run_bpb")) if row.get("run_bpb") else number(row.get("val_bpb"))
    return value if value is not None and value > 0 else None  # the original project wrote 0 for a crash


def is_verdict(row: dict) -> bool:
    return row.get("status") in ledger.VERDICTS or (row.get("status") != ledger.RUN and not row.get("experiment"))


def runs(rows: list[dict]) -> list[Run]:
    out = []
    for i, row in enumerate(rows):
        if row.get("role") == "verdict" or row.get("commit") in ("", "none"):
            continue
        role = row.get("role") or ("baseline" if row.get("description") == "baseline" else "candidate")
        out.append(Run(experiment=experiment_of(row, i), commit=row["commit"], seed=number(row.get("seed"), int),
                       role=role, era=number(row.get("era"), int) or 1, val_bpb=run_value(row),
                       tokens_per_s=number(row.get("tokens_per_s")),
                       stopped=(row.get("reason") or ledger.STOPPED) if row.get("status") == ledger.STOPPED else None))
    return out


def experiments(rows: list[dict]) -> list[Experiment]:
    """One per experiment that has a candidate commit, in order, from its rows."""
    found: dict[int, Experiment] = {}
    for i, row in enumerate(rows):
        n = experiment_of(row, i)
        if n in found or row.get("commit") in ("", "none") or row.get("role") not in ("", "baseline", "candidate",
                                                                                          "verdict"):
            continue
        added, removed = number(row.get("lines_added"), int) or 0, number(row.get("lines_removed"), int) or 0
        found[n] = Experiment(number=n, commit=row["commit"], parent=row.get("parent") or row["commit"],
                              net_lines=added - removed)
    return list(found.values())


def verdicts(rows: list[dict]) -> list[dict]:
    """The rows that end experiments, oldest first: what an agent reads as the history."""
    return [r for r in rows if is_verdict(r)]


def noise(rows: list[dict]) -> Noise:
    return estimate_noise(runs(rows), experiments(rows))


@dataclass(frozen=True)
class Best:
    commit: str
    mean: float | None      # over its runs in the current era (else over all its runs)
    runs: int
    era: int
    seeds: tuple


def best(rows: list[dict], commit: str) -> Best:
    """The best commit's value: the mean over its runs, never one lucky run."""
    short = commit[:7]
    all_runs = [r for r in runs(rows) if r.commit == short and r.ok]
    era = current_era(runs(rows))
    now = [r for r in all_runs if r.era == era] or all_runs
    return Best(commit=short, mean=stats.mean(r.val_bpb for r in now), runs=len(now), era=era,
                seeds=tuple(r.seed for r in now))
