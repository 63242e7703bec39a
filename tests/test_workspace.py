"""The git layer on GitPython, on real temporary repositories: exact reads from git's objects, commits
that run no hook of the repository, a worktree per run, and no git process left behind by a long
loop or by threads working on their own worktrees.  Run: uv run pytest tests/test_workspace.py"""
import ast
import gc
import os
import subprocess
import threading
from pathlib import Path

import pytest

from autoresearch import workspace
from autoresearch.workspace import LabError
from conftest import ROOT
from lab_helpers import git


def small_repo(path: Path) -> Path:
    """train.py, prepare.py, a CRLF file without a final newline and a symlink, one commit."""
    path.mkdir(parents=True)
    (path / "train.py").write_text("x = 1\n")
    (path / "prepare.py").write_text("# harness\n")
    (path / "data.txt").write_bytes(b"a\r\nb\r\nno final newline")
    os.symlink("prepare.py", path / "link.py")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, *workspace.IDENTITY, "commit", "-qm", "start")
    return path


def git_children() -> list[str]:
    """The git processes this process has started and not reaped or ended."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(os.getpid()) and fields.get("Name", "").strip().startswith("git"):
            found.append(status.parent.name)
    return found


def test_reads_are_exact_and_hashes_from_git_match_the_checkout(tmp_path):
    repo = small_repo(tmp_path / "r")
    tip = workspace.head(repo)
    assert workspace.file_at(repo, tip, "data.txt") == "a\r\nb\r\nno final newline"
    assert workspace.protected_hashes_at(repo, tip) == workspace.protected_hashes(repo)
    assert workspace.protected_hashes(repo)["link.py"] == "link:prepare.py"
    assert "train.py" not in workspace.protected_hashes_at(repo, tip)
    with pytest.raises(LabError, match="not in that commit"):
        workspace.file_at(repo, tip, "nothing.py")
    with pytest.raises(LabError, match="no commit"):
        workspace.protected_hashes_at(repo, "0" * 40)


def test_a_commit_of_the_lab_runs_no_hook_and_changes_train_py_alone(tmp_path):
    repo = small_repo(tmp_path / "r")
    hook = repo / ".git" / "hooks"
    hook.mkdir(exist_ok=True)
    ran = tmp_path / "hook-ran"
    for name in ("pre-commit", "commit-msg", "post-commit", "prepare-commit-msg"):
        (hook / name).write_text(f"#!/bin/sh\necho {name} >> {ran}\n")
        (hook / name).chmod(0o755)
    base = workspace.head(repo)
    (repo / "train.py").write_text("x = 2\ny = 3\n")
    commit = workspace.commit_train(repo, "two lines")
    assert not ran.exists(), f"a hook ran: {ran.read_text()}"
    assert workspace.head(repo) == commit and workspace.parent_of(repo, commit) == base
    assert git(repo, "log", "-1", "--format=%an <%ae> %s") == "autoresearch <autoresearch@localhost> two lines"
    assert workspace.line_changes(repo, base, commit) == (2, 1)
    assert workspace.changed_between(repo, base, commit) == ["train.py"]
    assert workspace.changed_between(repo, commit, base) is None  # base does not descend from commit
    assert workspace.changed_paths(repo) == []
    assert subprocess.run(["git", "fsck", "--no-progress"], cwd=repo, capture_output=True).returncode == 0


def test_a_rename_names_both_paths(tmp_path):
    repo = small_repo(tmp_path / "r")
    base = workspace.head(repo)
    git(repo, "mv", "prepare.py", "renamed.py")
    git(repo, *workspace.IDENTITY, "commit", "-qm", "rename")
    assert workspace.changed_between(repo, base, workspace.head(repo)) == ["prepare.py", "renamed.py"]


def test_a_worktree_per_run_and_git_failures_in_one_line(tmp_path):
    repo = small_repo(tmp_path / "r")
    workdir = workspace.create_worktree(repo, "t")
    assert workspace.branch_of(workdir) == "autoresearch/t" and workspace.repo_root(workdir) == repo
    assert workspace.common_dir(workdir) == (repo / ".git").resolve()
    assert "/runs/" in (repo / ".git" / "info" / "exclude").read_text()
    with pytest.raises(LabError, match="exists already"):
        workspace.create_worktree(repo, "t")
    base = workspace.head(workdir)
    (workdir / "train.py").write_text("x = 3\n")
    commit = workspace.commit_train(workdir, "three")
    with workspace.checked_out(workdir, base, "autoresearch/t"):
        assert workspace.branch_of(workdir) is None and (workdir / "train.py").read_text() == "x = 1\n"
    assert workspace.branch_of(workdir) == "autoresearch/t" and workspace.head(workdir) == commit
    (workdir / ".cache").mkdir()
    (workdir / ".cache" / "x.py").write_text("left behind")
    workspace.reset_to(workdir, base)
    assert not (workdir / ".cache").exists() and workspace.head(workdir) == base
    assert git(repo, "rev-parse", "main") == base  # the user's checkout never moved
    with pytest.raises(LabError) as e:
        workspace.reset_to(workdir, "no-such-commit")
    assert "\n" not in str(e.value) and "git reset" in str(e.value)
    with pytest.raises(LabError, match="not inside a git repository"):
        workspace.repo_root(tmp_path)


def one_experiment(workdir: Path, best: str, i: int) -> str:
    """What the loop does with git for one experiment; returns the best commit after it."""
    (workdir / "train.py").write_text(f"x = {i}\n")
    commit = workspace.commit_train(workdir, f"experiment {i}")
    workspace.line_changes(workdir, best, commit)
    workspace.file_at(workdir, best)
    workspace.protected_hashes_at(workdir, commit)
    workspace.changed_between(workdir, best, commit)
    with workspace.checked_out(workdir, best, "autoresearch/t"):  # a run of the best
        workspace.protected_hashes(workdir)
    best = commit if i % 3 == 0 else best  # kept, else discarded
    workspace.reset_to(workdir, best)
    return best


def test_two_hundred_experiments_leave_no_git_process_behind(tmp_path):
    """GitPython keeps `git cat-file` processes per Repo, and a Repo in a reference cycle lives until
    the garbage collector runs: with the collector off, 200 experiments' git work leaves none."""
    workdir = workspace.create_worktree(small_repo(tmp_path / "r"), "t")
    best, most = workspace.head(workdir), 0
    gc.disable()
    try:
        for i in range(200):
            best = one_experiment(workdir, best, i)
            most = max(most, len(git_children()))
    finally:
        gc.enable()
    assert most == 0, f"up to {most} git processes were left between experiments"
    assert workspace.changed_paths(workdir) == []
    assert int(git(workdir, "rev-list", "--count", best)) == 1 + 67


def test_threads_each_with_their_own_worktree(tmp_path):
    """No Repo is shared: four threads commit and read in four worktrees of one repository at once."""
    repo = small_repo(tmp_path / "r")
    workdirs = [workspace.create_worktree(repo, f"w{i}") for i in range(4)]
    errors = []

    def work(workdir):
        try:
            for i in range(15):
                (workdir / "train.py").write_text(f"x = {i}  # {workdir.name}\n")
                commit = workspace.commit_train(workdir, f"{workdir.name} {i}")
                assert workspace.file_at(workdir, commit) == f"x = {i}  # {workdir.name}\n"
                assert workspace.changed_paths(workdir) == []
        except Exception as e:  # reported below, with the thread's worktree
            errors.append(f"{workdir.name}: {e!r}")

    threads = [threading.Thread(target=work, args=(w,)) for w in workdirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for w in workdirs:
        assert git(w, "log", "-1", "--format=%s") == f"{w.name} 14"
    assert git_children() == []
    assert subprocess.run(["git", "fsck", "--no-progress"], cwd=repo, capture_output=True).returncode == 0


def test_no_git_subprocess_in_the_package():
    """The package reaches git through GitPython alone."""
    offenders = []
    for path in (ROOT / "autoresearch").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], (ast.List, ast.Tuple)):
                first = node.args[0].elts[0] if node.args[0].elts else None
                if isinstance(first, ast.Constant) and first.value == "git":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
