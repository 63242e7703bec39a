"""kill -9 of the loop at several points, SIGINT and SIGTERM, then `autoresearch run` again: every
run recorded once, every experiment judged once, a clean tree, the branch tip at the best kept commit.
The new phases too: a confirmation, a control of the best and an early abort, each killed and resumed.
Run: uv run pytest tests/test_crash_safety.py"""
import os
import signal

import pytest

from autoresearch import ledger, sandbox, state
from lab_helpers import check_invariants, cli, make_repo, start_cli, variant, verdicts, write_replay, wait_for


TWO_BASELINE_RUNS = ("--baseline-runs", "2")  # the loop's phases, not the noise: 2 runs show there is none



def in_flight(workdir):
    """The experiment in flight, as the state file names it ({} when none)."""
    experiments = state.load(workdir).get("experiments") or []
    return experiments[0] if experiments else {}


def run_of(workdir) -> dict:
    """The run in flight (one at a time with one worker)."""
    return next(iter(in_flight(workdir).get("runs", [])), {})


def child_of(workdir):
    """The process group of the run in flight, once it started (None before)."""
    return run_of(workdir).get("pgid")


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
    ])
    assert cli(repo, use_cache, "init", "--tag", "k").returncode == 0
    return repo, repo / "runs" / "k", replay, use_cache


def finish(repo, workdir, replay, cache):
    out = cli(repo, cache, "run", "--agent", f"replay:{replay}", *TWO_BASELINE_RUNS)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = verdicts(check_invariants(workdir))
    assert [r["description"] for r in rows] == ["baseline", "better", "worse"]
    assert [r["status"] for r in rows] == ["keep", "keep", "discard"]
    assert state.load(workdir)["experiments"] == []
    return rows


def test_kill_9_at_each_fault_point_then_resume(run):
    """One run killed at each point in turn, resumed each time: once the baseline's first run is
    recorded, once the next proposal is applied, once its commit is made. Then it finishes as if
    nothing had happened."""
    repo, workdir, replay, cache = run
    for point in ("recorded", "proposed", "committed"):
        loop = start_cli(repo, cache, "run", "--agent", f"replay:{replay}", *TWO_BASELINE_RUNS,
                         AUTORESEARCH_FAULT=point)
        marker = workdir / ".lab" / f"fault-{point}"
        wait_for(marker.exists, what=f"the loop to reach {point}")
        os.killpg(loop.pid, signal.SIGKILL)
        loop.wait()
        marker.unlink()
    finish(repo, workdir, replay, cache)


@pytest.mark.parametrize("sandboxed", [True, False], ids=["sandboxed", "unsandboxed"])
def test_kill_9_while_train_py_runs_then_resume(run, sandboxed):
    if sandboxed and sandbox.mode() != sandbox.BWRAP:
        pytest.skip(f"no sandbox here: {sandbox.why_not()}")
    repo, workdir, replay, cache = run
    mode = {} if sandboxed else {"AUTORESEARCH_SANDBOX": "0"}
    loop = start_cli(repo, cache, "run", "--agent", f"replay:{replay}", *TWO_BASELINE_RUNS, **mode)
    # wait until the second experiment ("better") is training
    wait_for(lambda: in_flight(workdir).get("description") == "better"
             and child_of(workdir), what="the second experiment to start")
    child = child_of(workdir)
    os.kill(loop.pid, signal.SIGKILL)  # the loop only: its train.py runs in its own session
    loop.wait()
    if sandboxed:  # the sandbox dies with the loop, every process in it
        wait_for(lambda: not alive(child), what="the sandboxed train.py to end with its loop")
    else:  # it lives on, until the next loop on the run kills it
        assert alive(child)
    rows = finish(repo, workdir, replay, cache)
    assert not alive(child), "the orphaned train.py was not killed on resume"
    assert sum(r["description"] == "better" for r in rows) == 1


def test_signals_stop_cleanly_and_the_experiment_runs_again(run):
    """SIGINT while "better" trains, then SIGTERM while "worse" trains: each time the loop stops at
    once with its train.py, records nothing of the run it stopped, and the next loop runs it again."""
    repo, workdir, replay, cache = run
    for sig, description, rows_before in ((signal.SIGINT, "better", 2), (signal.SIGTERM, "worse", 4)):
        loop = start_cli(repo, cache, "run", "--agent", f"replay:{replay}", *TWO_BASELINE_RUNS)
        wait_for(lambda: in_flight(workdir).get("description") == description
                 and child_of(workdir), what=f"{description} to start")
        child = child_of(workdir)
        os.kill(loop.pid, sig)
        out, _ = loop.communicate(timeout=30)
        assert loop.returncode == 0, out
        assert not alive(child)
        assert "will run again" in out
        assert in_flight(workdir)["phase"] == "interrupted"
        check_invariants(workdir)
        assert len(ledger.read_rows(workdir / "results.tsv")) == rows_before
    finish(repo, workdir, replay, cache)


def test_two_loops_on_one_run_are_refused(run):
    """A second loop (or `noise`) on a running loop's run is refused before it touches the run's files:
    the harness copy the running loop's evaluator and device probe run stays as that loop wrote it."""
    repo, workdir, replay, cache = run
    loop = start_cli(repo, cache, "run", "--agent", f"replay:{replay}", *TWO_BASELINE_RUNS)
    copy = workdir / ".lab" / "harness"
    wait_for(lambda: state.is_running(workdir) is not None and child_of(workdir), what="the baseline to train")
    written = {p: p.stat().st_mtime_ns for p in copy.rglob("*.py")}
    for command in (("run", "--agent", f"replay:{replay}"), ("noise", "--repeats", "1")):
        out = cli(repo, cache, *command)
        assert out.returncode == 2 and "already running" in out.stderr, out.stderr
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*.py")} == written
    status = cli(repo, cache, "status", "--json")
    assert '"running": true' in status.stdout
    os.killpg(loop.pid, signal.SIGKILL)
    loop.wait()


# --- the phases of a noise-aware verdict -------------------------------------------------------------

# the stand-in's weight moves with the seed, so a small gain needs runs at more seeds to be shown
NOISY = dict(NOISE=0.05, SLEEP=0.6)
CURVE = tuple(8.0 - 0.3 * k for k in range(10))
PROPOSALS = [
    {"description": "a little better", "train_py": variant(WEIGHT=0.56, LOSSES=CURVE, **NOISY)},
    {"description": "diverges", "train_py": variant(LOSSES=tuple(8.0 + 0.5 * k for k in range(10)), **NOISY)},
]
CONTROLS = ("--control-every", "2")  # experiment 2 starts with a control run of the best


def noisy_run(base, cache):
    repo = make_repo(base / "repo", variant(LOSSES=CURVE, **NOISY))
    replay = write_replay(base / "r.jsonl", PROPOSALS)
    assert cli(repo, cache, "init", "--tag", "n").returncode == 0
    return repo, repo / "runs" / "n", replay


def resume_noisy(repo, workdir, replay, cache):
    out = cli(repo, cache, "run", "--agent", f"replay:{replay}", *CONTROLS)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = check_invariants(workdir)
    ended = verdicts(rows)
    assert [(r["description"], r["status"]) for r in ended] == [
        ("baseline", "keep"), ("a little better", "keep"), ("diverges", "pruned")]
    assert "pruned at 30% of the budget" in ended[2]["reason"]
    assert state.load(workdir)["experiments"] == []
    return rows


def signature(rows):
    return [(r["experiment"], r["role"], r["seed"], r["status"], r["run_bpb"]) for r in rows]


def test_kill_9_during_a_control_a_confirmation_and_an_early_abort_then_resume(tmp_path, use_cache):
    """One replay killed four times: while its control of the best trains, once a confirmation is
    recorded (before the loop moved on), while the next confirmation trains, and once the early abort
    is recorded. Every run is recorded once, exactly as in the same replay left alone."""
    repo, workdir, replay = noisy_run(tmp_path / "killed", use_cache)

    def start(**fault):
        return start_cli(repo, use_cache, "run", "--agent", f"replay:{replay}", *CONTROLS, **fault)

    def kill_at(point):
        loop = start(AUTORESEARCH_FAULT=point)
        marker = workdir / ".lab" / f"fault-{point}"
        wait_for(marker.exists, timeout=240, what=f"the loop to reach {point}")
        os.killpg(loop.pid, signal.SIGKILL)
        loop.wait()
        marker.unlink()

    def kill_while(role):
        """kill -9 of the loop alone while a run of this role trains; returns that run and its pid."""
        loop = start()
        wait_for(lambda: run_of(workdir).get("role") == role
                 and child_of(workdir), timeout=240, what=f"a {role} run to train")
        run, child = run_of(workdir), child_of(workdir)
        os.kill(loop.pid, signal.SIGKILL)  # its train.py lives on in its own session
        loop.wait()
        return run, child

    control, child = kill_while("control")
    kill_at("recorded-confirm")
    assert not alive(child), "the orphaned control was not killed on resume"
    assert [r["role"] for r in ledger.read_rows(workdir / "results.tsv")][-1] == "confirm"
    confirm, child = kill_while("confirm")
    kill_at("recorded-pruned")
    assert not alive(child), "the orphaned confirmation was not killed on resume"
    rows = resume_noisy(repo, workdir, replay, use_cache)
    for run in (control, confirm):
        again = [r for r in rows if (r["experiment"], r["commit"], r["seed"]) ==
                 ("2", run["commit"][:7], str(run["seed"]))]
        assert len(again) == 1 and again[0]["role"] == run["role"]
    roles = [r["role"] for r in rows]
    assert roles.count("control") == 1 and roles.count("confirm") >= 2

    alone = noisy_run(tmp_path / "alone", use_cache)
    assert signature(rows) == signature(resume_noisy(*alone, use_cache))
