"""Runs in parallel on Ray: `autoresearch run --workers N [--ray-address ADDR]`.

`RayExecutor` implements the Executor protocol (executor.py) with `slots` = N: the scheduler calls
`run` from N threads at once, and each call hands its job to a free worker. A worker is a Ray actor
holding one GPU (`num_gpus=1`; Ray sets CUDA_VISIBLE_DEVICES) or, on a CPU, its share of the cores,
and a `LocalExecutor` over a git worktree of its own (runs/<tag>.workers/<k>/, detached at the
commit it runs): the same sandbox, evaluator, Python started ahead and guard as a single worker.
Results come back to the driver, which alone writes the ledger and moves the branch.

Without an address the lab starts a local Ray of its own; with one (or RAY_ADDRESS) it joins a
cluster (`ray start --head` on one machine, `ray start --address=HEAD:6379` on the others). Every node
must see the repository and the prepared cache at the same paths (a shared file system, or the same
clone and `autoresearch prepare` with the same arguments on each): a worker whose cache differs from
the driver's (the manifest's data hash) or that cannot see the repository is refused with that
reason. Workers whose device differs from the first one's are left out (results are local to the
hardware: no verdict compares two GPU models). AUTORESEARCH_RAY_RESOURCE=NAME asks each worker for
one unit of the custom resource NAME instead of a GPU or cores (a node label of your own; the scaling
benchmark uses it to simulate many GPUs on a few cores).

Faults: a worker that dies mid-run (its process or its node) is replaced and the run is given once to
another worker; if that one dies too, the run is a crash with the reason. A worker that does not
answer within the run's timeout (plus a margin) is killed, and the run is a timeout.
"""
from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from pathlib import Path

from . import harness, ledger, runner, sandbox
from .executor import evaluator_timeout, run_timeout
from .workspace import LabError

POLL = 0.5         # seconds between looks at a worker's progress
MARGIN = 60.0      # a worker is given its run's timeout plus this before it is deemed hung
ATTEMPTS = 2       # a run whose worker dies is given to one other worker, once
RESOURCE_ENV = "AUTORESEARCH_RAY_RESOURCE"


class Worker:
    """One Ray actor: a LocalExecutor over its own worktree, on the node Ray placed it. Threaded
    (`max_concurrency`), so that the driver can read its progress and stop it while it runs."""

    def __init__(self, root: str, tag: str, index: int, cache: str, data_hash: str, protected: dict,
                 base: str, allowance: float | None):
        from . import workspace
        from .executor import LocalExecutor
        self.name = f"{socket.gethostname()}/{index}"
        if not Path(root, ".git").exists():
            raise LabError(f"worker {self.name} cannot see the repository at {root}: every node needs it at the same "
                           f"path (a shared file system)")
        try:
            mine = harness.read_manifest(cache)["data_hash"]
        except LabError as e:
            raise LabError(f"worker {self.name} has no usable prepared cache at {cache}: {e}") from None
        if mine != data_hash:
            raise LabError(f"worker {self.name}: its prepared cache at {cache} differs from the driver's (data "
                           f"{mine[:12]} against {data_hash[:12]}): give every node the same cache (a shared file "
                           f"system, or `autoresearch prepare` with the same arguments on each node)")
        workdir = workspace.worker_worktree(Path(root), tag, index, base)
        self.executor = LocalExecutor(workdir, cache, None, protected, base, allowance)
        self.progress: queue.SimpleQueue = queue.SimpleQueue()  # the run's, for the driver to read
        self.prune_reason: str | None = None
        self.stop = False
        self.lock = threading.Lock()  # start_ahead comes on another of the actor's threads than run
        self.running = False

    def probe(self) -> tuple[str, str, str]:
        return self.name, self.executor.probe(), self.executor.sandbox

    def start_ahead(self) -> None:
        """While the worker waits for its next job only (a run starts the next Python itself)."""
        with self.lock:
            if not self.running:
                self.executor.start_ahead()

    def run(self, job) -> runner.RunResult:
        with self.lock:
            self.running, self.prune_reason, self.stop = True, None, False
        try:
            return self._run(job)
        finally:
            with self.lock:
                self.running = False

    def _run(self, job) -> runner.RunResult:

        def on_progress(p):
            self.progress.put(p)
            return self.prune_reason

        return self.executor.run(job, on_progress=on_progress, should_stop=lambda: self.stop)

    def progress_since(self) -> list:
        out = []
        while not self.progress.empty():
            out.append(self.progress.get())
        return out

    def halt(self, prune_reason: str | None) -> None:
        """Stop the run: pruned with the reason, or interrupted (None)."""
        if prune_reason:
            self.prune_reason = prune_reason
        else:
            self.stop = True

    def close(self) -> None:
        self.executor.close()


def import_ray():
    """Ray, without its `uv run` integration: under `uv run` (the README's commands) Ray would copy the
    working directory, venv and runs included (gigabytes), into every session and start each worker
    through `uv run`. The workers need neither: they see the repository and the venv at the same paths.
    Ray reads its switch (RAY_ENABLE_UV_RUN_RUNTIME_ENV) from the environment once, at its first import,
    and its constant at each ray.init: the constant is set, whoever imported Ray first."""
    import ray
    from ray._private import ray_constants
    ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False
    return ray


class RayExecutor:
    def __init__(self, workdir: Path, state: dict, protected: dict[str, str], workers: int | str,
                 address: str | None = None, allowance: float | None = None):
        ray = self.ray = import_ray()
        self.state, self.protected, self.allowance = state, protected, allowance
        manifest = harness.read_manifest(state["cache"])
        budget = manifest["constants"]["TIME_BUDGET"]
        # a run on a worker: its evaluator ready, train.py, its scoring
        train = run_timeout(budget, allowance)
        self.timeout = train + 2 * evaluator_timeout(train) + MARGIN
        self.data_hash = manifest["data_hash"]
        address = address or os.environ.get("RAY_ADDRESS") or None
        self.started_ray = not ray.is_initialized()
        if self.started_ray:
            options = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if address is None:  # a local Ray of the lab's own, not whatever `ray start` left running here
                address = "local"
                options["object_store_memory"] = 200 * 1024 ** 2  # the runs pass small results only
            logging.getLogger("ray").setLevel(logging.ERROR)  # its banners are not the lab's to print
            try:
                ray.init(address=address, **options)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise LabError(f"cannot reach the Ray cluster at {address}: {str(e).splitlines()[0]}; start it with "
                               f"`ray start --head` or leave --ray-address out for a local one") from None
        total = ray.cluster_resources()
        self.slots = count_workers(workers, total)
        self.actor_class = ray.remote(**worker_options(total, self.slots), max_concurrency=4)(Worker)
        self.device: str | None = None
        self.sandbox = sandbox.mode()
        self.idle: queue.SimpleQueue = queue.SimpleQueue()
        self.workers: list = []
        self.names: dict = {}
        self.next_index = 0
        self.notes: list[str] = []

    # --- workers ---------------------------------------------------------------------------------

    def spawn(self):
        """A new worker actor (its worktree made on its node); its probe not yet waited for."""
        self.next_index += 1
        st = self.state
        actor = self.actor_class.remote(
            st["root"], st["tag"], self.next_index, st["cache"], self.data_hash, self.protected, st["base_commit"],
            self.allowance)
        return actor, actor.probe.remote()

    def probe(self) -> str:
        """Start the workers; the device of the first is the run's, workers on another are left out."""
        pending = [self.spawn() for _ in range(self.slots)]
        for actor, ref in pending:
            try:
                name, device, mode = self.ray.get(ref, timeout=self.timeout)
            except self.ray.exceptions.RayError as e:
                raise LabError(f"a Ray worker could not start: {cause(e)}") from None
            if self.device is None:
                self.device, self.sandbox = device, mode
            if device != self.device or mode != self.sandbox:
                self.notes.append(f"worker {name} runs on {device} ({mode}), not {self.device} ({self.sandbox}): "
                                  f"left out, results are local to the hardware")
                self.kill(actor)
                continue
            self.names[actor] = name
            self.workers.append(actor)
            self.idle.put(actor)
        self.slots = len(self.workers)
        return self.device

    def replace(self, dead):
        """A worker in place of one that died (same device, else none). While the new one waits to be
        placed, Ray is watched: with no live node left (a local Ray whose raylet was killed, a cluster
        whose nodes are gone) nothing can run, and the loop stops with LabError, resumable."""
        if dead in self.workers:
            self.workers.remove(dead)
        self.kill(dead)
        self.require_live_node()
        actor, ref = self.spawn()
        t0 = time.time()
        while not self.ray.wait([ref], timeout=4 * POLL)[0]:
            if time.time() - t0 > self.timeout:
                self.kill(actor)
                return None
            try:
                self.require_live_node()
            except LabError:
                self.kill(actor)
                raise
        try:
            name, device, mode = self.ray.get(ref)
        except self.ray.exceptions.RayError:
            return None
        if device != self.device:
            self.kill(actor)
            return None
        self.names[actor] = name
        self.workers.append(actor)
        return actor

    def require_live_node(self) -> None:
        try:
            alive = any(node.get("Alive") for node in self.ray.nodes())
        except Exception:  # its control store is gone too
            alive = False
        if not alive:
            raise LabError("Ray has no live node left (its raylet was stopped, or the cluster's nodes are gone): the "
                           "loop stops here; start the cluster again if it is one, then `autoresearch run` resumes "
                           "the runs in flight")

    def kill(self, actor) -> None:
        try:
            self.ray.kill(actor)
        except Exception:  # already gone: what we wanted
            pass

    def start_ahead(self) -> None:
        for actor in self.workers:
            actor.start_ahead.remote()

    # --- one run ---------------------------------------------------------------------------------

    def run(self, job, on_start=None, on_progress=None, should_stop=None) -> runner.RunResult:
        """The job on a free worker, with its progress streamed back; given once to another worker
        if the first one dies."""
        reasons = []
        for _ in range(ATTEMPTS):
            actor = self.free_worker()
            if actor is None:
                return runner.RunResult(status=ledger.CRASH, seconds=0.0, reason="; ".join(
                    reasons + ["no Ray worker is left (none could be started in place of the dead)"]))
            try:
                result = self.attempt(actor, job, on_start, on_progress, should_stop)
            except self.ray.exceptions.RayActorError as e:
                reasons.append(f"worker {self.names.get(actor, '?')} died: {cause(e)}")
                if should_stop and should_stop():  # the loop is stopping (a Ctrl-C reached the worker too)
                    return runner.RunResult(status=runner.INTERRUPTED, seconds=0.0, reason=reasons[-1])
                actor = self.replace(actor)
                if actor is not None:
                    self.idle.put(actor)
                continue
            except self.ray.exceptions.RayTaskError as e:  # the lab's own code failed there: said, not retried
                self.idle.put(actor)
                return runner.RunResult(status=ledger.CRASH, seconds=0.0,
                                        reason=f"worker {self.names.get(actor, '?')}: {cause(e)}")
            except Hung as e:
                self.kill(actor)
                actor = self.replace(actor)
                if actor is not None:
                    self.idle.put(actor)
                return runner.RunResult(status=ledger.TIMEOUT, seconds=e.seconds, reason=str(e))
            self.idle.put(actor)
            if reasons and not result.reason:
                result.reason = f"run again on another worker: {reasons[0]}"
            return result
        return runner.RunResult(status=ledger.CRASH, seconds=0.0, reason="; ".join(reasons) + " (given to a second "
                                                                                              "worker, which died too)")

    def free_worker(self):
        """The next worker to finish what it runs, or None once none is left."""
        while True:
            try:
                return self.idle.get(timeout=1.0)
            except queue.Empty:
                if not self.workers:
                    return None

    def attempt(self, actor, job, on_start, on_progress, should_stop) -> runner.RunResult:
        ref, t0, halted = actor.run.remote(job), time.time(), False
        if on_start:
            on_start(None, self.names.get(actor))
        while True:
            ready, _ = self.ray.wait([ref], timeout=POLL)
            for progress in self.ray.get(actor.progress_since.remote(), timeout=self.timeout):
                if on_progress and not halted:
                    reason = on_progress(progress)
                    if reason:
                        actor.halt.remote(reason)
                        halted = True
            if ready:
                result = self.ray.get(ref)
                result.worker = self.names.get(actor, "")
                return result
            if should_stop and should_stop() and not halted:
                actor.halt.remote(None)
                halted = True
            if time.time() - t0 > self.timeout:
                raise Hung(f"worker {self.names.get(actor)} did not answer within {self.timeout:.0f}s", time.time() - t0)

    def close(self) -> None:
        for actor in self.workers:
            try:
                self.ray.get(actor.close.remote(), timeout=30)
            except self.ray.exceptions.RayError:
                pass
            self.kill(actor)
        self.workers = []
        if self.started_ray:
            self.ray.shutdown()


class Hung(Exception):
    def __init__(self, message: str, seconds: float):
        super().__init__(message)
        self.seconds = seconds


def cause(error: Exception) -> str:
    """A Ray error's own first line, without its framing."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    mine = [ln for ln in lines if "LabError" in ln]
    text = mine[-1].split("LabError:", 1)[-1].strip() if mine else (lines[0] if lines else type(error).__name__)
    return text[:300]


def count_workers(workers: int | str, total: dict) -> int:
    """--workers N, or `auto`: one per GPU of the cluster (1 without a GPU)."""
    if workers == "auto":
        return max(1, int(total.get("GPU", 0)))
    try:
        n = int(workers)
    except ValueError:
        raise LabError(f"--workers {workers!r}: give a number of workers or `auto`") from None
    if n < 1:
        raise LabError(f"--workers {n}: give at least 1")
    return n


def worker_options(total: dict, workers: int) -> dict:
    """What one worker asks Ray for: a custom resource (AUTORESEARCH_RAY_RESOURCE), a GPU, or its share
    of the cores."""
    name = os.environ.get(RESOURCE_ENV)
    if name:
        if total.get(name, 0) < 1:
            raise LabError(f"{RESOURCE_ENV}={name}: the Ray cluster has no such resource (start its nodes with "
                           f"`ray start --resources '{{\"{name}\": N}}'`)")
        return dict(num_cpus=0, resources={name: 1})
    if total.get("GPU", 0) >= 1:
        return dict(num_gpus=1, num_cpus=total.get("CPU", 1) / total["GPU"])
    return dict(num_cpus=total.get("CPU", 1) / workers)  # a share: every worker fits, however many
