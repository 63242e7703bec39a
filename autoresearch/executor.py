"""Executors run train.py for one commit at one seed and hand back the run's result.

`Executor` is the protocol the scheduler drives; `LocalExecutor` runs each job in the run's own
worktree on this machine, one at a time. A job for a commit other than the branch's tip (the best,
while a candidate is being measured) runs with HEAD detached at that commit, and the worktree is
back on its branch when the job ends, so the branch only moves when the scheduler moves it.

The executor also owns what makes a run cheaper or safer where it runs: the environment (the
prepared cache, the compile cache, the seed; no secrets), the sandbox (sandbox.py: train.py writes
only to the run's hand-off directory, `.lab/handoff/`, and the compile cache), a worktree cleared of
whatever is neither tracked nor the lab's before each run, the Python started ahead while the agent
works, the device name, and the check after the run that every protected file is as it was.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from . import guard, harness, ledger, runner, sandbox, workspace


@dataclass(frozen=True)
class Job:
    experiment: int
    commit: str            # full hash
    seed: int
    role: str              # baseline | candidate | confirm | control | repeat
    log: Path


class Executor(Protocol):
    device: str | None
    sandbox: str           # sandbox.BWRAP or sandbox.NONE: recorded in every row

    def probe(self) -> str:
        """Name the device the runs use (the same way for every run), and return it."""

    def start_ahead(self) -> None:
        """Get the next run's process ready while the agent works (may do nothing)."""

    def run(self, job: Job, on_start: Callable[[int], None] | None = None,
            on_progress: Callable[[dict], str | None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> runner.RunResult:
        """Run the job to its end. on_progress gets each progress line parsed and may return a reason
        to stop the run early (status "pruned"); should_stop() true stops it (status "interrupted")."""

    def close(self) -> None:
        """Stop whatever the executor keeps running between jobs."""


class LocalExecutor:
    def __init__(self, workdir: Path, cache, branch: str, protected: dict[str, str], allowance: float | None = None):
        self.workdir, self.branch, self.protected = Path(workdir), branch, protected
        self.manifest = harness.read_manifest(cache)
        budget = self.manifest["constants"]["TIME_BUDGET"]
        # a generous start-up allowance: compilation, data loading, evaluation
        self.timeout = budget + (allowance if allowance is not None else max(180.0, budget))
        self.env = {"AUTORESEARCH_CACHE": str(harness.cache_dir(cache)),
                    "TORCHINDUCTOR_CACHE_DIR": str(harness.compile_cache_dir())}
        self.env.update(harness.bytecode_env("torch"))  # else each experiment compiles torch's source again
        self.device = None
        self.handoff = self.workdir / ".lab" / "handoff"
        self.sandbox = sandbox.mode()
        self.jail = self.make_jail(cache) if self.sandbox == sandbox.BWRAP else None
        # the next run's Python, started while the agent works (AUTORESEARCH_PRESTART=0: never)
        self.prestart = os.environ.get("AUTORESEARCH_PRESTART", "1") != "0"
        self.prestarted: runner.Prestarted | None = None

    def make_jail(self, cache) -> sandbox.Sandbox:
        """Where runs read and write. Bytecode under a prefix is written by the lab's device probe and
        only read by runs (else one could leave an unchecked .pyc of prepare.py there for the next)."""
        prefix = [Path(self.env["PYTHONPYCACHEPREFIX"])] if self.env.get("PYTHONPYCACHEPREFIX") else []
        for path in prefix:
            path.mkdir(parents=True, exist_ok=True)
        readable = (harness.cache_dir(cache), Path(sys.prefix), Path(sys.base_prefix), *prefix)
        return sandbox.Sandbox(self.workdir, readable=readable, hidden=(self.workdir / ".lab",),
                               writable=(self.handoff, harness.compile_cache_dir()))

    def probe(self) -> str:
        workspace.clear_untracked(self.workdir)  # the probe imports prepare.py from the worktree, unsandboxed
        self.device = harness.probe_device(self.workdir, runner.scrubbed_env(self.env))
        return self.device

    def start_ahead(self) -> None:
        if self.prestart and self.prestarted is None:
            self.prestarted = runner.Prestarted(self.workdir, self.env, self.jail)

    def run(self, job, on_start=None, on_progress=None, should_stop=None) -> runner.RunResult:
        prestarted, self.prestarted = self.prestarted, None
        env = {**self.env, "AUTORESEARCH_SEED": str(job.seed)}
        expect = dict(data_hash=self.manifest["data_hash"], eval_tokens=self.manifest["constants"]["EVAL_TOKENS"])
        with workspace.checked_out(self.workdir, job.commit, self.branch):
            workspace.clear_untracked(self.workdir)  # what a proposal left in ignored paths goes too
            clear(self.handoff)
            result = runner.run_training(self.workdir, job.log, self.handoff / "result.json", env,
                                         self.timeout, expect=expect, on_start=on_start, on_progress=on_progress,
                                         should_stop=should_stop, prestarted=prestarted, sandbox=self.jail)
            # before the branch is checked out again, which would quietly put a tampered file back
            reason = guard.check_protected(self.workdir, self.protected)
        if reason and result.status != "interrupted":
            # train.py touched the harness while it ran: the result cannot be trusted
            result.status, result.reason, result.val_bpb = ledger.REJECTED, "while running: " + reason, None
        return result

    def close(self) -> None:
        if self.prestarted is not None:
            self.prestarted.close()
            self.prestarted = None


def clear(directory: Path) -> None:
    """The directory emptied (itself kept: a sandbox started ahead has it bound in), so that nothing
    one run left there reaches the next."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
