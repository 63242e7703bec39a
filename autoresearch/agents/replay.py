"""Proposals read from a file, for tests, demos and reproducing a run on another machine.

The file is JSON lines, one proposal per line:

    {"description": "halve the batch", "train_py": "<the whole new train.py>"}
    {"description": "deeper", "diff": "<a unified diff of train.py, as `git diff` prints it>"}
    {"description": "from a file", "train_py_file": "variants/wide.py"}   (relative to the replay file)

The n-th proposal is the one after the n-1 this agent already has rows for in the ledger or has in
flight (several workers), so a restarted loop continues where it stopped.
"""
from __future__ import annotations

import json
from pathlib import Path

from .base import Context, Proposal
from ..workspace import LabError


class ReplayAgent:
    name = "replay"

    def __init__(self, path):
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_file():
            raise LabError(f"replay file {self.path} does not exist")
        self.proposals = []
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                description = item["description"]
                if "train_py_file" in item:
                    item["train_py"] = (self.path.parent / item["train_py_file"]).read_text()
                assert isinstance(description, str) and (("train_py" in item) != ("diff" in item))
            except (ValueError, KeyError, AssertionError, OSError, TypeError):
                raise LabError(f"{self.path}:{number}: each line must be JSON with a description and one of "
                               f"train_py, train_py_file or diff") from None
            self.proposals.append(Proposal(description=description, train_py=item.get("train_py"),
                                           diff=item.get("diff")))

    def propose(self, context: Context) -> Proposal | None:
        done = sum(1 for row in [*context.history, *context.in_flight] if row.get("agent") == self.name)
        return self.proposals[done] if done < len(self.proposals) else None


class OneProposal:
    """One given proposal, then nothing more: how `autoresearch experiment` hands a coding agent's edit to
    the same scheduler as every other agent's."""

    def __init__(self, proposal: Proposal, name: str):
        self.proposal, self.name = proposal, name

    def propose(self, context: Context) -> Proposal | None:
        proposal, self.proposal = self.proposal, None
        return proposal
