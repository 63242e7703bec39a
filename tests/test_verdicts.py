"""Noise-aware verdicts in the real loop, with a stand-in train.py: drift seen by a control run and shown,
`autoresearch noise`, early abort of a candidate only, the ledger's new rows read back, and ledgers of
older versions still read (and refused for appending).  Run: uv run pytest tests/test_verdicts.py"""
import io
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from autoresearch import ledger, measurements, runner, state, workspace
from autoresearch.agents import Proposal
from autoresearch.agents.replay import OneProposal
from autoresearch.executor import Job
from autoresearch.judge import Policy
from autoresearch.recorder import Display
from autoresearch.scheduler import Scheduler, init_run
from autoresearch.workspace import LabError
from lab_helpers import check_invariants, cli, git, make_repo, start_cli, variant, verdicts, wait_for, write_replay


class SlowerMachine:
    """Proposes a much better train.py, after the machine (as the stand-in reads it) got slower."""
    name = "slower"

    def __init__(self, speed_file, text):
        self.speed_file, self.text, self.done = speed_file, text, False

    def propose(self, context):
        if self.done:
            return None
        self.done = True
        self.speed_file.write_text("2000")
        return Proposal(description="much better, on a slower machine", train_py=self.text)


def test_a_control_run_sees_the_machine_slow_down_shows_it_and_measures_the_best_again(tmp_path, use_cache, request):
    # the machine's speed, in a file a sandboxed run reads (outside /tmp, the home and the repository)
    speed = Path(tempfile.mkdtemp(dir="/var/tmp")) / "speed"
    request.addfinalizer(lambda: shutil.rmtree(speed.parent))
    speed.write_text("4400")
    repo = make_repo(tmp_path / "repo", variant(SPEED_FILE=str(speed)))
    display = Display(stream=io.StringIO())
    lab = Scheduler(init_run(repo, "d"), Policy(control_every=2), display=display)
    lab.run(SlowerMachine(speed, variant(SPEED_FILE=str(speed), WEIGHT=1.0)))
    rows = check_invariants(lab.workdir)
    control = next(r for r in rows if r["role"] == "control")
    assert control["experiment"] == "2" and control["seed"] == "45" and control["era"] == "2"
    assert control["reason"].startswith("drift: throughput 2,000 tok/s against 4,400 (-55%)")
    assert "drift seen: throughput 2,000 tok/s" in display.stream.getvalue()  # shown, not silently absorbed
    # only the new era's runs are compared: the candidate runs at the control's seed, paired with it
    candidate = [r for r in rows if r["experiment"] == "2" and r["role"] in ("candidate", "confirm")]
    assert candidate[0]["seed"] == "45" and all(r["era"] == "2" for r in candidate)
    assert verdicts(rows)[-1]["status"] == "keep"
    status = json.loads(cli(repo, use_cache, "status", "--json", "--tag", "d").stdout)
    assert status["era"] == 2
    assert "a drift was seen" in cli(repo, use_cache, "status", "--tag", "d").stdout


def test_the_noise_command_runs_the_baseline_then_the_best_at_more_seeds(tmp_path, use_cache):
    repo = make_repo(tmp_path / "repo", variant(NOISE=0.05))
    assert cli(repo, use_cache, "init", "--tag", "z").returncode == 0
    out = cli(repo, use_cache, "noise", "--tag", "z", "--repeats", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = check_invariants(repo / "runs" / "z")
    assert [(r["role"], r["seed"], r["status"]) for r in rows] == [
        ("baseline", "42", "run"), ("baseline", "43", "run"), ("baseline", "44", "keep"),
        ("repeat", "45", "run"), ("repeat", "46", "run")]
    assert len({r["commit"] for r in rows}) == 1 and rows[3]["experiment"] == rows[4]["experiment"] == "2"
    noise = measurements.noise(rows)
    assert noise.df == 4 and noise.sigma > 0
    assert f"noise ±{noise.sigma:.4f} bpb per run (4 df)" in out.stdout
    assert measurements.verdicts(rows) == [rows[2]]  # a noise measurement is not an experiment with a verdict


CURVE = tuple(8.0 - 0.3 * k for k in range(10))
DIVERGING = tuple(8.0 + 0.5 * k for k in range(10))


def test_early_abort_stops_a_diverging_candidate_but_never_a_confirmation_or_the_best(tmp_path, use_cache):
    repo = make_repo(tmp_path / "repo", variant(LOSSES=CURVE, SLEEP=2.0))
    lab = Scheduler(init_run(repo, "p"), display=Display(stream=io.StringIO()))
    lab.run(OneProposal(Proposal("diverges", train_py=variant(LOSSES=DIVERGING, SLEEP=20.0)), "once"))
    rows = check_invariants(lab.workdir)
    pruned = verdicts(rows)[-1]
    assert pruned["status"] == "pruned" and pruned["val_bpb"] == "" and pruned["seed"] == "42"
    assert pruned["reason"].startswith("pruned at 30% of the budget: training loss 9.500 against the best's 7.100")
    log = (lab.workdir / "logs" / f"0002-{pruned['commit']}-s42.log").read_text()
    assert "---" not in log.splitlines()  # stopped before its end: no summary block
    assert max(p["progress"] for p in runner.progress_points(lab.workdir / "logs" / f"0002-{pruned['commit']}-s42.log")) < 0.5

    # the same diverging curve in any other role is left to run
    exp = dict(number=3, parent=lab.state["best_commit"], commit=lab.state["best_commit"])
    for role, stops in (("candidate", True), ("confirm", False), ("control", False), ("baseline", False)):
        job = Job(3, lab.state["best_commit"], 42, role, tmp_path / "x.log")
        watch = lab.watcher(exp, {}, job, rows)
        reasons = [watch(dict(step=k, progress=k / 10, loss=loss, tokens_per_s=100_000.0)) for k, loss in
                   enumerate(DIVERGING)]
        assert any(reasons) == stops, role
    # a step that takes most of the budget: its line's percent is where it began, its `left` where it ended,
    # and its loss is the model's all along; without `left` the lab waits for the next line
    step = dict(step=1, progress=0.0, loss=9.5, tokens_per_s=100_000.0, left=round(0.15 * lab.budget))
    job = Job(3, lab.state["best_commit"], 42, "candidate", tmp_path / "y.log")
    assert lab.watcher(exp, {}, job, rows)(step).startswith("pruned at 30% of the budget: training loss 9.500")
    assert lab.watcher(exp, {}, job, rows)(dict(step, left=None)) is None
    unpruned = Scheduler(lab.workdir, Policy(prune=False))
    late = dict(step=9, progress=0.9, loss=99.0, tokens_per_s=1.0)
    assert unpruned.watcher(exp, {}, Job(3, exp["commit"], 42, "candidate", tmp_path), rows)(late) is None


def test_a_candidate_slower_by_its_own_change_is_stopped_then_pruned_once_a_control_clears_the_machine(
        tmp_path, use_cache, request):
    """As good per token as the best, but a tenth as fast and so far behind at the same point of the
    budget: stopped, then a control run of the best at its usual speed says the slowness is its
    own, and it is pruned. The loop killed -9 once the stop is recorded goes on from there."""
    speeds = Path(tempfile.mkdtemp(dir="/var/tmp"))  # files a sandboxed run reads
    request.addfinalizer(lambda: shutil.rmtree(speeds))
    (speeds / "best").write_text("4400")
    (speeds / "deep").write_text("440")
    repo = make_repo(tmp_path / "repo", variant(SPEED_FILE=str(speeds / "best"), LOSSES=CURVE, SLEEP=2.0))
    deep = variant(SPEED_FILE=str(speeds / "deep"), LOSSES=tuple(8.0 - 0.01 * k for k in range(10)), SLEEP=20.0)
    replay = write_replay(tmp_path / "r.jsonl", [{"description": "deeper", "train_py": deep}])
    assert cli(repo, use_cache, "init", "--tag", "s").returncode == 0
    workdir = repo / "runs" / "s"
    loop = start_cli(repo, use_cache, "run", "--agent", f"replay:{replay}", AUTORESEARCH_FAULT="recorded-stopped")
    wait_for((workdir / ".lab" / "fault-recorded-stopped").exists, timeout=240, what="the stop to be recorded")
    os.killpg(loop.pid, signal.SIGKILL)
    loop.wait()
    out = cli(repo, use_cache, "run", "--agent", f"replay:{replay}")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = check_invariants(workdir)
    mine = [(r["role"], r["seed"], r["status"]) for r in rows if r["experiment"] == "2"]
    assert mine == [("candidate", "42", "stopped"), ("control", "45", "run"), ("verdict", "", "pruned")]
    stop, control, verdict = (r for r in rows if r["experiment"] == "2")
    assert stop["reason"].startswith("stopped at 30% of the budget: 440 tok/s against the best's 4,400 (10% of it)")
    assert stop["val_bpb"] == "" and control["era"] == "1" and not control["reason"].startswith("drift")
    assert verdict["reason"].startswith("pruned: stopped at 30%") and "slowness is the change's own" in verdict["reason"]
    log = (workdir / "logs" / f"0002-{stop['commit']}-s42.log").read_text()
    assert "---" not in log.splitlines()  # stopped before its end
    assert "stopped at 30% of the budget" in out.stdout and "pruned" in out.stdout


OLD_COLUMNS = ["commit", "val_bpb", "memory_gb", "status", "description", "parent", "lines_added", "lines_removed",
               "score", "training_seconds", "total_seconds", "num_steps", "total_tokens_M", "mfu_percent",
               "peak_vram_mb", "seed", "agent", "started", "finished", "lab_seconds", "reason", "device", "profile",
               "data_hash", "tokenizer_hash", "time_budget", "input_tokens", "output_tokens", "cache_read_tokens",
               "cache_write_tokens", "cost_usd"]


def test_a_ledger_of_an_older_version_reads_everywhere_and_is_not_appended_to(tmp_path, use_cache):
    """One row per experiment, no experiment, role or run columns: status, the judge's inputs and the
    report read it; a loop on it is refused with one line, so its rows are never mixed with new ones."""
    repo = make_repo(tmp_path / "repo")
    workdir = init_run(repo, "old")
    lines = ["\t".join(OLD_COLUMNS),
             "\t".join(dict(commit="aaaaaaa", val_bpb="3.100000", status="keep", description="baseline",
                            seed="42", parent="aaaaaaa", lines_added="0", lines_removed="0").get(c, "")
                       for c in OLD_COLUMNS),
             "\t".join(dict(commit="bbbbbbb", val_bpb="3.000000", status="keep", description="lucky", seed="42",
                            parent="aaaaaaa", lines_added="1", lines_removed="1").get(c, "") for c in OLD_COLUMNS)]
    (workdir / "results.tsv").write_text("\n".join(lines) + "\n")
    rows = ledger.read_rows(workdir / "results.tsv")
    assert [r["status"] for r in measurements.verdicts(rows)] == ["keep", "keep"]
    assert [(r.experiment, r.commit, r.val_bpb) for r in measurements.runs(rows)] == [(1, "aaaaaaa", 3.1),
                                                                                      (2, "bbbbbbb", 3.0)]
    out = cli(repo, use_cache, "status", "--tag", "old")
    assert out.returncode == 0 and "experiments 2 (2 runs): 2 keep" in out.stdout
    out = cli(repo, use_cache, "report", "--tag", "old", "-o", str(tmp_path / "r.html"))
    assert out.returncode == 0 and "lucky" in (tmp_path / "r.html").read_text()
    out = cli(repo, use_cache, "run", "--tag", "old", "--agent", "search")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "older version of the lab" in out.stderr
    assert len(ledger.read_rows(workdir / "results.tsv")) == 2


def test_a_run_made_by_an_older_version_is_refused_in_one_line(tmp_path, use_cache):
    repo = make_repo(tmp_path / "repo")
    workdir = init_run(repo, "old")
    st = state.load(workdir)
    del st["experiments"]
    st["current"] = None
    state.save(workdir, st)
    with pytest.raises(LabError, match="older version of the lab"):
        Scheduler(workdir)


def test_a_run_begun_before_the_harness_package_is_refused_in_one_line(tmp_path, use_cache):
    """A run whose base commit has the monolithic prepare.py of before (no harness/): its evaluator
    could not run it, so the lab says so instead of crashing every run."""
    import shutil
    import subprocess
    repo = make_repo(tmp_path / "repo")
    shutil.rmtree(repo / "harness")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", *workspace.IDENTITY, "commit", "-qm", "the harness of before"], cwd=repo, check=True)
    workdir = init_run(repo, "old")
    with pytest.raises(LabError, match="older than this lab's evaluator .*autoresearch init --tag NEW"):
        Scheduler(workdir)


def test_a_loop_killed_while_the_best_ran_comes_back_on_its_branch(tmp_path, use_cache):
    """A run of the best while a candidate is the tip has HEAD detached at the best: a loop killed
    then finds its worktree back on the run's branch, at the candidate, and goes on."""
    from autoresearch import workspace
    repo = make_repo(tmp_path / "repo", variant(NOISE=0.05))
    lab = Scheduler(init_run(repo, "h"), Policy(baseline_runs=2), display=Display(stream=io.StringIO()))
    lab.run(None)  # the baseline
    candidate = variant(NOISE=0.05, WEIGHT=0.9)
    exp = lab.begin("by hand", "test", kind="candidate")
    (lab.workdir / "train.py").write_text(candidate)
    commit = workspace.commit_train(lab.workdir, "by hand")
    lab.measuring(exp, commit)
    del exp["runs"]  # as a state written before an experiment could have several runs in flight names its one
    exp["run"] = dict(target="candidate", commit=commit, seed=42, role="candidate", attempts=1,
                      started="2026-01-01T00:00:00")  # what the judge asks first
    lab.save()
    git(lab.workdir, "checkout", "-q", "--detach", lab.state["base_commit"])  # as the killed run left it
    again = Scheduler(lab.workdir, Policy(baseline_runs=2), display=Display(stream=io.StringIO()))
    again.run(None, max_experiments=1)
    rows = check_invariants(lab.workdir)
    ended = verdicts(rows)[-1]
    assert ended["experiment"] == "2" and ended["commit"] == commit[:7] and ended["status"] in ("keep", "discard")
    assert [r["seed"] for r in rows if r["experiment"] == "2"][:1] == ["42"]
    assert workspace.branch_of(lab.workdir) == "autoresearch/h"
