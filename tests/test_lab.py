"""The experiment loop on real temporary git repositories with a stand-in train.py: keep, discard,
crash, timeout, the guard's rejections, a printed val_bpb that is not believed, and status.
The stand-in is deterministic here (no NOISE), so every candidate is judged on one run; the
noise-aware path is in test_verdicts.py.  Run: uv run pytest tests/test_lab.py"""
import json
import shutil
import time

import pytest

from autoresearch import guard, ledger, logs, sandbox, state, workspace
from autoresearch.agents.replay import ReplayAgent
from autoresearch.judge import Policy
from autoresearch.recorder import Display
from autoresearch.scheduler import Scheduler, init_run
from autoresearch.workspace import LabError
from conftest import ROOT
from lab_helpers import FAKE_TRAIN, check_invariants, cli, git, make_repo, variant, verdicts, write_replay


class Quiet(Display):
    def __init__(self):
        import io
        super().__init__(stream=io.StringIO())


@pytest.fixture
def repo(tmp_path, use_cache):
    return make_repo(tmp_path / "repo")


def new_lab(repo, tag="t", policy=Policy(baseline_runs=2), **kw):
    """A lab on a new run; the baseline at two seeds (enough to see the stand-in has no noise)."""
    workdir = init_run(repo, tag)
    return Scheduler(workdir, policy, display=Quiet(), **kw)


def test_keep_discard_and_crash(repo, tmp_path):
    replay = write_replay(tmp_path / "r.jsonl", [
        {"description": "full unigram", "train_py": variant(WEIGHT=1.0)},
        {"description": "weaker", "train_py": variant(WEIGHT=0.2)},
        {"description": "explodes", "train_py": variant(WEIGHT=1.0, CRASH=True)},
    ])
    lab = new_lab(repo, policy=Policy())
    assert lab.run(ReplayAgent(replay)) == 4
    rows = check_invariants(lab.workdir)
    # the baseline at the lab's first three seeds, then each candidate once (no noise: nothing to confirm)
    assert [(r["role"], r["seed"], r["status"]) for r in rows[:3]] == [
        ("baseline", "42", "run"), ("baseline", "43", "run"), ("baseline", "44", "keep")]
    assert rows[2]["runs"] == "3" and float(rows[2]["val_bpb"]) == pytest.approx(
        sum(float(r["run_bpb"]) for r in rows[:3]) / 3, abs=1e-6)
    ended = verdicts(rows)
    assert [r["status"] for r in ended] == ["keep", "keep", "discard", "crash"]
    assert [r["description"] for r in ended] == ["baseline", "full unigram", "weaker", "explodes"]
    assert [r["experiment"] for r in ended] == ["1", "2", "3", "4"]
    assert float(ended[1]["val_bpb"]) < float(ended[0]["val_bpb"]) < float(ended[2]["val_bpb"])
    assert "boom: the model exploded" in ended[3]["reason"]
    assert ended[1]["lines_added"] == "1" and ended[1]["lines_removed"] == "1"
    assert ended[1]["parent"] == ended[0]["commit"]
    # kept on two runs (a kept value is a mean), paired with the baseline's runs at the same seeds;
    # discarded at once when clearly worse
    assert [(r["role"], r["seed"]) for r in rows if r["experiment"] == "2"] == [("candidate", "42"), ("confirm", "43")]
    assert ended[1]["runs"] == "2" and ended[2]["runs"] == "1" and ended[2]["seed"] == "42"
    assert float(ended[1]["diff"]) < 0 < float(ended[2]["diff"])
    assert (lab.workdir / "train.py").read_text() == variant(WEIGHT=1.0)
    st = state.load(lab.workdir)
    assert st["best_val_bpb"] == pytest.approx(float(ended[1]["val_bpb"]), abs=1e-6)
    log = lab.workdir / "logs" / f"0004-{ended[3]['commit']}-s42.log"
    assert "RuntimeError: boom" in log.read_text()
    for r in rows:  # every row carries the environment it was measured in
        assert r["profile"] == "tiny" and r["device"].startswith("cpu") and r["time_budget"] == "4"
        assert r["policy"] == "noise" and r["era"] == "1" and r["started"] <= r["finished"]
    # the user's checkout was never touched
    assert workspace.head(repo) == git(repo, "rev-parse", "main")
    assert workspace.changed_paths(repo) == []


def test_a_printed_val_bpb_is_not_believed(repo, tmp_path):
    replay = write_replay(tmp_path / "r.jsonl", [
        {"description": "prints a fake number, never evaluates", "train_py": variant(PRINT_FAKE=True, CALL_EVAL=False)},
        {"description": "evaluates but prints a fake number", "train_py": variant(PRINT_FAKE=True, WEIGHT=0.4)},
    ])
    lab = new_lab(repo)
    lab.run(ReplayAgent(replay))
    rows = verdicts(check_invariants(lab.workdir))
    assert rows[1]["status"] == "crash" and "handed no model off" in rows[1]["reason"]
    assert rows[2]["status"] == "discard" and float(rows[2]["val_bpb"]) > 1.0


def test_a_run_that_trains_past_its_budget_is_an_overrun_and_judged_nothing(repo, tmp_path):
    """The lab's clock, not train.py's: a candidate that takes far longer than the baseline did (here it
    sleeps before handing off, as work hidden in an untimed step would) is recorded as `overrun` with
    its number in the reason, and the next experiment is judged as any other."""
    replay = write_replay(tmp_path / "r.jsonl", [
        {"description": "trains too long", "train_py": variant(WEIGHT=1.0, SLEEP=25.0)},
        {"description": "stronger", "train_py": variant(WEIGHT=1.0)},
    ])
    lab = new_lab(repo, policy=Policy(baseline_runs=1, overrun_slack=8.0))
    lab.run(ReplayAgent(replay))
    rows = check_invariants(lab.workdir)
    ended = verdicts(rows)
    assert [r["status"] for r in ended] == ["keep", "overrun", "keep"], [(r["status"], r["reason"]) for r in ended]
    assert "trained past its budget" in ended[1]["reason"] and "it scored" in ended[1]["reason"]
    assert ended[1]["val_bpb"] == "" and ended[1]["run_bpb"] == ""
    assert all(float(r["run_seconds"]) > 0 for r in rows if r["role"] != "verdict")
    assert float(next(r for r in rows if r["experiment"] == "2")["run_seconds"]) > 25


def test_timeout_kills_the_whole_process_group(repo, tmp_path):
    replay = write_replay(tmp_path / "r.jsonl", [{"description": "hangs", "train_py": variant(SLEEP=120.0)}])
    lab = new_lab(repo, allowance=2.0)
    lab.run(ReplayAgent(replay))
    rows = verdicts(check_invariants(lab.workdir))
    assert rows[1]["status"] == "timeout" and "killed" in rows[1]["reason"]
    assert float(rows[1]["lab_seconds"]) < 5


def test_guard_rejections_are_recorded_and_never_committed(repo, tmp_path):
    original = (repo / "prepare.py").read_text()
    sources = (repo / "harness" / "sources.py").read_text()  # the harness's modules are protected too
    (repo / "harness" / "sources.py").write_text(sources.replace("VAL_PERCENT = 5", "VAL_PERCENT = 50"))
    edit_prepare = git(repo, "diff", "harness/sources.py")
    (repo / "harness" / "sources.py").write_text(sources)
    assert edit_prepare
    new_file = ("diff --git a/helper.py b/helper.py\nnew file mode 100644\n--- /dev/null\n+++ b/helper.py\n"
                "@@ -0,0 +1 @@\n+print('sneaky')\n")
    outside = ("diff --git a/../outside.py b/../outside.py\n--- a/../outside.py\n+++ b/../outside.py\n"
               "@@ -1 +1 @@\n-x = 1\n+x = 2\n")
    replay = write_replay(tmp_path / "r.jsonl", [
        {"description": "edit the metric", "diff": edit_prepare},
        {"description": "add a file", "diff": new_file},
        {"description": "escape the tree", "diff": outside},
        {"description": "syntax error", "train_py": FAKE_TRAIN + "\ndef broken(:\n"},
        {"description": "no change at all", "train_py": FAKE_TRAIN},
        {"description": "tamper while running", "train_py": variant(TOUCH_PREPARE=True)},
    ])
    lab = new_lab(repo)
    head_before = workspace.head(lab.workdir)
    lab.run(ReplayAgent(replay))
    rows = verdicts(check_invariants(lab.workdir))
    reasons = [r["reason"] for r in rows[1:]]
    # sandboxed, the tampering fails (the harness is read-only); else the check after the run catches it
    sandboxed = sandbox.mode() == sandbox.BWRAP
    assert [r["status"] for r in rows[1:]] == ["rejected"] * 5 + ["crash" if sandboxed else "rejected"]
    assert "harness/sources.py" in reasons[0] and "only train.py may change" in reasons[0]
    assert "helper.py is a new file" in reasons[1]
    assert "does not apply" in reasons[2]
    assert "does not compile" in reasons[3]
    assert "unchanged" in reasons[4]
    assert "Read-only file system" in reasons[5] if sandboxed else \
        reasons[5].startswith("while running: prepare.py was modified")
    assert workspace.head(lab.workdir) == head_before
    assert not (repo / "outside.py").exists() and not (tmp_path / "outside.py").exists()
    assert (lab.workdir / "prepare.py").read_text() == original
    log = git(lab.workdir, "log", "--format=%s", "autoresearch/t")
    assert "edit the metric" not in log and "syntax error" not in log


def test_a_symlinked_train_py_is_refused(repo):
    workdir = init_run(repo, "link")
    protected = state.load(workdir)["protected"]
    outside = repo.parent / "elsewhere.py"
    outside.write_text("print('hi')\n")
    (workdir / "train.py").unlink()
    (workdir / "train.py").symlink_to(outside)
    assert "regular file" in guard.check_proposal(workdir, protected)


def test_secrets_never_reach_train_py(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-123")
    monkeypatch.setenv("MY_SECRET_TOKEN", "hunter2")
    lab = new_lab(repo)
    lab.run(ReplayAgent(write_replay(tmp_path / "r.jsonl", [])))
    log = next((lab.workdir / "logs").glob("0001-*.log")).read_text()
    assert "secret visible: False" in log and "sk-ant" not in log


def test_each_commit_compiles_in_a_layer_of_its_own_started_from_the_shared_cache(tmp_path, use_cache, monkeypatch):
    # the shared cache outlives /tmp; only the run's first commit (a person's train.py) adds to it, and
    # what a candidate caches (code every later run finding it executes) reaches only its own runs,
    # kept or not: the next experiment starts from the shared cache again
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    shared = tmp_path / "xdg" / "autoresearch-compile"
    repo = make_repo(tmp_path / "repo", variant(KERNEL="baseline-kernel"))
    lab = new_lab(repo, policy=Policy(baseline_runs=2))
    replay = write_replay(tmp_path / "r.jsonl", [
        {"description": "better, planting", "train_py": variant(WEIGHT=1.0, KERNEL="planted")},
        {"description": "after it", "train_py": variant(WEIGHT=0.2)}])
    lab.run(ReplayAgent(replay))
    rows = check_invariants(lab.workdir)
    assert [r["status"] for r in verdicts(rows)] == ["keep", "keep", "discard"]

    def holds(experiment):
        runs = [(i, r) for i, r in enumerate(rows) if r["experiment"] == experiment]
        return [next(line for line in logs.row_log(lab.workdir, r, i).read_text().splitlines()
                     if line.startswith("compile cache holds:")) for i, r in runs]

    assert holds("1") == ["compile cache holds: []", "compile cache holds: ['baseline-kernel']"]
    assert holds("2")[0] == "compile cache holds: ['baseline-kernel']"  # warm from the shared cache
    assert "planted" in holds("2")[1]  # its own confirmation finds what its first run cached
    assert holds("3") == ["compile cache holds: ['baseline-kernel']"]  # the next experiment does not
    assert sorted(p.name for p in shared.iterdir()) == ["baseline-kernel"]
    mount = lab.workdir / ".lab" / "compile"
    last_log = logs.row_log(lab.workdir, rows[-1], len(rows) - 1).read_text()
    assert f"compile cache: {mount} {mount / 'triton'}" in last_log
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # the user's choice of shared cache wins
    executor = Scheduler(lab.workdir, display=Quiet()).make_executor()
    assert executor.layers.shared == tmp_path / "mine"
    executor.close()


def test_compile_layers_keep_the_latest_commits_and_a_full_disk_costs_only_a_cold_compile(tmp_path):
    from autoresearch.harness import CompileLayers
    shared = tmp_path / "shared"
    (shared / "fxgraph").mkdir(parents=True)
    (shared / "fxgraph" / "entry").write_text("the baseline's")
    (shared / "precompiled_headers").mkdir()
    (shared / "precompiled_headers" / "big.h.gch").write_text("not copied into any layer")
    layers = CompileLayers(tmp_path / "work", trusted="base", shared=shared)
    for k in range(CompileLayers.KEEP + 2):
        layers.enter(f"c{k}")
        assert (layers.mount / "fxgraph" / "entry").read_text() == "the baseline's"
        (layers.mount / f"mine-{k}").write_text("x")
        (layers.mount / "fxgraph" / "entry").write_text("changed by a candidate")
        layers.leave(f"c{k}")
        assert not any(layers.mount.iterdir())
        time.sleep(0.01)  # the layers' times apart
    kept = sorted(p.name for p in layers.store.iterdir())
    assert kept == sorted(f"c{k}" for k in range(2, CompileLayers.KEEP + 2))
    layers.enter("c5")  # a kept layer comes back as its runs left it
    assert sorted(p.name for p in layers.mount.iterdir()) == ["fxgraph", "mine-5"]
    layers.leave("c5")
    layers.enter("base")  # the run's first commit adds new files to the shared cache, changes none
    (layers.mount / "fxgraph" / "entry").write_text("changed")
    (layers.mount / "triton").mkdir()
    (layers.mount / "triton" / "kernel").write_text("new")
    layers.leave("base")
    assert (shared / "fxgraph" / "entry").read_text() == "the baseline's"
    assert (shared / "triton" / "kernel").read_text() == "new"
    shutil.rmtree(layers.store)
    layers.store.write_text("")  # where layers cannot be kept (a full disk raises the same OSError)
    layers.enter("c20")
    (layers.mount / "x").write_text("x")
    layers.leave("c20")
    assert not any(layers.mount.iterdir())
    layers.enter("c20")
    assert sorted(p.name for p in layers.mount.iterdir()) == ["fxgraph", "triton"]  # no precompiled_headers

def test_train_py_processes_write_bytecode_where_none_is_cached(tmp_path, monkeypatch):
    import py_compile
    from autoresearch import harness
    (tmp_path / "pkg_without_pyc").mkdir()
    origin = tmp_path / "pkg_without_pyc" / "__init__.py"
    origin.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)
    assert harness.bytecode_uncached("pkg_without_pyc")
    assert harness.bytecode_env("pkg_without_pyc") == {"PYTHONDONTWRITEBYTECODE": "",
                                                       "PYTHONPYCACHEPREFIX": str(tmp_path / "xdg" / "autoresearch-pyc")}
    monkeypatch.setenv("PYTHONPYCACHEPREFIX", str(tmp_path / "mine"))  # the user's choice wins
    assert harness.bytecode_env("pkg_without_pyc")["PYTHONPYCACHEPREFIX"] == str(tmp_path / "mine")
    py_compile.compile(str(origin), doraise=True)
    assert not harness.bytecode_uncached("pkg_without_pyc") and harness.bytecode_env("pkg_without_pyc") == {}
    assert not harness.bytecode_uncached("no_such_module_anywhere")
    # its top cached, a sampled submodule not (the compiler, imported only by compiled runs): uncached
    (tmp_path / "pkg_without_pyc" / "_inductor").mkdir()
    (tmp_path / "pkg_without_pyc" / "_inductor" / "compile_fx.py").write_text("Y = 2\n")
    assert harness.bytecode_uncached("pkg_without_pyc")
    py_compile.compile(str(tmp_path / "pkg_without_pyc" / "_inductor" / "compile_fx.py"), doraise=True)
    assert not harness.bytecode_uncached("pkg_without_pyc")


def test_a_run_where_torch_has_no_cached_bytecode_caches_it_for_every_experiment(repo, tmp_path, use_cache):
    """PYTHONDONTWRITEBYTECODE set and no bytecode where Python looks (an empty PYTHONPYCACHEPREFIX):
    without the lab's help each experiment would compile torch's source again."""
    replay = write_replay(tmp_path / "r.jsonl", [])
    prefix = tmp_path / "empty-prefix"
    assert cli(repo, use_cache, "init", "--tag", "pyc").returncode == 0
    out = cli(repo, use_cache, "run", "--agent", f"replay:{replay}", "--max-experiments", "1", "--baseline-runs", "1",
              PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=prefix)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"torch's bytecode is not cached where this Python looks: experiments keep it in {prefix}" in out.stdout
    assert list(prefix.rglob("torch/__init__.*.pyc")) and list(prefix.rglob("torch/nn/modules/linear.*.pyc"))


PRELOADED = ('import sys\nprint("torch preloaded:", "torch" in sys.modules, "| argv:", sys.argv, "| name:", __name__,'
             ' "| handoff:", "AUTORESEARCH_HANDOFF" in __import__("os").environ, flush=True)\n')


def test_the_next_python_is_started_while_the_agent_works(tmp_path, use_cache, monkeypatch):
    """Each experiment runs in a Python started before it was handed over (for the baseline, as the
    loop starts; later, as the run before it ends), which had torch imported by then, unless train.py
    sets environment variables (then a fresh one, so torch sees them at import). It runs train.py as
    `python train.py` would, fails the same way, gets no secrets, and none is left behind;
    AUTORESEARCH_PRESTART=0 turns it off."""
    from autoresearch import runner
    started = []

    class Recorded(runner.Prestarted):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(runner, "Prestarted", Recorded)
    monkeypatch.setenv("MY_SECRET_TOKEN", "hunter2")
    repo = make_repo(tmp_path / "repo", PRELOADED + FAKE_TRAIN)
    sets_env = variant(WEIGHT=0.2).replace("\nWEIGHT = ", '\nos.environ["OMP_NUM_THREADS"] = "1"\nWEIGHT = ', 1)
    replay = write_replay(tmp_path / "r.jsonl", [
        {"description": "stronger", "train_py": PRELOADED + variant(WEIGHT=1.0)},
        {"description": "sets a variable", "train_py": PRELOADED + sets_env},
        {"description": "explodes", "train_py": PRELOADED + variant(CRASH=True)},
    ])
    lab = new_lab(repo, policy=Policy(baseline_runs=2))
    assert lab.run(ReplayAgent(replay)) == 4
    rows = verdicts(check_invariants(lab.workdir))
    assert [r["status"] for r in rows] == ["keep", "keep", "discard", "crash"]
    assert "boom: the model exploded" in rows[3]["reason"]
    logs = [(lab.workdir / "logs" / f"{i:04d}-{r['commit']}-s42.log").read_text() for i, r in enumerate(rows, 1)]
    same = "| argv: ['train.py'] | name: __main__ | handoff: True"
    ahead = "# python started ahead: torch was imported before train.py was handed over\ntorch preloaded: True "
    assert logs[0].startswith(ahead + same) and logs[1].startswith(ahead + same)
    assert logs[2].startswith("# python started fresh: train.py sets environment variables, which torch may "
                              "read as it is imported\ntorch preloaded: False " + same)
    assert "torch preloaded: True" in logs[3] and "RuntimeError: boom" in logs[3]
    assert all("secret visible: False" in log for log in logs)
    # one as the loop starts, then one as each run ends (it imports while the run is scored and the agent
    # works): the baseline's second seed, which follows at once, was started ahead too
    assert len(started) == 1 + len(list((lab.workdir / "logs").glob("*.log")))
    assert (lab.workdir / "logs" / f"0001-{rows[0]['commit']}-s43.log").read_text().startswith(ahead + same)
    assert all(p.proc.poll() is not None for p in started)  # none left behind

    monkeypatch.setenv("AUTORESEARCH_PRESTART", "0")
    started.clear()
    lab = new_lab(repo, tag="off")
    lab.run(ReplayAgent(write_replay(tmp_path / "r2.jsonl", [{"description": "stronger",
                                                               "train_py": PRELOADED + variant(WEIGHT=1.0)}])))
    assert started == []
    log = next((lab.workdir / "logs").glob("0002-*.log")).read_text()
    assert log.startswith("torch preloaded: False")


def test_a_python_started_ahead_loads_the_compiler_only_where_train_py_compiles(tmp_path):
    """With AUTORESEARCH_COMPILE=1 the Python started ahead has the compiler imported and its cache keys
    computed before train.py runs; on a CPU by default (train.py does not compile there), neither."""
    import os
    from autoresearch import runner
    (tmp_path / "train.py").write_text(
        'import sys\nloaded = "torch._dynamo" in sys.modules\n'
        'from torch._inductor.codecache import CacheBase\n'
        'print("compiler:", loaded, "| keys:", CacheBase.get_system.cache_info().currsize)\n')
    for compiling, expected in (("1", "compiler: True | keys: 1"), (None, "compiler: False | keys: 0")):
        env = {k: v for k, v in os.environ.items() if k != "AUTORESEARCH_COMPILE"}
        env.update(AUTORESEARCH_DEVICE="cpu", **({"AUTORESEARCH_COMPILE": compiling} if compiling else {}))
        log = tmp_path / f"{compiling}.log"
        runner.run_training(tmp_path, log, env, 120, prestarted=runner.Prestarted(tmp_path, env))
        assert log.read_text().startswith("# python started ahead"), log.read_text()
        assert expected in log.read_text(), log.read_text()


def test_which_train_py_sets_environment_variables():
    from autoresearch.runner import sets_environment
    for source in ['import os\nos.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"\nimport torch',
                   "import os\nos.environ.setdefault('OMP_NUM_THREADS', '4')",
                   "from os import environ\nenviron.update(TORCH_LOGS='recompiles')",
                   "import os\nos.putenv('X', '1')", "import os\ndel os.environ['CUDA_VISIBLE_DEVICES']",
                   "import os\nos.environ |= {'X': '1'}", "import os\nos.environ.pop('X', None)"]:
        assert sets_environment(source), source
    for source in ["import os\nSEED = int(os.environ.get('AUTORESEARCH_SEED', '42'))",
                   "import os\nprint(os.environ['HOME'])", "environment = {}\nenvironment['x'] = 1",
                   (ROOT / "train.py").read_text(), "def broken(:"]:
        assert not sets_environment(source), source


def test_init_refuses_an_existing_tag_and_a_missing_cache(repo, tmp_path):
    init_run(repo, "dup")
    with pytest.raises(LabError, match="exists already"):
        init_run(repo, "dup")
    with pytest.raises(LabError, match=r"prepare\.py --source python --profile tiny"):
        init_run(repo, "other", cache=tmp_path / "no-cache")
    with pytest.raises(LabError, match="bad tag"):
        init_run(repo, "../escape")


def test_a_ledger_from_another_environment_is_refused(repo, tmp_path):
    lab = new_lab(repo)
    lab.run(ReplayAgent(write_replay(tmp_path / "r.jsonl", [])))
    rows = ledger.read_rows(lab.workdir / "results.tsv")
    text = (lab.workdir / "results.tsv").read_text().replace(rows[0]["data_hash"], "0123456789ab")
    (lab.workdir / "results.tsv").write_text(text)
    with pytest.raises(LabError, match="data_hash.*not comparable"):
        Scheduler(lab.workdir, display=Quiet()).run(ReplayAgent(write_replay(tmp_path / "r2.jsonl", [])))


def test_cli_init_run_status(repo, tmp_path, use_cache):
    replay = write_replay(tmp_path / "r.jsonl", [{"description": "better", "train_py": variant(WEIGHT=1.0)}])
    out = cli(repo, use_cache, "init", "--tag", "cli")
    assert out.returncode == 0 and "runs/cli" in out.stdout
    out = cli(repo, use_cache, "init", "--tag", "cli")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "exists already" in out.stderr
    out = cli(repo, use_cache, "run", "--agent", f"replay:{replay}", "--max-experiments", "5", "--baseline-runs", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "#2 replay: better" in out.stdout and "keep" in out.stdout
    status = json.loads(cli(repo, use_cache, "status", "--json").stdout)
    assert {"branch", "workdir", "results", "experiments", "kept", "best_val_bpb", "noise", "running"} <= set(status)
    assert status["experiments"] == 2 and status["runs"] == 4 and status["kept"] == 2 and status["running"] is False
    assert status["best_runs"] == 2 and status["noise"]["sigma"] == 0.0  # the stand-in has no noise
    assert status["branch"] == "autoresearch/cli"
    out = cli(repo, use_cache, "status")
    assert "best val_bpb" in out.stdout and "better" in out.stdout and "noise ±0.0000 bpb per run" in out.stdout
    out = cli(repo, use_cache, "run", "--agent", "nonsense")
    assert out.returncode == 2 and "unknown agent" in out.stderr


def test_the_search_agent_drives_the_real_train_py(tmp_path, use_cache):
    from autoresearch.agents.search import SearchAgent
    repo = make_repo(tmp_path / "real", (ROOT / "train.py").read_text())
    lab = new_lab(repo, policy=Policy(name="single"))  # one run each: the real train.py is the slow part
    assert lab.run(SearchAgent(seed=1), max_experiments=2) == 2
    rows = check_invariants(lab.workdir)
    assert len(rows) == 2
    assert rows[0]["status"] == "keep" and 0 < float(rows[0]["val_bpb"]) < float("inf")  # how low: load-dependent;
    # that the real train.py learns is tests/test_train.py's to show
    assert rows[1]["agent"] == "search" and "[s:" in rows[1]["description"]
    assert rows[1]["status"] in ("keep", "discard") and rows[1]["val_bpb"]
    assert int(rows[1]["lines_added"]) >= 1 and float(rows[1]["lab_seconds"]) >= 0


def test_a_loop_given_a_number_of_experiments_says_which_one_runs_and_the_time_left():
    from autoresearch.loop import countdown
    assert countdown(0.0, 0, 5, None) == " (experiment 1 of 5)"
    assert countdown(120.0, 2, 5, None) == " (experiment 3 of 5, about 3 min left)"  # 60 s each so far
    assert countdown(120.0, 2, 5, 0.05) == " (experiment 3 of about 3, about 1 min left)"  # 3 min allowed in all
    assert countdown(120.0, 2, 13, 0.1) == " (experiment 3 of about 6, about 4 min left)"  # 4 min left: 4 more start
    assert countdown(120.0, 2, 4, 1.0) == " (experiment 3 of 4, about 2 min left)"  # the number ends first
    assert countdown(10.0, 1, None, 1.0) == ""
    assert countdown(120.0, 2, 5, None, others=1) == " (experiment 4 of 5, about 3 min left)"  # one more in flight
    assert countdown(120.0, 2, 13, 0.05, others=2) == " (experiment 5 of about 5, about 1 min left)"


def test_the_demo_summary_says_how_sure_each_keep_is_and_what_it_means(tmp_path, capsys):
    from autoresearch.cli import print_demo_summary
    from test_analysis import write_runs
    write_runs(tmp_path / "results.tsv")
    print_demo_summary(tmp_path, [dict(number=3, description="worse", phase="measuring")])
    out = capsys.readouterr().out
    assert "baseline val_bpb 3.050000 (mean of 3 runs)" in out
    assert "kept #2: val_bpb 2.950000 over 3 runs, 0.1000 lower than the best it was tried on, between 0.0500 " \
           "and 0.1500 lower at 95%: better lr" in out  # the confidence its verdict row recorded
    assert "#3 (worse) was still being measured (2 runs so far): continuing the run finishes it" in out
    assert "what it means: val_bpb is how many bits" in out and "report --compare" in out
