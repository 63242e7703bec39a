"""kill -9 of the loop at several points, SIGINT and SIGTERM, then `autoresearch run` again: every
experiment recorded once, a clean tree, the branch tip at the best kept commit.
Run: uv run pytest tests/test_crash_safety.py"""
import os
import signal
import time

import pytest

from autoresearch import ledger, state
from lab_helpers import check_invariants, cli, make_repo, start_cli, variant, write_replay


def wait_for(predicate, timeout=120, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is as good as dead
        return f.read().split(") ", 1)[1][0] != "Z"


@pytest.fixture
def run(tmp_path, use_cache):
    repo = make_repo(tmp_path / "repo")
    replay = write_replay(tmp_path / "r.jsonl", [
        {"description": "better", "train_py": variant(WEIGHT=1.0, SLEEP=1.5)},
        {"description": "worse", "train_py": variant(WEIGHT=0.3, SLEEP=1.5)},
        {"description": "uniform", "train_py": variant(WEIGHT=0.0, SLEEP=1.5)},
    ])
    assert cli(repo, use_cache, "init", "--tag", "k").returncode == 0
    return repo, repo / "runs" / "k", replay, use_cache


def finish(repo, workdir, replay, cache):
    out = cli(repo, cache, "run", "--agent", f"replay:{replay}")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = check_invariants(workdir)
    assert [r["description"] for r in rows] == ["baseline", "better", "worse", "uniform"]
    assert [r["status"] for r in rows] == ["keep", "keep", "discard", "discard"]
    assert state.load(workdir)["current"] is None
    return rows


@pytest.mark.parametrize("point", ["proposed", "committed", "recorded"])
def test_kill_9_at_a_fault_point_then_resume(run, point):
    repo, workdir, replay, cache = run
    loop = start_cli(repo, cache, "run", "--agent", f"replay:{replay}", AUTORESEARCH_FAULT=point)
    marker = workdir / ".lab" / f"fault-{point}"
    wait_for(marker.exists, what=f"the loop to reach {point}")
    os.killpg(loop.pid, signal.SIGKILL)
    loop.wait()
    marker.unlink()
    finish(repo, workdir, replay, cache)


def test_kill_9_while_train_py_runs_then_resume(run):
    repo, workdir, replay, cache = run
    loop = start_cli(repo, cache, "run", "--agent", f"replay:{replay}")
    # wait until the second experiment ("better") is training
    wait_for(lambda: (state.load(workdir).get("current") or {}).get("description") == "better"
             and state.load(workdir).get("child_pgid"), what="the second experiment to start")
    child = state.load(workdir)["child_pgid"]
    os.kill(loop.pid, signal.SIGKILL)  # the loop only: its train.py lives on in its own session
    loop.wait()
    assert alive(child)
    rows = finish(repo, workdir, replay, cache)
    assert not alive(child), "the orphaned train.py was not killed on resume"
    assert sum(r["description"] == "better" for r in rows) == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_and_the_experiment_runs_again(run, sig):
    repo, workdir, replay, cache = run
    loop = start_cli(repo, cache, "run", "--agent", f"replay:{replay}")
    wait_for(lambda: (state.load(workdir).get("current") or {}).get("description") == "better"
             and state.load(workdir).get("child_pgid"), what="the second experiment to start")
    child = state.load(workdir)["child_pgid"]
    os.kill(loop.pid, sig)
    out, _ = loop.communicate(timeout=30)
    assert loop.returncode == 0, out
    assert not alive(child)
    assert "will run again" in out
    st = state.load(workdir)
    assert st["current"]["phase"] == "interrupted"
    check_invariants(workdir)
    assert len(ledger.read_rows(workdir / "results.tsv")) == 1
    finish(repo, workdir, replay, cache)


def test_two_loops_on_one_run_are_refused(run):
    repo, workdir, replay, cache = run
    loop = start_cli(repo, cache, "run", "--agent", f"replay:{replay}")
    wait_for(lambda: state.is_running(workdir) is not None, what="the loop to start")
    out = cli(repo, cache, "run", "--agent", f"replay:{replay}")
    assert out.returncode == 2 and "already running" in out.stderr
    status = cli(repo, cache, "status", "--json")
    assert '"running": true' in status.stdout
    os.killpg(loop.pid, signal.SIGKILL)
    loop.wait()
