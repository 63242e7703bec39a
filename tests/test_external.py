"""`autoresearch experiment`, driven the way a coding agent drives it: edit the worktree's train.py,
call the command, read one line.  Run: uv run pytest tests/test_external.py"""
import pytest

from autoresearch import ledger, state
from lab_helpers import check_invariants, cli, make_repo, variant, verdicts


@pytest.fixture
def run(tmp_path, use_cache):
    repo = make_repo(tmp_path / "repo")
    assert cli(repo, use_cache, "init", "--tag", "x").returncode == 0
    return repo, repo / "runs" / "x", use_cache


def test_edit_then_experiment_keeps_and_discards(run):
    repo, workdir, cache = run
    (workdir / "train.py").write_text(variant(WEIGHT=1.0))
    out = cli(workdir, cache, "experiment", "-m", "full unigram weight")  # from inside the worktree
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("keep: val_bpb") and "baseline" in lines[0]
    assert "(mean of 3 runs)" in lines[0]  # the baseline, at the lab's first three seeds
    assert lines[1].startswith("keep: val_bpb") and "(mean of 2 runs)" in lines[1] and "vs best" in lines[1]
    assert "full unigram weight" in lines[1]
    (workdir / "train.py").write_text(variant(WEIGHT=0.1))
    out = cli(repo, cache, "experiment", "--tag", "x", "-m", "much weaker")
    assert out.returncode == 0 and out.stdout.startswith("discard: val_bpb") and out.stdout.count("\n") == 1
    assert (workdir / "train.py").read_text() == variant(WEIGHT=1.0)  # back at the best
    rows = verdicts(check_invariants(workdir))
    assert [(r["agent"], r["status"]) for r in rows] == [("baseline", "keep"), ("external", "keep"),
                                                         ("external", "discard")]


def test_breaking_the_rules_is_rejected_and_undone(run):
    repo, workdir, cache = run
    cli(workdir, cache, "experiment", "-m", "baseline only", "--baseline-runs", "1")  # unchanged: baseline, rejected
    (workdir / "train.py").write_text(variant(WEIGHT=0.9))
    with open(workdir / "prepare.py", "a") as f:
        f.write("\n# a tweak to the metric\n")
    (workdir / "notes.txt").write_text("scratch")
    out = cli(workdir, cache, "experiment", "-m", "sneaky")
    assert out.returncode == 0 and out.stdout.startswith("rejected: ")
    assert "only train.py may change" in out.stdout and "not committed" in out.stdout
    assert "a tweak" not in (workdir / "prepare.py").read_text() and not (workdir / "notes.txt").exists()
    rows = verdicts(check_invariants(workdir))
    assert [r["status"] for r in rows] == ["keep", "rejected", "rejected"]
    assert rows[1]["reason"] == "train.py is unchanged: nothing to try"


def test_misuse_fails_with_one_line(run, tmp_path):
    repo, workdir, cache = run
    out = cli(workdir, cache, "experiment", "-m", "   ")
    assert out.returncode == 2 and out.stderr.startswith("error: describe the change") and out.stderr.count("\n") == 1
    out = cli(repo, cache, "experiment", "--tag", "nope", "-m", "x")
    assert out.returncode == 2 and "no run tagged 'nope'" in out.stderr
    lock = state.RunLock(workdir)
    assert lock.acquire()  # as a running loop would hold it
    try:
        out = cli(workdir, cache, "experiment", "-m", "x")
        assert out.returncode == 2 and "a loop is running" in out.stderr
    finally:
        lock.release()
    assert ledger.read_rows(workdir / "results.tsv") == []


def test_the_printed_line_says_how_sure_the_verdict_is(tmp_path, use_cache):
    """With a train.py whose val_bpb moves with the seed: a change far inside the noise is discarded
    after its one run, and the line gives its interval and says it was within the noise."""
    repo = make_repo(tmp_path / "repo", variant(NOISE=0.05))
    assert cli(repo, use_cache, "init", "--tag", "n").returncode == 0
    workdir = repo / "runs" / "n"
    (workdir / "train.py").write_text(variant(NOISE=0.05, WEIGHT=0.505))
    out = cli(workdir, use_cache, "experiment", "-m", "a hair more weight")
    assert out.returncode == 0, out.stderr
    baseline, line = out.stdout.strip().splitlines()
    assert baseline.startswith("keep: val_bpb") and "(mean of 3 runs)" in baseline
    assert line.startswith("discard: val_bpb") and "(1 run)" in line and ": within the noise" in line
    low, high = (float(x) for x in line.split("[")[1].split("]")[0].split(", "))
    assert low < 0 < high
    rows = check_invariants(workdir)
    assert [(r["role"], r["seed"]) for r in rows if r["experiment"] == "2"] == [("candidate", "42")]
