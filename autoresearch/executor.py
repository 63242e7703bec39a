"""Executors run train.py for one commit at one seed and hand back the run's result.

`Executor` is the protocol the scheduler drives; `LocalExecutor` runs each job in the run's own
worktree on this machine, one at a time. A job for a commit other than the branch's tip (the best,
while a candidate is being measured) runs with HEAD detached at that commit, and the worktree is
back on its branch when the job ends, so the branch only moves when the scheduler moves it.

The executor also owns what makes a run cheaper or safer where it runs: the environment (the
prepared cache, the compile cache, the seed; no secrets), the sandbox (sandbox.py: train.py writes
only to the run's hand-off directory, `.lab/handoff/`, and its commit's layer of the compile cache,
`.lab/compile/` (harness.CompileLayers), and sees no validation data), a worktree cleared of
whatever is neither tracked nor the lab's before each run, the Python started ahead while the agent
works, the device name, the check after the run that every protected file is as it was, and the
lab's evaluator (evaluator.py), which scores the model the run handed off.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from . import guard, harness, ledger, logs, runner, sandbox, workspace
from .evaluator import Evaluator
from .workspace import LabError


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
    slots: int             # how many runs it takes at once (its `run` is then called from that many threads)
    notes: list[str]       # what it has to say at start (workers left out)

    def probe(self) -> str:
        """Name the device the runs use (the same way for every run), and return it."""

    def start_ahead(self) -> None:
        """Get the next run's process ready while the agent works (may do nothing)."""

    def run(self, job: Job, on_start: Callable[[int], None] | None = None,
            on_progress: Callable[[dict], str | None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> runner.RunResult:
        """Run the job to its end. on_start(pgid, worker=None) is told where it started; on_progress
        gets each progress line parsed and may return a reason to stop the run early (status
        "pruned"); should_stop() true stops it (status "interrupted")."""

    def close(self) -> None:
        """Stop whatever the executor keeps running between jobs."""


# the least the lab's evaluator is given to start (import torch, pack the rows) and to score a run: its
# work is the lab's, on a machine that may be busy, and not bounded by the run's budget and allowance
EVALUATOR_TIMEOUT = 300.0


def run_timeout(budget: float, allowance: float | None = None) -> float:
    """How long train.py may run before it is killed: its budget and a start-up allowance (compilation,
    data loading, the hand-off), by default a generous one."""
    return budget + (allowance if allowance is not None else max(180.0, budget))


def evaluator_timeout(run: float) -> float:
    """What the evaluator is given to start, and again to score, beside a run given `run` seconds."""
    return max(run, EVALUATOR_TIMEOUT)


def require_harness_package(workdir: Path, protected: dict[str, str]):
    """A run begun with the monolithic prepare.py of before (no harness/) cannot be evaluated here."""
    if "harness/manifest.py" not in protected:
        raise LabError(f"{workdir} was begun with a harness older than this lab's evaluator (no harness/ "
                       f"package): start a new run with `autoresearch init --tag NEW` (its results still read)")


class LocalExecutor:
    slots = 1

    def __init__(self, workdir: Path, cache, branch: str, protected: dict[str, str], base: str,
                 allowance: float | None = None):
        self.workdir, self.branch, self.protected = Path(workdir), branch, protected
        self.manifest = harness.read_manifest(cache)
        budget = self.manifest["constants"]["TIME_BUDGET"]
        self.timeout = run_timeout(budget, allowance)
        self.evaluator_timeout = evaluator_timeout(self.timeout)
        self.handoff = self.workdir / ".lab" / "handoff"
        self.program = self.handoff / "model.pt2"  # where evaluate_bpb writes the model, under the lab
        # before any sandbox starts: one binds in only what exists (a new worker's worktree has no .lab yet)
        self.handoff.mkdir(parents=True, exist_ok=True)
        self.layers = harness.CompileLayers(self.workdir, base)  # the compile cache a run reads and writes
        self.env = {"AUTORESEARCH_CACHE": str(harness.cache_dir(cache)), "AUTORESEARCH_HANDOFF": str(self.program),
                    "TORCHINDUCTOR_CACHE_DIR": str(self.layers.mount),
                    # Triton's kernels in the layer too (inductor's default), whatever the user's shell sets
                    "TRITON_CACHE_DIR": str(self.layers.mount / "triton"), **self.layers.ENV}
        self.env.update(harness.bytecode_env("torch"))  # else each experiment compiles torch's source again
        self.device = None
        self.sandbox = sandbox.mode()
        self.notes: list[str] = []
        self.harness_copy = self.workdir / ".lab" / "harness"  # prepare.py and harness/ as committed at init
        self.harness_hashes = {path: sha for path, sha in protected.items() if harness.is_harness(path)}
        require_harness_package(self.workdir, protected)
        harness_at(self.workdir, base, self.harness_hashes, self.harness_copy)
        self.jail, judged = self.make_jails(cache) if self.sandbox == sandbox.BWRAP else (None, None)
        self.evaluator = Evaluator(self.harness_copy, self.harness_hashes,
                                   {k: v for k, v in self.env.items() if k != "AUTORESEARCH_HANDOFF"}, judged,
                                   log=self.workdir / ".lab" / "evaluator.log")
        # the next run's Python, started while the agent works (AUTORESEARCH_PRESTART=0: never)
        self.prestart = os.environ.get("AUTORESEARCH_PRESTART", "1") != "0"
        self.prestarted: runner.Prestarted | None = None

    def make_jails(self, cache) -> tuple[sandbox.Sandbox, sandbox.Sandbox]:
        """Where runs read and write, and where the evaluator reads (it writes nothing). Runs see the
        validation files as zeros of the same size (the manifest still checks). Bytecode under a prefix
        is written by the lab's device probe and only read by runs (else one could leave an unchecked
        .pyc of prepare.py there for the next)."""
        prefix = [Path(self.env["PYTHONPYCACHEPREFIX"])] if self.env.get("PYTHONPYCACHEPREFIX") else []
        for path in prefix:
            path.mkdir(parents=True, exist_ok=True)
        directory = harness.cache_dir(cache)
        python = (Path(sys.prefix), Path(sys.base_prefix), *prefix)
        blanks = self.workdir / ".lab" / "blank"
        stand_ins = []
        for name in harness.validation_files(self.manifest):
            blank = blanks / name.replace("/", "_")
            blank.parent.mkdir(parents=True, exist_ok=True)
            with open(blank, "wb") as f:
                f.truncate(self.manifest["files"][name]["bytes"])  # sparse: no disk spent
            stand_ins.append((directory / name, blank))
        # the user's files are not the run's to read (keys, tokens, a .env beside the repository, other
        # runs): home and the repository are empty but for what the run needs from them, bound back in
        # (the worktree, the venv, the caches; the git directory, read-only, for train.py's provenance)
        git_dir = workspace.common_dir(self.workdir)
        outer = [Path.home(), git_dir.parent if git_dir.name == ".git" else None]
        hidden = (*[p for p in outer if p and p.is_dir() and p != Path("/")], self.workdir / ".lab")
        # climbmix's shards, the validation one among them, stay in the cache's downloads: not the run's
        run = sandbox.Sandbox(self.workdir, readable=(directory, git_dir, *python),
                              hidden=(*hidden, directory / "downloads"),
                              writable=(self.handoff, self.layers.mount), stand_ins=tuple(stand_ins))
        package = Path(__file__).resolve().parent  # the evaluator's own code, wherever the lab is (under /tmp too)
        scoring = sandbox.Sandbox(self.workdir, readable=(directory, self.handoff, self.harness_copy, package, *python),
                                  hidden=hidden)
        return run, scoring

    def probe(self) -> str:
        """The device's name, from the evaluator as it starts (it sees the device the runs see); where
        torch's bytecode must be written first, from a Python of the lab's own, unsandboxed."""
        if self.env.get("PYTHONPYCACHEPREFIX"):
            self.device = harness.probe_device(self.harness_copy, runner.scrubbed_env(self.env))
            return self.device
        self.evaluator.ready(self.evaluator_timeout)
        if not self.evaluator.info.get("device"):
            why = self.evaluator.tail[-1] if self.evaluator.tail else "it did not start"
            raise LabError(f"the lab's evaluator could not start Python with torch and the prepared cache: {why}")
        self.device = self.evaluator.info["device"]
        return self.device

    def start_ahead(self) -> None:
        if self.prestart and self.prestarted is None:
            self.prestarted = runner.Prestarted(self.workdir, self.env, self.jail)
        self.evaluator.start()

    def run(self, job, on_start=None, on_progress=None, should_stop=None) -> runner.RunResult:
        prestarted, self.prestarted = self.prestarted, None
        env = {**self.env, "AUTORESEARCH_SEED": str(job.seed)}
        with workspace.checked_out(self.workdir, job.commit, self.branch):
            workspace.clear_untracked(self.workdir)  # what a proposal left in ignored paths goes too
            harness.clear(self.handoff)
            self.layers.enter(job.commit)
            self.evaluator.ready(self.evaluator_timeout)  # started, imported and packed: no CPU taken from the run
            result = runner.run_training(self.workdir, job.log, env, self.timeout, on_start=on_start,
                                         on_progress=on_progress, should_stop=should_stop, prestarted=prestarted,
                                         sandbox=self.jail)
            self.layers.leave(job.commit)
            if result.status != runner.INTERRUPTED:
                self.start_ahead()  # the next run's Python imports while this one is scored and recorded
            # before the branch is checked out again, which would quietly put a tampered file back
            reason = guard.check_protected(self.workdir, self.protected)
            if result.status == runner.OK and not reason:
                self.score(result, job.log)
        if reason and result.status != runner.INTERRUPTED:
            # train.py touched the harness while it ran: the result cannot be trusted
            result.status, result.reason, result.val_bpb = ledger.REJECTED, "while running: " + reason, None
        return result

    def score(self, result: runner.RunResult, log: Path) -> None:
        """The run's hand-off scored by the evaluator; its value (or why there is none) ends the log."""
        scored = self.evaluator.score(self.program, self.evaluator_timeout)
        result.status, result.val_bpb, result.record, result.reason = \
            scored.status, scored.val_bpb, scored.record, scored.reason
        try:
            logs.end_line(log)  # what follows starts a line of its own, whatever train.py printed last
            with open(log, "a") as f:
                if scored.status == runner.OK:
                    probe = scored.record["probe"]
                    f.write(f"---\nval_bpb: {scored.val_bpb:.6f}\n# the lab's evaluator: {scored.record['eval_tokens']:,} "
                            f"tokens in {scored.record['eval_seconds']:.1f}s; causality probe of {probe['cuts']} cuts "
                            f"passed (largest change {probe['largest_change']:.2g})\n")
                else:
                    f.write(f"# the lab's evaluator: {scored.status}: {scored.reason}\n")
        except OSError:
            pass

    def close(self) -> None:
        if self.prestarted is not None:
            self.prestarted.close()
            self.prestarted = None
        self.evaluator.close()


def harness_at(workdir: Path, commit: str, files, dest: Path) -> None:
    """The harness's files as committed at `commit`, written under dest (emptied first), where no run
    reaches: what the evaluator and the device probe run, whatever a proposal did to the worktree."""
    harness.clear(dest)
    for path in files:
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(workspace.file_at(workdir, commit, path))


def make_executor(workdir: Path, st: dict, protected: dict[str, str], allowance: float | None = None,
                  workers: int | str = 1, address: str | None = None) -> Executor:
    """One worker on this machine (no Ray), or `workers` of them on Ray (ray_executor.py)."""
    if str(workers) == "1" and not address:
        return LocalExecutor(workdir, st["cache"], st["branch"], protected, st["base_commit"], allowance)
    from .ray_executor import RayExecutor
    return RayExecutor(workdir, st, protected, workers, address, allowance)
