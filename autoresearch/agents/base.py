"""The interface every agent shares.

Context in: the current best train.py, program.md, one ledger row per experiment (the row with its
verdict and mean val_bpb), the best's mean, the noise and the run's facts.
Proposal out: a description plus either the full new train.py or a unified diff against it, and
what it cost to make (tokens, USD) where the agent knows.
An agent returns None when it has nothing more to propose (a replay file ran out, say).
Agents keep no state of their own between proposals: everything they need is derived from the
context, so a loop killed and restarted proposes exactly what it would have proposed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..judge import Noise


@dataclass
class Context:
    train_py: str                      # train.py at the current best commit
    program_md: str                    # the human's manual
    history: list[dict] = field(default_factory=list)  # one ledger row per experiment, oldest first
    best: dict | None = None           # the verdict row of the current best commit, if any
    workdir: Path | None = None        # the run's worktree (agents that edit files work here)
    profile: str = "tiny"              # the prepared cache's profile
    max_seq_len: int = 0               # the prepared cache's MAX_SEQ_LEN (0: the profile's default)
    seed: int = 0                      # the agent's seed: same seed + same history = same proposal
    last_crash: str = ""               # tail of the last crash's log, if the last experiment crashed
    noise: Noise = field(default_factory=Noise)  # how much one run's val_bpb moves (seeds, load)
    best_mean: float | None = None     # the best's val_bpb: the mean over its runs in the current era
    best_runs: int = 0                 # how many runs that mean is over
    in_flight: list[dict] = field(default_factory=list)  # experiments being measured now (several workers):
                                       # {number, description, agent, status "running"}: not to propose again


@dataclass
class Proposal:
    description: str
    train_py: str | None = None        # the whole new file...
    diff: str | None = None            # ...or a unified diff against the current one
    rejection: str | None = None       # a rule broken before the lab applied it (external agents)
    usage: dict = field(default_factory=dict)  # input_tokens, output_tokens, cache_*_tokens, cost_usd


class AgentUnavailable(Exception):
    """The agent's service kept failing: the loop pauses and asks again later, recording nothing."""


class Agent(Protocol):
    name: str

    def propose(self, context: Context) -> Proposal | None: ...


def make_agent(spec: str, seed: int = 0, model: str | None = None) -> Agent:
    """'search', 'claude' or 'replay:FILE'."""
    if spec == "claude":
        from .claude import ClaudeAgent
        return ClaudeAgent(model=model)
    if spec == "search":
        from .search import SearchAgent
        return SearchAgent(seed=seed)
    if spec.startswith("replay:"):
        from .replay import ReplayAgent
        return ReplayAgent(spec.split(":", 1)[1])
    raise ValueError(f"unknown agent {spec!r}: use search, claude or replay:FILE")
