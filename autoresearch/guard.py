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


def protection(workdir: Path, st: dict) -> dict[str, str]:
    """The protected files' hashes, from the run's base commit in git rather than from the state file,
    which must agree with git: its hashes those of the base commit, its best commit a descendant of
    the base that differs from it in train.py alone. A LabError, in one line, when they do not."""
    base, best = st["base_commit"], st["best_commit"]
    try:
        hashes = workspace.protected_hashes_at(workdir, base)
    except (workspace.LabError, ValueError):
        raise workspace.LabError(f"the run's base commit {base[:7]} is not in its repository: .lab/state.json "
                                 f"was changed; start a new run with `autoresearch init --tag NEW`") from None
    if hashes != st["protected"]:
        changed = sorted(p for p in set(hashes) | set(st["protected"]) if hashes.get(p) != st["protected"].get(p))
        raise workspace.LabError(f"the run's state does not match its base commit {base[:7]} ({changed[0]}): "
                                 f".lab/state.json was changed; start a new run with `autoresearch init --tag NEW`")
    changed = workspace.changed_between(workdir, base, best)
    if changed is None or set(changed) - {workspace.TRAIN}:
        why = "does not descend from" if changed is None else "changes more than train.py of"
        raise workspace.LabError(f"the run's best commit {best[:7]} {why} its base {base[:7]}: .lab/state.json was "
                                 f"changed; start a new run with `autoresearch init --tag NEW`")
    return hashes
