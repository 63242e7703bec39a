"""From the agent's proposal to a commit: what the agent is shown, the edit applied to the worktree,
the guard's verdict on it, and the commit of train.py alone.
"""
from __future__ import annotations

from pathlib import Path

from . import guard, ledger, logs, measurements, workspace
from .agents import Context, Proposal
from .workspace import LabError


def context(workdir: Path, rows: list[dict], manifest: dict, seed: int, best_commit: str) -> Context:
    """What every agent sees: the best train.py, the manual, one row per experiment (its verdict), the
    best's mean and the noise, and the tail of the last crash's log."""
    history = measurements.verdicts(rows)
    best = next((r for r in reversed(history) if r["status"] == ledger.KEEP), None)
    last_crash = ""
    if history and history[-1]["status"] in ledger.FAILED:
        index = next(i for i, r in enumerate(rows) if r is history[-1])
        last_crash = logs.tail(logs.row_log(workdir, rows[index], index))
    program = Path(workdir) / "program.md"
    summary = measurements.best(rows, best_commit)
    return Context(train_py=(Path(workdir) / workspace.TRAIN).read_text(),
                   program_md=program.read_text() if program.exists() else "", history=history, best=best,
                   workdir=Path(workdir), profile=manifest["profile"], seed=seed, last_crash=last_crash,
                   max_seq_len=manifest["constants"]["MAX_SEQ_LEN"], noise=measurements.noise(rows),
                   best_mean=summary.mean, best_runs=summary.runs)


def apply(workdir: Path, proposal: Proposal) -> str | None:
    """Write the proposal into the worktree; the reason it cannot be, or None."""
    train = Path(workdir) / workspace.TRAIN
    if proposal.train_py is not None:
        try:
            data = proposal.train_py.encode("utf-8")
        except UnicodeEncodeError as e:
            return f"train.py is not valid text: {e.reason} at character {e.start:,}"
        train.write_bytes(data)
        return None
    if proposal.diff is not None:
        patch = Path(workdir) / ".lab" / "proposal.diff"
        try:
            patch.write_bytes((proposal.diff if proposal.diff.endswith("\n") else proposal.diff + "\n").encode())
        except UnicodeEncodeError as e:
            return f"the diff is not valid text: {e.reason} at character {e.start:,}"
        try:
            workspace.apply_patch(workdir, patch)
        except LabError as e:
            return "the diff does not apply: " + str(e).split(": ", 1)[-1][:200]
        return None
    return None  # an agent that edited the worktree itself


def check(workdir: Path, proposal: Proposal, protected: dict, parent: str) -> str | None:
    """Apply and guard: the first rule the proposal breaks, or None."""
    return proposal.rejection or apply(workdir, proposal) or \
        guard.check_proposal(workdir, protected, workspace.file_at(workdir, parent))


def describe(proposal: Proposal) -> str:
    """The description as one printable line of valid text (a lone surrogate becomes '?', a terminal
    escape is dropped), at most 300 characters."""
    text = ledger.one_line(proposal.description or "")[:300]
    return text.encode("utf-8", "replace").decode("utf-8") or "(no description)"
