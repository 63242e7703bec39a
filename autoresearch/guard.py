"""The rules, enforced: only train.py may change, it must compile, and every other tracked file
must hash the same as when the run began, before the experiment and after it.

Each check returns the reason for a rejection as one line, or None when all is well.
"""
from __future__ import annotations

import os
from pathlib import Path

from . import workspace

MAX_TRAIN_BYTES = 256_000  # a train.py this big is a runaway edit, not research


def check_proposal(workdir: Path, protected: dict[str, str], parent_text: str | None = None) -> str | None:
    """Before the commit: the tree may differ from its commit in train.py alone."""
    workdir = Path(workdir)
    train = workdir / workspace.TRAIN
    if train.is_symlink() or not train.is_file():
        return "train.py must be a regular file (not a link, not missing)"
    if not os.path.realpath(train).startswith(os.path.realpath(workdir) + os.sep):
        return "train.py resolves outside the run's worktree"
    for code, path in workspace.changed_paths(workdir):
        if path != workspace.TRAIN:
            what = "a new file" if code == "??" else "deleted" if "D" in code else "changed"
            return f"only train.py may change: {path} is {what}"
    reason = check_protected(workdir, protected)
    if reason:
        return reason
    data = train.read_bytes()
    if len(data) > MAX_TRAIN_BYTES:
        return f"train.py is {len(data):,} bytes, over the {MAX_TRAIN_BYTES:,}-byte limit"
    try:
        source = data.decode("utf-8")
        compile(source, "train.py", "exec")
    except UnicodeDecodeError:
        return "train.py is not valid UTF-8"
    except SyntaxError as e:
        return f"train.py does not compile: {e.msg} (line {e.lineno})"
    except (ValueError, RecursionError, MemoryError, OverflowError) as e:  # null bytes, a runaway expression
        return f"train.py does not compile: {type(e).__name__}: {str(e)[:200] or 'too deeply nested or too big'}"
    if parent_text is not None and source == parent_text:
        return "train.py is unchanged: nothing to try"
    return None


def check_protected(workdir: Path, protected: dict[str, str]) -> str | None:
    """Every protected file as it was at init: prepare.py and everything else but train.py."""
    now = workspace.protected_hashes(workdir)
    for path in sorted(set(protected) | set(now)):
        if protected.get(path) != now.get(path):
            return f"{path} was modified; only train.py may change"
    return None
