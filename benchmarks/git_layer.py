"""The git layer's cost per experiment: this tree's workspace.py (GitPython, a Repo per operation)
beside a reference commit's, in one run, rounds alternating.

One "experiment" is what the lab asks of git for one: commit train.py, its line stats, the parent's
train.py, the protected hashes from git's objects and from the worktree, the descent check, the
status, a run of the best with HEAD detached, a reset. Each tree works on its own fresh repository
(30 protected files, as the project has about that many).

    uv run benchmarks/git_layer.py [--reference COMMIT] [--experiments 40] [--rounds 5]
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = "6836670"  # the last commit with subprocess git


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fresh_run(ws, base: Path) -> Path:
    repo = base / "repo"
    repo.mkdir(parents=True)
    (repo / "train.py").write_text("x = 0\n")
    (repo / "prepare.py").write_text("# harness\n")
    for i in range(30):
        (repo / f"file{i}.py").write_text(f"value = {i}\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], [*ws.IDENTITY, "commit", "-qm", "start"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    return ws.create_worktree(repo, "bench")


def experiments(ws, workdir: Path, count: int) -> float:
    """Seconds per experiment, median over `count`."""
    best, times = ws.head(workdir), []
    for i in range(count):
        t0 = time.perf_counter()
        (workdir / "train.py").write_text(f"x = {i + 1}\n")
        commit = ws.commit_train(workdir, f"experiment {i}")
        ws.line_changes(workdir, best, commit)
        ws.file_at(workdir, best)
        ws.protected_hashes_at(workdir, commit)
        ws.changed_between(workdir, best, commit)
        ws.protected_hashes(workdir)
        ws.changed_paths(workdir)
        with ws.checked_out(workdir, best, "autoresearch/bench"):
            ws.protected_hashes(workdir)
        best = commit if i % 3 == 0 else best
        ws.reset_to(workdir, best)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", default=DEFAULT_REFERENCE, help="the commit whose workspace.py to compare with")
    p.add_argument("--experiments", type=int, default=40)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = tmp / "reference_workspace.py"
        old.write_text(subprocess.run(["git", "show", f"{args.reference}:autoresearch/workspace.py"], cwd=ROOT,
                                      check=True, capture_output=True, text=True).stdout)
        trees = {f"reference {args.reference}": load(old, "reference_workspace"),
                 "this tree": load(ROOT / "autoresearch" / "workspace.py", "this_workspace")}
        medians = {name: [] for name in trees}
        for r in range(args.rounds):
            for name, ws in (trees.items() if r % 2 == 0 else reversed(trees.items())):
                workdir = fresh_run(ws, tmp / f"{r}-{name.split()[0]}")
                medians[name].append(experiments(ws, workdir, args.experiments))
    ref, ours = (statistics.median(v) * 1000 for v in medians.values())
    print(f"{args.rounds} rounds of {args.experiments} experiments, median of the rounds' medians")
    print("| git layer | ms per experiment | ratio |")
    print("| --- | --- | --- |")
    print(f"| reference {args.reference} (subprocess git) | {ref:.1f} | 1.00 |")
    print(f"| this tree | {ours:.1f} | {ours / ref:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
