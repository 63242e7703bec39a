"""The git layer: one run = one branch `autoresearch/<tag>` checked out in its own worktree under
`runs/<tag>/`, so the user's checkout is never reset under them and several runs can coexist.

The lab commits only train.py, and only resets commits it made itself (to the parent it recorded).

Every operation opens its own GitPython `Repo` and closes it before it returns (`repository`): a
Repo kept open holds `git cat-file` processes that a long loop would pile up, and a Repo is not safe
to share between threads. Worktrees go through `repo.git.worktree` (GitPython has no API for them).
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from git import Actor, BadName, BaseIndexEntry, Blob, GitCommandError, InvalidGitRepositoryError, NoSuchPathError, Repo
from gitdb import IStream

TRAIN = "train.py"
# lab files inside a worktree; kept out of git through the repository's info/exclude
LAB_IGNORES = ["/runs/", "/results.tsv", "/logs/", "/.lab/"]
AUTHOR = Actor("autoresearch", "autoresearch@localhost")  # the lab's commits
IDENTITY = ["-c", f"user.name={AUTHOR.name}", "-c", f"user.email={AUTHOR.email}"]  # the same, for git's command line
LINK_MODE, FILE_MODE = 0o120000, 0o100644


class LabError(Exception):
    """A usage problem, told to the user in one line with what to do."""


def _why(error: GitCommandError) -> str:
    """git's own complaint, one line, without GitPython's framing."""
    text = str(error.stderr or error.stdout or error).strip()
    text = re.sub(r"^(stderr|stdout): '(.*)'$", r"\2", text, flags=re.S).strip()
    return " ".join(text.split()) or f"exit status {error.status}"


@contextmanager
def repository(cwd, search_parents: bool = False) -> Iterator[Repo]:
    """The repository at cwd for one operation: git's failures as one-line LabErrors, and the Repo
    closed (its git processes ended) whatever happens."""
    try:
        repo = Repo(cwd, search_parent_directories=search_parents)
    except (InvalidGitRepositoryError, NoSuchPathError):
        raise LabError(f"{cwd} is not inside a git repository: run autoresearch from a clone of the project") from None
    try:
        yield repo
    except GitCommandError as e:
        args = " ".join(str(a) for a in e.command[1:]) if isinstance(e.command, (list, tuple)) else str(e.command)
        raise LabError(f"git {args} failed in {cwd}: {_why(e)}") from None
    finally:
        repo.close()


def repo_root(start=None) -> Path:
    """The main checkout's root, also when called from inside a run's worktree."""
    start = Path(start or Path.cwd())
    with repository(start, search_parents=True) as repo:
        common = Path(repo.common_dir).resolve()
        root = common.parent if common.name == ".git" else Path(repo.working_tree_dir or common)
    if not (root / TRAIN).exists() or not (root / "prepare.py").exists():
        raise LabError(f"{root} has no train.py and prepare.py: run autoresearch from the project's checkout")
    return root


def common_dir(cwd) -> Path:
    """The repository's git directory, shared by all its worktrees."""
    with repository(cwd) as repo:
        return Path(repo.common_dir).resolve()


TAG_RULE = "letters, digits, '.', '_' and '-'"  # what a run's tag may hold


def valid_tag(tag: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", tag) or tag.endswith(".lock") or ".." in tag:
        raise LabError(f"bad tag {tag!r}: use {TAG_RULE}")
    return tag


def ignore_lab_files(root: Path) -> None:
    exclude = common_dir(root) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    present = exclude.read_text().splitlines() if exclude.exists() else []
    missing = [p for p in LAB_IGNORES if p not in present]
    if missing:
        with open(exclude, "a") as f:
            f.write("".join(f"{p}\n" for p in missing))


def create_worktree(root: Path, tag: str) -> Path:
    branch = f"autoresearch/{valid_tag(tag)}"
    workdir = root / "runs" / tag
    with repository(root) as repo:
        if branch in [h.name for h in repo.heads] or workdir.exists():
            raise LabError(f"tag {tag!r} exists already ({branch}): pick another --tag, or continue it with "
                           f"`autoresearch run --tag {tag}`")
        ignore_lab_files(root)
        repo.git.worktree("add", "-q", "-b", branch, str(workdir), "HEAD")
    return workdir


def head(cwd) -> str:
    with repository(cwd) as repo:
        return repo.head.commit.hexsha


def parent_of(cwd, commit: str) -> str | None:
    """The commit's first parent, or None for a root commit."""
    with repository(cwd) as repo:
        parents = repo.commit(commit).parents
        return parents[0].hexsha if parents else None


def changed_paths(cwd) -> list[tuple[str, str]]:
    """(git status code, path) for every change, untracked files included, ignored ones not."""
    with repository(cwd) as repo:
        out = repo.git.status("--porcelain=v1", "-z", "--untracked-files=all", "--no-renames")
    return [(entry[:2], entry[3:]) for entry in out.split("\0") if entry]


def commit_train(cwd, message: str) -> str:
    """train.py as it is in the worktree, committed by the lab (no hook of the repository runs)."""
    data = (Path(cwd) / TRAIN).read_bytes()
    with repository(cwd) as repo:
        index = repo.index
        # the blob stored by us, so that GitPython does not change the process's directory to read the
        # file (index.add of a path does, which no thread of another worktree may see)
        blob = repo.odb.store(IStream(Blob.type, len(data), io.BytesIO(data)))
        mode = index.entries[(TRAIN, 0)].mode if (TRAIN, 0) in index.entries else FILE_MODE
        index.add([BaseIndexEntry((mode, blob.binsha, 0, TRAIN))])
        return index.commit(message, author=AUTHOR, committer=AUTHOR, skip_hooks=True).hexsha


def apply_patch(cwd, patch: Path) -> None:
    """A unified diff applied to the worktree (not the index)."""
    with repository(cwd) as repo:
        repo.git.apply("--whitespace=nowarn", str(patch))


def reset_to(cwd, commit: str) -> None:
    """Back to `commit` with a clean tree: untracked and ignored files go, the lab's own stay."""
    with repository(cwd) as repo:
        repo.head.reset(commit, index=True, working_tree=True)
    clear_untracked(cwd)


def clear_untracked(cwd) -> None:
    """Remove every file git does not track, ignored ones too (a `.cache/x.py`, a `__pycache__/*.pyc`
    that would shadow prepare.py), except the lab's own files."""
    excludes = [arg for pattern in LAB_IGNORES for arg in ("-e", pattern)]
    with repository(cwd) as repo:
        repo.git.clean("-q", "-ffdx", *excludes)


def branch_of(cwd) -> str | None:
    """The branch checked out, or None when HEAD is detached."""
    with repository(cwd) as repo:
        return None if repo.head.is_detached else repo.active_branch.name


def attach(cwd, branch: str) -> None:
    """Back on `branch` (after a run of another commit left HEAD detached); the tree is forced clean."""
    if branch_of(cwd) != branch:
        with repository(cwd) as repo:
            repo.git.checkout("-q", "-f", branch)


@contextmanager
def checked_out(cwd, commit: str, branch: str | None):
    """The worktree at `commit` for the duration (HEAD detached there if it is not the branch's tip),
    then back on the branch: a run of the best while a candidate is the tip leaves the branch alone.
    A worker's worktree has no branch (None): it stays detached at the last commit it ran."""
    if head(cwd) == commit:
        yield
        return
    with repository(cwd) as repo:
        repo.git.checkout("-q", "-f", "--detach", commit)
    try:
        yield
    finally:
        if branch is not None:
            with repository(cwd) as repo:
                repo.git.checkout("-q", "-f", branch)


def keep_commit(cwd, tag: str, number: int, commit: str) -> None:
    """A ref for experiment `number`'s commit (refs/autoresearch/<tag>/<number>): the commit lives
    off the branch while it is measured (the branch stays at the best, several may be in flight)
    and stays readable afterwards (its diff in the notebooks), whatever git's garbage collection does."""
    with repository(cwd) as repo:
        repo.git.update_ref(f"refs/autoresearch/{valid_tag(tag)}/{int(number)}", commit)


@contextmanager
def worktrees_locked(git_dir: Path) -> Iterator[None]:
    """The repository's worktree list changed by one process at a time (Ray's workers start together)."""
    with open(git_dir / "autoresearch-worktrees.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def worker_worktree(root: Path, tag: str, index: int, commit: str) -> Path:
    """Worker `index`'s own worktree for run `tag` (runs/<tag>.workers/<index>/), detached at
    `commit`: created the first time, reused after (cleaned and moved to the commit)."""
    path = Path(root) / "runs" / f"{valid_tag(tag)}.workers" / str(int(index))
    with repository(root) as repo, worktrees_locked(Path(repo.common_dir)):
        if not (path / ".git").exists():
            # one at a time: another worker's prune would take this one's entry while it is being added
            repo.git.worktree("prune")
            repo.git.worktree("add", "-q", "-f", "--detach", str(path), commit)
            return path
    with repository(path) as repo:
        repo.git.checkout("-q", "-f", "--detach", commit)
    clear_untracked(path)
    return path


def replay(cwd, parent: str, commit: str, onto: str) -> str | None:
    """train.py's change from parent to commit, applied to the worktree at `onto` (a 3-way merge);
    None when it no longer applies there (the worktree is then back at `onto`). The worktree is left
    with the change unstaged, for `commit_train`."""
    reset_to(cwd, onto)
    change = diff_text(cwd, parent, commit)
    if not change.strip():
        return None
    patch = Path(cwd) / ".lab" / "replay.diff"
    patch.parent.mkdir(parents=True, exist_ok=True)
    patch.write_text(change + "\n")
    with repository(cwd) as repo:
        try:
            repo.git.apply("--3way", "--whitespace=nowarn", str(patch))
        except GitCommandError as e:
            reason = _why(e)
        else:
            reason = None
            repo.git.reset("-q")  # the merge staged it; commit_train stages train.py itself
    if reason is not None:
        reset_to(cwd, onto)
        return reason.splitlines()[0][:200] or "it does not apply"
    return None


def line_changes(cwd, parent: str, commit: str) -> tuple[int, int]:
    """Lines added and removed in train.py from parent to commit."""
    with repository(cwd) as repo:
        out = repo.git.diff("--numstat", parent, commit, "--", TRAIN)
    if not out:
        return 0, 0
    added, removed, _ = out.split("\t", 2)
    return int(added), int(removed)


def _tree(repo: Repo, commit: str, cwd):
    try:
        return repo.commit(commit).tree
    except (BadName, ValueError) as e:
        raise LabError(f"no commit {commit[:7]} in {cwd}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None


def diff_text(cwd, parent: str, commit: str) -> str:
    """train.py's unified diff from parent to commit, as `git diff` prints it."""
    with repository(cwd) as repo:
        return repo.git.diff(parent, commit, "--", TRAIN)


def file_at(cwd, commit: str, path: str = TRAIN) -> str:
    """A file's exact text at a commit."""
    with repository(cwd) as repo:
        try:
            blob = _tree(repo, commit, cwd) / path
        except KeyError:
            raise LabError(f"cannot read {path} at {commit[:7]}: it is not in that commit") from None
        return blob.data_stream.read().decode("utf-8", "surrogateescape")


def protected_hashes_at(cwd, commit: str) -> dict[str, str]:
    """sha256 of every file but train.py in a commit's tree, read from git's objects (a symlink by its
    target): what `protected_hashes` gives for a clean checkout of that commit."""
    hashes = {}
    with repository(cwd) as repo:
        for item in _tree(repo, commit, cwd).traverse():
            if item.type == "blob" and item.path != TRAIN:
                data = item.data_stream.read()
                hashes[item.path] = "link:" + os.fsdecode(data) if item.mode == LINK_MODE \
                    else hashlib.sha256(data).hexdigest()
    return hashes


def changed_between(cwd, old: str, new: str) -> list[str] | None:
    """The paths that differ from old to new when new descends from old (or is it); None otherwise.
    A rename names both of its paths."""
    with repository(cwd) as repo:
        try:
            if not repo.is_ancestor(old, new):
                return None
        except GitCommandError:  # a name that is no commit
            return None
        paths = set()
        for d in repo.commit(old).diff(new):
            paths.update(p for p in (d.a_path, d.b_path) if p)
    return sorted(paths)


def protected_hashes(cwd) -> dict[str, str]:
    """sha256 of every tracked file except train.py, as it is on disk (a symlink by its target)."""
    with repository(cwd) as repo:
        tracked = repo.git.ls_files("-z").split("\0")
    hashes = {}
    for path in tracked:
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
