"""The run's small state file, `<worktree>/.lab/state.json`, and the lock a running loop holds.

Together with git and results.tsv it is all a run is: a loop killed at any moment restarts from
these three. Writes are atomic (a temporary file, fsync, rename).
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from .workspace import LabError


def lab_dir(workdir: Path) -> Path:
    return Path(workdir) / ".lab"


def load(workdir: Path) -> dict:
    """The state; a missing or unreadable file is a LabError that says what to do."""
    path = lab_dir(workdir) / "state.json"
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or "best_commit" not in state:
            raise ValueError("not a run's state")
    except FileNotFoundError:
        raise LabError(f"{path} is missing: {workdir} is not a run (create one with `autoresearch init`)") from None
    except (OSError, ValueError) as e:
        raise LabError(f"{path} is unreadable ({str(e)[:80]}): the run's results.tsv and branch are intact; start "
                       f"a new run with `autoresearch init --tag NEW`") from None
    return state


def save(workdir: Path, state: dict) -> None:
    path = lab_dir(workdir) / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunLock:
    """An exclusive flock on `.lab/lock` for as long as a loop runs; the kernel drops it when the
    process dies, however it dies, so a stale lock cannot block a restart."""

    def __init__(self, workdir: Path):
        self.path = lab_dir(workdir) / "lock"
        self.fd = None

    def acquire(self, wait: float = 0.0) -> bool:
        """Take the lock; `wait` seconds of retries ride out a status probe holding it an instant."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.time() + wait
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() >= deadline:
                    os.close(self.fd)
                    self.fd = None
                    return False
                time.sleep(0.05)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def is_running(workdir: Path) -> int | None:
    """The pid of the loop running on this worktree, or None."""
    lock = RunLock(workdir)
    if not lock.path.exists():
        return None
    if lock.acquire():
        lock.release()
        return None
    try:
        return int(lock.path.read_text().strip() or 0) or -1
    except (OSError, ValueError):
        return -1


def runs_of(exp: dict) -> list[dict]:
    """An experiment's runs in flight (each: target, commit, seed, role, attempts, started; pgid and
    worker once it started; queued when the loop that ran it stopped). A state written before an
    experiment could have several named its one run "run"."""
    if "runs" not in exp:
        exp["runs"] = [exp["run"]] if exp.get("run") else []
        exp.pop("run", None)
    return exp["runs"]


def running(exp: dict) -> list[dict]:
    """The runs of `exp` in flight in this loop (not those a stopped loop left to run again)."""
    return [r for r in runs_of(exp) if not r.get("queued")]


def child_groups(st: dict) -> list[int]:
    """The process groups of the runs in flight (train.py started here), for whoever must end them."""
    groups = [st.get("child_pgid")] + [r.get("pgid") for e in st.get("experiments", []) for r in runs_of(e)]
    return [g for g in groups if isinstance(g, int) and g > 0]
