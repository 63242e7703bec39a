"""The loop in the background (what the launch notebook drives): started detached in its own
session, found again from files only, watched live, stopped cleanly, never started twice.
Run: uv run pytest tests/test_background.py"""
import json
import os
import subprocess
import sys
import time

import pytest

from autoresearch import background, runner, state
from autoresearch.workspace import LabError
from conftest import ROOT
from lab_helpers import check_invariants, cli, make_repo, variant, write_replay, wait_for



@pytest.fixture
def run(tmp_path, use_cache):
    repo = make_repo(tmp_path / "repo")
    out = cli(repo, use_cache, "init", "--tag", "bg")
    assert out.returncode == 0, out.stderr
    yield repo, "bg"
    pid = background.loop_pid(repo, "bg")  # never leave a loop behind
    if pid:
        background.stop_loop(repo, "bg", timeout=10)


def test_a_fresh_run_has_no_loop_and_an_empty_live_view(run):
    repo, tag = run
    assert background.loop_pid(repo, tag) is None
    assert background.stop_loop(repo, tag) is False
    info = background.live(repo, tag)
    assert info["running"] is False and info["current"] is None and info["best"] is None
    assert info["current_points"] == [] and info["best_points"] == [] and info["rows"].height == 0
    assert (info["experiments"], info["kept"], info["best_measure"]) == (0, 0, None)
    assert info["device"] == ""
    spec = background.curves_chart(info).to_dict()  # zero points still make a chart
    assert spec["mark"]["type"] == "line"
    with pytest.raises(LabError):
        background.live(repo, "nosuchtag")
    with pytest.raises(LabError):
        background.start_loop(repo, "nosuchtag")


def test_background_loop_is_detached_watched_and_stopped_cleanly(run, tmp_path):
    repo, tag = run
    replay = write_replay(tmp_path / "slow.jsonl", [
        {"description": "slow and steady", "train_py": variant(WEIGHT=1.0, SLEEP=120.0)},
    ])
    pid = background.start_loop(repo, tag, agent=f"replay:{replay}", max_experiments=5)
    workdir = repo / "runs" / tag
    assert int((workdir / ".lab" / "loop.pid").read_text()) == pid
    assert os.getsid(pid) == pid  # its own session: an interrupted kernel does not take it along
    assert background.loop_pid(repo, tag) == pid
    with pytest.raises(LabError, match="already running"):
        background.start_loop(repo, tag)

    # the baseline runs and is kept; then the slow proposal is in flight with a progress point
    def in_flight():
        info = background.live(repo, tag)
        cur = info["current"]
        return info if cur and cur["description"] == "slow and steady" and info["current_points"] else None

    info = wait_for(in_flight, what="the slow experiment to be in flight")
    assert state.is_running(workdir) == pid
    assert info["running"] and info["pid"] == pid
    assert info["current"]["number"] == 2 and info["current"]["agent"] == "replay"
    assert info["current_points"][0]["step"] == 0 and info["current_points"][0]["progress"] == 0.0
    assert info["best"]["description"] == "baseline" and info["best"]["number"] == 1
    assert info["best_points"] and info["best_points"][0]["loss"] == 8.0
    assert info["rows"]["status"].to_list() == ["run", "run", "keep"]  # the baseline, at three seeds
    assert (info["experiments"], info["kept"]) == (1, 1)  # experiments, not runs
    assert (info["best_measure"].runs, info["best_measure"].era) == (3, 1)
    assert info["current"]["run"] == dict(role="candidate", seed=42, commit=info["current"]["commit"])
    assert info["noise"].sigma == 0.0 and info["best_val_bpb"] == pytest.approx(float(info["rows"]["val_bpb"][2]))
    assert info["device"].startswith("cpu") and info["time_budget"] == "4"
    assert "run bg" in info["loop_log"]
    spec = background.curves_chart(info).to_dict()
    runs = {v["run"] for v in spec["data"]["values"]}
    assert runs == {"running", "best"}

    # a fresh process (a restarted kernel) finds the loop from the files alone
    code = f"from autoresearch import background; print(background.loop_pid({str(repo)!r}, {tag!r}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == str(pid), out.stderr

    t0 = time.time()
    assert background.stop_loop(repo, tag, timeout=30) is True
    assert time.time() - t0 < 20
    assert background.loop_pid(repo, tag) is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    rows = check_invariants(workdir)
    assert [r["description"] for r in rows] == ["baseline"] * 3
    st = state.load(workdir)
    assert st["experiments"][0]["phase"] == "interrupted" and state.child_groups(st) == []
    assert "stopped" in (workdir / ".lab" / "loop.log").read_text()
    assert background.stop_loop(repo, tag) is False


def test_a_stale_pid_file_is_not_a_running_loop(run):
    repo, tag = run
    (repo / "runs" / tag / ".lab" / "loop.pid").write_text(f"{os.getpid()}\n")  # alive, but not a loop
    assert background.loop_pid(repo, tag) is None
    (repo / "runs" / tag / ".lab" / "loop.pid").write_text("999999999\n")
    assert background.loop_pid(repo, tag) is None


def test_a_loop_that_fails_to_start_says_why_in_its_log(run):
    repo, tag = run
    pid = background.start_loop(repo, tag, agent="nosuchagent")
    wait_for(lambda: background.loop_pid(repo, tag) is None, timeout=30, what="the loop to exit")
    log = (repo / "runs" / tag / ".lab" / "loop.log").read_text()
    assert "error:" in log and "nosuchagent" in log and pid > 0
    assert json.loads((repo / "runs" / tag / ".lab" / "state.json").read_text())["experiments"] == []


def test_the_phase_is_named_from_what_the_run_s_files_say():
    def info(running=True, phase="measuring", run=None, points=(), runs=()):
        current = None if phase is None else dict(number=3, description="wider", agent="search", phase=phase,
                                                  commit="bbbbbbb", run=run, runs=list(runs))
        return dict(running=running, current=current, current_points=[dict(progress=p) for p in points])
    candidate = dict(role="candidate", seed=42, commit="bbbbbbb")
    assert background.phase(info(running=False, phase=None)) == "stopped"
    assert background.phase(info(running=False, run=candidate)).startswith("stopped: #3 (wider) runs again")
    assert background.phase(info(phase=None)) == "between experiments"
    assert background.phase(info(phase="proposing")) == "the agent (search) is proposing #3"
    assert background.phase(info(run=candidate)) == "starting the candidate at seed 42"
    assert background.phase(info(run=candidate, points=(0.1, 0.42))) == \
        "training the candidate at seed 42 (42% of the budget)"
    assert background.phase(info(run=candidate, points=(0.5, 0.995))).startswith("evaluating the candidate")
    # a slow machine's last step begins at 72 % and spends the rest: its line says 0 s left
    line = "step 00003 |  72.0% | loss 7.100000 | lr 0.40 | dt 2800ms | 1,170 tok/s | mfu n/a | epoch 0 | {}s left"
    last = info(run=candidate)
    last["current_points"] = [runner.parse_progress(line.format(3))]
    assert background.phase(last) == "training the candidate at seed 42 (72% of the budget)"
    last["current_points"] = [runner.parse_progress(line.format(0))]
    assert background.phase(last).startswith("evaluating the candidate at seed 42")
    # a step nearly as long as the budget (a much larger model): its line's percent is where it began
    last.update(time_budget="10", current_points=[runner.parse_progress(line.replace("72.0%", "0.0%").format(2))])
    assert background.phase(last) == "training the candidate at seed 42 (75% of the budget)"
    confirm = dict(role="confirm", seed=43, commit="bbbbbbb")
    runs = [dict(commit="bbbbbbb", role="candidate"), dict(commit="aaaaaaa", role="confirm")]
    assert background.phase(info(run=confirm, runs=runs, points=(0.3,)), max_runs=5) == \
        "training confirmation 2 of at most 5 at seed 43 (30% of the budget)"
    best = dict(role="confirm", seed=44, commit="aaaaaaa")
    assert background.phase(info(run=best, runs=runs)) == "starting the best at seed 44, to pair with the candidate"
    assert background.phase(info(run=dict(role="control", seed=45, commit="aaaaaaa"))) == \
        "starting a control run of the best at seed 45"
