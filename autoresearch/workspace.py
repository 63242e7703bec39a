"""The git layer: one run = one branch `autoresearch/<tag>` checked out in its own worktree under
`runs/<tag>/`, so the user's checkout is never reset under them and several runs can coexist.

The lab commits only train.py, and only resets commits it made itself (to the parent it recorded).
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path

TRAIN = "train.py"
# lab files inside a worktree; kept out of git through the repository's info/exclude
LAB_IGNORES = ["/runs/", "/results.tsv", "/logs/", "/.lab/"]
IDENTITY = ["-c", "user.name=autoresearch", "-c", "user.email=autoresearch@localhost"]


class LabError(Exception):
    """A usage problem, told to the user in one line with what to do."""


def git(cwd, *args, check=True) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise LabError(f"git {' '.join(args)} failed in {cwd}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout.strip()


def repo_root(start=None) -> Path:
    """The main checkout's root, also when called from inside a run's worktree."""
    start = Path(start or Path.cwd())
    out = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=start,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise LabError(f"{start} is not inside a git repository: run autoresearch from a clone of the project")
    common = Path(out.stdout.strip())
    root = common.parent if common.name == ".git" else Path(git(start, "rev-parse", "--show-toplevel"))
    if not (root / TRAIN).exists() or not (root / "prepare.py").exists():
        raise LabError(f"{root} has no train.py and prepare.py: run autoresearch from the project's checkout")
    return root


def valid_tag(tag: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", tag) or tag.endswith(".lock") or ".." in tag:
        raise LabError(f"bad tag {tag!r}: use letters, digits, '.', '_' and '-'")
    return tag


def ignore_lab_files(root: Path) -> None:
    exclude = Path(git(root, "rev-parse", "--path-format=absolute", "--git-path", "info/exclude"))
    exclude.parent.mkdir(parents=True, exist_ok=True)
    present = exclude.read_text().splitlines() if exclude.exists() else []
    missing = [p for p in LAB_IGNORES if p not in present]
    if missing:
        with open(exclude, "a") as f:
            f.write("".join(f"{p}\n" for p in missing))


def create_worktree(root: Path, tag: str) -> Path:
    branch = f"autoresearch/{valid_tag(tag)}"
    workdir = root / "runs" / tag
    if git(root, "branch", "--list", branch) or workdir.exists():
        raise LabError(f"tag {tag!r} exists already ({branch}): pick another --tag, or continue it with "
                       f"`autoresearch run --tag {tag}`")
    ignore_lab_files(root)
    git(root, "worktree", "add", "-q", "-b", branch, str(workdir), "HEAD")
    return workdir


def head(cwd) -> str:
    return git(cwd, "rev-parse", "HEAD")


def changed_paths(cwd) -> list[tuple[str, str]]:
    """(git status code, path) for every change, untracked files included, ignored ones not."""
    out = subprocess.run(["git", "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames"],
                         cwd=cwd, capture_output=True, text=True, check=True).stdout
    return [(entry[:2], entry[3:]) for entry in out.split("\0") if entry]


def commit_train(cwd, message: str) -> str:
    git(cwd, "add", "--", TRAIN)
    git(cwd, *IDENTITY, "commit", "-q", "--no-verify", "-m", message, "--", TRAIN)
    return head(cwd)


def reset_to(cwd, commit: str) -> None:
    """Back to `commit` with a clean tree: untracked and ignored files go, the lab's own stay."""
    git(cwd, "reset", "-q", "--hard", commit)
    clear_untracked(cwd)


def clear_untracked(cwd) -> None:
    """Remove every file git does not track, ignored ones too (a `.cache/x.py`, a `__pycache__/*.pyc`
    that would shadow prepare.py), except the lab's own files."""
    excludes = [arg for pattern in LAB_IGNORES for arg in ("-e", pattern)]
    git(cwd, "clean", "-q", "-ffdx", *excludes)


def branch_of(cwd) -> str | None:
    """The branch checked out, or None when HEAD is detached."""
    name = git(cwd, "rev-parse", "--abbrev-ref", "HEAD")
    return None if name == "HEAD" else name


def attach(cwd, branch: str) -> None:
    """Back on `branch` (after a run of another commit left HEAD detached); the tree is forced clean."""
    if branch_of(cwd) != branch:
        git(cwd, "checkout", "-q", "-f", branch)


@contextmanager
def checked_out(cwd, commit: str, branch: str):
    """The worktree at `commit` for the duration (HEAD detached there if it is not the branch's tip),
    then back on the branch: a run of the best while a candidate is the tip leaves the branch alone."""
    if head(cwd) == commit:
        yield
        return
    git(cwd, "checkout", "-q", "--detach", commit)
    try:
        yield
    finally:
        git(cwd, "checkout", "-q", "-f", branch)


def line_changes(cwd, parent: str, commit: str) -> tuple[int, int]:
    """Lines added and removed in train.py from parent to commit."""
    out = git(cwd, "diff", "--numstat", parent, commit, "--", TRAIN)
    if not out:
        return 0, 0
    added, removed, _ = out.split("\t", 2)
    return int(added), int(removed)


def file_at(cwd, commit: str, path: str = TRAIN) -> str:
    """A file's exact text at a commit."""
    out = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise LabError(f"cannot read {path} at {commit[:7]}: {out.stderr.strip()}")
    return out.stdout


def protected_hashes_at(cwd, commit: str) -> dict[str, str]:
    """sha256 of every file but train.py in a commit's tree, read from git's objects (a symlink by its
    target): what `protected_hashes` gives for a clean checkout of that commit."""
    entries = []
    for entry in git(cwd, "ls-tree", "-r", "-z", "--full-tree", commit).split("\0"):
        if entry:
            meta, path = entry.split("\t", 1)
            mode, kind, blob = meta.split()
            if kind == "blob" and path != TRAIN:
                entries.append((path, mode, blob))
    out = subprocess.run(["git", "cat-file", "--batch"], cwd=cwd, input="".join(f"{b}\n" for _, _, b in entries).encode(),
                         capture_output=True, check=True).stdout
    hashes, at = {}, 0
    for path, mode, _ in entries:
        header_end = out.index(b"\n", at)
        size = int(out[at:header_end].split()[2])
        content = out[header_end + 1:header_end + 1 + size]
        at = header_end + 1 + size + 1  # the content, then a newline
        hashes[path] = "link:" + content.decode() if mode == "120000" else hashlib.sha256(content).hexdigest()
    return hashes


def changed_between(cwd, old: str, new: str) -> list[str] | None:
    """The paths that differ from old to new when new descends from old (or is it); None otherwise."""
    if subprocess.run(["git", "merge-base", "--is-ancestor", old, new], cwd=cwd, capture_output=True).returncode:
        return None
    return [p for p in git(cwd, "diff", "--name-only", "-z", old, new).split("\0") if p]


def protected_hashes(cwd) -> dict[str, str]:
    """sha256 of every tracked file except train.py, as it is on disk (a symlink by its target)."""
    hashes = {}
    for path in git(cwd, "ls-files", "-z").split("\0"):
        if not path or path == TRAIN:
            continue
        full = Path(cwd) / path
        if full.is_symlink():
            hashes[path] = "link:" + os.readlink(full)
        elif full.is_file():
            hashes[path] = hashlib.sha256(full.read_bytes()).hexdigest()
        else:
            hashes[path] = "missing"
    return hashes
