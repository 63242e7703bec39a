"""Runs in parallel on Ray (`autoresearch run --workers N`): a real local Ray, real workers with their
own worktrees and sandboxes, the fast stand-in train.py on the tiny cache.

Run with: uv run pytest tests/test_ray.py
"""
import glob
import os
import signal
from pathlib import Path

import pytest

from autoresearch import background, ledger, sandbox, state, workspace
from autoresearch.workspace import LabError
from lab_helpers import check_invariants, cli, git, make_repo, start_cli, variant, verdicts, write_replay, wait_for

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.xdist_group("ray")  # one local Ray at a time: the tests look at its sessions

TWO = ("--workers", "2", "--baseline-runs", "2")
BASE = variant(SLEEP=2.0)
A = BASE.replace("WEIGHT = 0.5\n", "WEIGHT = 0.8\n")                       # better
B = BASE.replace("JITTER = 0.0\n", "JITTER = 0.0\nWEIGHT += 0.2\n")       # better, another line: A and B compose



def in_flight(workdir):
    return state.load(workdir).get("experiments") or []


def workers_busy(workdir, baseline=False) -> int:
    """How many runs of candidates (or of the baseline) have been given to a worker."""
    return sum(bool(r.get("worker")) for e in in_flight(workdir) for r in e.get("runs", [])
               if (e.get("kind") == "baseline") == baseline)


def overlaps(a, b) -> bool:
    return a["started"] < b["finished"] and b["started"] < a["finished"]


def parent_of(entry: Path) -> int:
    """A /proc/<pid> entry's parent pid (its stat's fourth field, after the command in brackets)."""
    return int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[1])


def worker_pids(root: Path) -> dict[str, int]:
    """Worker index -> the pid of the Ray worker process running train.py in that worker's worktree."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            parent = parent_of(entry)
            title = (Path("/proc") / str(parent) / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if cwd.parent == root / "runs" / "k.workers" and title.startswith(b"ray::"):
            found[cwd.name] = parent
    return found


@pytest.fixture
def run(tmp_path, use_cache):
    repo = make_repo(tmp_path / "repo", BASE)
    assert cli(repo, use_cache, "init", "--tag", "k").returncode == 0
    return repo, repo / "runs" / "k", use_cache


def test_two_workers_run_at_once_and_a_stale_keep_is_measured_again_on_the_new_best(run, tmp_path):
    """A and B are proposed on the baseline and measured at once on two workers. The first to be kept
    becomes the best; the other, better than the baseline it was tried on, is replayed on the new best
    and measured again there before it is kept. One ledger, no run twice, the tip at the best, and
    the best holds both changes."""
    repo, workdir, cache = run
    replay = write_replay(tmp_path / "r.jsonl", [{"description": "A", "train_py": A},
                                                 {"description": "B", "train_py": B}])
    out = cli(repo, cache, "run", "--agent", f"replay:{replay}", *TWO, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 workers on Ray" in out.stdout
    rows = check_invariants(workdir)
    ended = verdicts(rows)
    assert [r["status"] for r in ended] == ["keep", "keep", "keep"], out.stdout
    first, second = ended[1]["description"], ended[2]["description"]
    assert {first, second} == {"A", "B"}
    assert f"#{3 if second == 'B' else 2} was better than" in out.stdout  # the stale one, replayed
    best = workspace.file_at(workdir, state.load(workdir)["best_commit"])
    assert "WEIGHT = 0.8\n" in best and "WEIGHT += 0.2\n" in best
    # the baseline's two seeds, each needed whatever the other gives, ran at once; then the two candidates'
    # first runs overlapped in time, on two workers
    assert overlaps(*[r for r in rows if r["role"] == "baseline"]), rows[:2]
    firsts = [next(r for r in rows if r["description"] == d and r["role"] == "candidate") for d in ("A", "B")]
    assert overlaps(*firsts), firsts
    assert len({r["worker"] for r in rows if r["worker"]}) == 2
    # the replayed change is a new commit whose parent is the first keep, kept by a ref
    stale = ended[2]
    assert git(workdir, "rev-parse", f"{stale['commit']}^")[:7] == ended[1]["commit"]
    assert git(workdir, "rev-parse", f"refs/autoresearch/k/{stale['experiment']}")[:7] == stale["commit"]
    assert state.load(workdir)["experiments"] == []


def test_a_stale_keep_whose_change_no_longer_applies_is_discarded_with_the_reason(run, use_cache):
    from autoresearch.scheduler import Scheduler
    repo, workdir, cache = run
    lab = Scheduler(workdir)
    base = lab.best
    (workdir / "train.py").write_text(BASE.replace("WEIGHT = 0.5\n", "WEIGHT = 0.7\n"))
    new_best = workspace.commit_train(workdir, "the new best")
    workspace.reset_to(workdir, base)
    (workdir / "train.py").write_text(A)  # the same line, another value
    conflicting = workspace.commit_train(workdir, "A")
    workspace.reset_to(workdir, new_best)
    lab.state["best_commit"] = new_best
    exp = dict(number=2, phase="measuring", parent=base, commit=conflicting, description="A", agent="replay",
               started="now", runs=[], lines=[1, 1])
    lab.in_flight.append(exp)
    assert lab.replay(exp) is True
    row = ledger.read_rows(workdir / "results.tsv")[-1]
    assert row["status"] == ledger.DISCARD and "no longer applies on the new best" in row["reason"], row
    assert workspace.head(workdir) == new_best and workspace.changed_paths(workdir) == []
    assert lab.in_flight == []


def test_a_baseline_seed_that_crashes_stops_the_seed_still_training(tmp_path, use_cache):
    """The baseline's seeds train at once; one crashes, which ends the baseline with its crash: the
    other seed, still training, is stopped and not recorded (its number could not change the verdict)."""
    seed = 'os.environ.get("AUTORESEARCH_SEED") == "42"'
    crashes = BASE.replace("CRASH = False\n", f"CRASH = {seed}\n").replace("SLEEP = 2.0\n", f"SLEEP = 1.0 if {seed} else 90.0\n")
    repo = make_repo(tmp_path / "repo", crashes)
    assert cli(repo, use_cache, "init", "--tag", "k").returncode == 0
    replay = write_replay(tmp_path / "r.jsonl", [])
    out = cli(repo, use_cache, "run", "--agent", f"replay:{replay}", "--max-experiments", "1", *TWO, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "#1 baseline s43 stopped: its experiment ended while it ran" in out.stdout, out.stdout
    rows = check_invariants(repo / "runs" / "k")
    assert [(r["seed"], r["status"]) for r in rows] == [("42", ledger.CRASH)], rows
    assert "boom" in rows[0]["reason"]
    stopped = (repo / "runs" / "k" / "logs" / f"0001-{rows[0]['commit']}-s43.log").read_text()
    assert "step 00000" in stopped and "---" not in stopped.splitlines(), stopped  # stopped before its end
    assert wait_for(lambda: not worker_pids(repo), timeout=30, what="no train.py left"), "the stopped seed trains on"


def test_a_proposal_trains_beside_the_baseline_and_waits_for_its_verdict(tmp_path, use_cache):
    """With a worker free while the baseline's last seed trains, a proposal goes in flight there: its
    first run, at s1, trains beside the baseline's; it is judged only once the baseline's verdict is in."""
    seed = 'os.environ.get("AUTORESEARCH_SEED") == "42"'
    base = BASE.replace("SLEEP = 2.0\n", f"SLEEP = 1.0 if {seed} else 12.0\n")  # s43 trains long
    repo = make_repo(tmp_path / "repo", base)
    assert cli(repo, use_cache, "init", "--tag", "k").returncode == 0
    replay = write_replay(tmp_path / "r.jsonl", [{"description": "A", "train_py": base.replace("WEIGHT = 0.5\n",
                                                                                               "WEIGHT = 0.8\n")}])
    out = cli(repo, use_cache, "run", "--agent", f"replay:{replay}", "--max-experiments", "2", *TWO, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = check_invariants(repo / "runs" / "k")
    baseline = {r["seed"]: r for r in rows if r["role"] == "baseline"}
    first = next(r for r in rows if r["description"] == "A")
    assert first["seed"] == "42" and first["status"] == ledger.RUN, first  # no verdict before the baseline's
    assert overlaps(first, baseline["43"]), rows
    assert rows.index(first) < rows.index(baseline["43"]) and baseline["43"]["status"] == ledger.KEEP
    assert [r["status"] for r in verdicts(rows)] == ["keep", "keep"], out.stdout


def test_a_worker_killed_mid_run_is_replaced_the_run_retried_once_then_recorded_as_a_crash(run, tmp_path):
    repo, workdir, cache = run
    slow = BASE.replace("SLEEP = 2.0\n", "SLEEP = 30.0\n").replace("WEIGHT = 0.5\n", "WEIGHT = 0.8\n")
    replay = write_replay(tmp_path / "r.jsonl", [{"description": "slow", "train_py": slow},
                                                 {"description": "B", "train_py": B}])
    loop = start_cli(repo, cache, "run", "--agent", f"replay:{replay}", *TWO)
    try:
        def slow_worker():
            exp = next((e for e in in_flight(workdir) if e.get("description") == "slow"), None)
            worker = next((r.get("worker") for r in (exp or {}).get("runs", [])), None)
            pids = worker_pids(repo)
            return worker and pids.get(worker.rsplit("/", 1)[1]) and (worker, pids[worker.rsplit("/", 1)[1]])
        for attempt in range(2):  # its worker killed, then the worker it was given to
            worker, pid = wait_for(slow_worker, timeout=240, what="the slow candidate to train on a worker")
            os.kill(pid, signal.SIGKILL)
            if attempt == 0:
                wait_for(lambda: (slow_worker() or (worker,))[0] != worker, timeout=240, what="the run to go to another worker")
        out, _ = loop.communicate(timeout=300)
    finally:
        if loop.poll() is None:
            loop.kill()
    assert loop.returncode == 0, out
    rows = check_invariants(workdir)
    crash = next(r for r in verdicts(rows) if r["description"] == "slow")
    assert crash["status"] == ledger.CRASH and "died" in crash["reason"] and "second worker" in crash["reason"], crash
    assert [r["status"] for r in verdicts(rows) if r["description"] == "B"] == ["keep"]


def test_the_driver_killed_with_9_resumes_the_runs_in_flight(tmp_path, use_cache):
    """Killed while the baseline's two seeds train, then while two candidates do: each time the
    next `autoresearch run` runs again what was in flight, and no run is recorded twice."""
    slow = lambda text: text.replace("SLEEP = 2.0\n", "SLEEP = 8.0\n")
    repo, cache = make_repo(tmp_path / "repo", slow(BASE)), use_cache
    assert cli(repo, cache, "init", "--tag", "k").returncode == 0
    workdir = repo / "runs" / "k"
    replay = write_replay(tmp_path / "r.jsonl", [{"description": d, "train_py": slow(t)} for d, t in (("A", A), ("B", B))])
    loop = start_cli(repo, cache, "run", "--agent", f"replay:{replay}", *TWO)
    wait_for(lambda: workers_busy(workdir, baseline=True) == 2, timeout=240, what="the baseline's seeds training at once")
    os.kill(loop.pid, signal.SIGKILL)
    loop.wait()
    assert [len(e["runs"]) for e in in_flight(workdir)] == [2]  # one experiment, two runs in flight
    loop = start_cli(repo, cache, "run", "--agent", f"replay:{replay}", *TWO)
    wait_for(lambda: workers_busy(workdir) == 2, timeout=240, what="two candidates training at once")
    # what a person sees meanwhile: each run in flight with its worker
    live = background.live(repo, "k")["runs_in_flight"]
    assert sorted(r["description"] for r in live) == ["A", "B"] and len({r["worker"] for r in live}) == 2, live
    status = cli(repo, cache, "status", "--tag", "k").stdout
    assert status.count(" on worker ") == 2, status
    os.kill(loop.pid, signal.SIGKILL)  # the driver alone
    loop.wait()
    out = cli(repo, cache, "run", "--agent", f"replay:{replay}", *TWO, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("(resumed)") == 2
    rows = check_invariants(workdir)
    assert sorted(r["description"] for r in verdicts(rows)) == ["A", "B", "baseline"]
    assert sorted(r["seed"] for r in rows if r["role"] == "baseline") == ["42", "43"]
    assert wait_for(lambda: not worker_pids(repo), timeout=30, what="no train.py left"), "a run outlived its loop"


def children_named(pid: int, name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == name and parent_of(entry) == pid:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_ray_losing_its_only_node_stops_the_loop_with_the_reason_and_the_next_run_resumes(run, tmp_path):
    """The lab's local Ray loses its raylet mid-run (the node is gone): no worker can be placed again, so
    the loop stops in one line instead of waiting on a worker that can never start; nothing is torn,
    and `autoresearch run` again finishes what was in flight."""
    repo, workdir, cache = run
    slower = [{"description": d, "train_py": t.replace("SLEEP = 2.0\n", "SLEEP = 8.0\n")} for d, t in (("A", A), ("B", B))]
    replay = write_replay(tmp_path / "r.jsonl", slower)
    loop = start_cli(repo, cache, "run", "--agent", f"replay:{replay}", *TWO)
    try:
        wait_for(lambda: workers_busy(workdir) == 2,
                 timeout=240, what="two candidates training at once")
        raylets = children_named(loop.pid, "raylet")
        assert len(raylets) == 1, raylets
        os.kill(raylets[0], signal.SIGKILL)
        out, _ = loop.communicate(timeout=300)
    finally:
        if loop.poll() is None:
            loop.kill()
    assert loop.returncode == 2, out
    assert out.strip().splitlines()[-1].startswith("error: Ray has no live node left"), out[-2000:]
    check_invariants(workdir)
    assert wait_for(lambda: not worker_pids(repo), timeout=60, what="no train.py left"), "a run outlived its loop"
    again = cli(repo, cache, "run", "--agent", f"replay:{replay}", *TWO, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    rows = check_invariants(workdir)
    assert sorted(r["description"] for r in verdicts(rows)) == ["A", "B", "baseline"]


def test_a_worker_whose_cache_differs_from_the_drivers_is_refused(run):
    from autoresearch import guard
    from autoresearch.ray_executor import RayExecutor
    repo, workdir, cache = run
    st = state.load(workdir)
    executor = RayExecutor(workdir, st, guard.protection(workdir, st), workers=1)
    try:
        # under `uv run` (as the suite runs), Ray would copy this working directory, .venv and all, into
        # its session and start each worker through uv: the lab's workers use the paths as they are
        assert dict(ray.get_runtime_context().runtime_env) == {}, ray.get_runtime_context().runtime_env
        executor.data_hash = "0" * 64  # the driver's manifest, as another node's would differ
        with pytest.raises(LabError, match=r"its prepared cache at .* differs from the driver's .*same cache"):
            executor.probe()
    finally:
        executor.close()


def test_a_worker_the_lab_kills_is_gone_and_killing_it_again_is_harmless(run):
    """What the lab does to a hung worker, one left out for its device and each at the end: the actor
    dies (its GPU freed for the one started in its place); a second kill of a dead one raises nothing."""
    from autoresearch import guard
    from autoresearch.ray_executor import RayExecutor
    repo, workdir, cache = run
    st = state.load(workdir)
    executor = RayExecutor(workdir, st, guard.protection(workdir, st), workers=1)
    try:
        executor.probe()
        actor = executor.workers[0]
        executor.kill(actor)
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(actor.probe.remote(), timeout=60)
        executor.kill(actor)
    finally:
        executor.close()


RAY_ATTACK = '''
import glob, re, socket
def attempt(name, fn):
    try:
        fn()
        print("ATTACK", name, "succeeded", flush=True)
    except Exception as e:
        print("ATTACK", name, "failed:", type(e).__name__, flush=True)
seen = glob.glob("/tmp/ray/session_*") + glob.glob("/tmp/ray/ray_current_cluster")
print("ATTACK the Ray session's files:", seen[:5], "succeeded" if seen else "failed", flush=True)
for path in glob.glob("/tmp/ray/session_*/sockets/*"):
    attempt("unix " + path, lambda path=path: socket.socket(socket.AF_UNIX).connect(path))
addresses = {v for k, v in os.environ.items() if re.fullmatch(r"[\\w.-]+:\\d{2,5}", v)} | {"127.0.0.1:6379"}
for addr in sorted(addresses):
    host, port = addr.rsplit(":", 1)
    attempt("tcp " + addr, lambda host=host, port=port: socket.create_connection((host, int(port)), timeout=2).close())
def join_the_cluster():
    import ray
    ray.init(address="auto", log_to_driver=False)
attempt("ray.init(address='auto')", join_the_cluster)
'''


@pytest.mark.skipif(not sandbox.mode() == sandbox.BWRAP, reason="no working bubblewrap here")
def test_a_run_on_a_ray_worker_cannot_reach_ray(tmp_path, use_cache):
    """train.py on a worker, in its sandbox, tries Ray's session files and sockets (under /tmp), every
    host:port its environment names and the default GCS port, and to join the cluster: all fail, while
    the lab's own Ray is up beside it."""
    head, tail = BASE.split("tok = Tokenizer.from_directory()", 1)
    repo = make_repo(tmp_path / "repo", head + RAY_ATTACK + "tok = Tokenizer.from_directory()" + tail)
    assert cli(repo, use_cache, "init", "--tag", "k").returncode == 0
    before = set(glob.glob("/tmp/ray/session_*"))
    out = cli(repo, use_cache, "run", "--workers", "2", "--baseline-runs", "1", "--max-experiments", "1", timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    log = "".join(p.read_text() for p in (repo / "runs" / "k" / "logs").glob("*.log"))
    attacks = [line for line in log.splitlines() if line.startswith("ATTACK ")]
    assert any("ray.init" in a for a in attacks) and any(a.startswith("ATTACK tcp ") for a in attacks), log
    assert not [a for a in attacks if a.endswith("succeeded")], "\n".join(attacks)
    # what the run could not see was there: this loop's own Ray session, beside the sandbox
    ours = [d for d in set(glob.glob("/tmp/ray/session_2*")) - before if glob.glob(f"{d}/sockets/*")]
    assert ours, sorted(set(glob.glob("/tmp/ray/session_*")) - before)
