"""The experiment's sandbox: every train.py the lab runs is started inside bubblewrap (`bwrap`, Linux).

Inside, train.py sees the whole file system read-only, an empty /tmp and an empty home directory of
its own (with what the run must read bound back in where it lies there: the worktree, the
repository's git directory, the prepared cache, the Python), an empty `.lab/` (the lab's state and
lock), the validation split's files as files of zeros of the same size (train.py cannot score
itself: the lab's evaluator does, in a sandbox of its own), and writes only where the lab lets it:
the run's hand-off directory and its commit's layer of the compile cache (harness.CompileLayers). It
runs in a PID namespace of its own that ends with the run (no daemon outlives it), with /proc
showing its own processes only (no other process's environment), no network, no capabilities (also
when the lab runs as root), GPU device files bound in where there are any.

Where bwrap is missing (macOS, a Linux without the package) or AUTORESEARCH_SANDBOX=0 asks, runs go
unsandboxed: `mode()` is then "none", the lab says so in one loud line and every ledger row records it.
"""
from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

BWRAP, NONE = "bwrap", "none"
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"
# device files a CUDA (or other GPU) run needs: bound in as they are
GPU_DEVICES = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/dri")


@functools.lru_cache(maxsize=None)
def _bwrap_works(path: str) -> str | None:
    """None if `bwrap` can start a sandbox like the lab's here, else why not (one line)."""
    try:
        out = subprocess.run([path, *_isolation(), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                              "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{path} did not start: {e}"
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        return f"{path} cannot make a sandbox here: {lines[-1] if lines else f'exit code {out.returncode}'}"
    return None


def _isolation() -> list[str]:
    return ["--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--cap-drop", "ALL", "--die-with-parent"]


def mode() -> str:
    """BWRAP when runs are sandboxed, else NONE (see `why_not`)."""
    return NONE if why_not() else BWRAP


def why_not() -> str | None:
    """Why runs are not sandboxed here, in one line with what to do; None when they are."""
    if os.environ.get("AUTORESEARCH_SANDBOX", "1") == "0":
        return "AUTORESEARCH_SANDBOX=0: train.py runs unsandboxed, with this user's rights"
    path = shutil.which("bwrap")
    if path is None:
        return f"bwrap not found: train.py runs unsandboxed, with this user's rights; {INSTALL_HINT}"
    reason = _bwrap_works(path)
    return f"{reason}: train.py runs unsandboxed" if reason else None


@dataclass(frozen=True)
class Sandbox:
    """Where one process may write (`writable`, bound read-write), what it must read wherever it lies
    (`readable`: under /tmp or a hidden directory too), what it must not see (`hidden`, covered by an
    empty directory) and files it sees in place of others (`stand_ins`: (file, what it sees there));
    everything else is read-only, and /tmp empty."""
    workdir: Path
    readable: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()
    hidden: tuple[Path, ...] = ()
    stand_ins: tuple[tuple[Path, Path], ...] = ()

    def wrap(self, argv: list[str]) -> list[str]:
        """argv run inside the sandbox, from the worktree (where `mode()` is BWRAP)."""
        args = [shutil.which("bwrap"), *_isolation(), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                "--tmpfs", "/tmp", "--tmpfs", "/dev/shm"]
        for pattern in GPU_DEVICES:
            for device in sorted(glob.glob(pattern)):
                args += ["--dev-bind", device, device]
        workdir = Path(self.workdir)
        hidden = [Path(p) for p in self.hidden if Path(p).is_dir()]
        # covered after what they lie in is bound: inside the worktree, or inside a readable folder
        # (a prepared cache's downloads, whose validation shard a run must not read)
        late = [p for p in hidden if any(p.is_relative_to(r) and p != Path(r) for r in self.readable)]
        inside = [p for p in hidden if p.is_relative_to(workdir) and p not in late]
        for path in [p for p in hidden if p not in inside and p not in late]:
            args += ["--tmpfs", str(path)]  # first: the worktree may lie below it (a home directory)
        if workdir.exists():
            args += ["--ro-bind", str(workdir), str(workdir)]
        for path in inside:
            args += ["--tmpfs", str(path)]
        for path in self.readable:
            if Path(path).exists():
                args += ["--ro-bind", str(path), str(path)]
        for path in late:
            args += ["--tmpfs", str(path)]
        for path, stand_in in self.stand_ins:
            args += ["--ro-bind", str(stand_in), str(path)]
        for path in self.writable:
            Path(path).mkdir(parents=True, exist_ok=True)
            args += ["--bind", str(path), str(path)]
        return args + ["--chdir", str(self.workdir), "--setenv", "TMPDIR", "/tmp", "--", *argv]


def command(jail: Sandbox | None, argv: list[str]) -> list[str]:
    """argv as it runs: inside `jail`, or as it is where there is none."""
    return jail.wrap(argv) if jail else list(argv)
