"""The marimo notebooks (notebooks/prepare.py, launch.py, analyze.py): they pass `marimo check`, run
headless as scripts with their default UI values (which start nothing slow), export to HTML, and
their buttons' cells do what they say when run as functions (marimo's Cell.run).
Run: uv run pytest tests/test_notebooks.py   (about a minute; every test starts a Python process)"""
import contextlib
import importlib.util
import itertools
import os
import re
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from autoresearch import background, ledger, state, workspace
from autoresearch.scheduler import init_run
from conftest import ROOT, TINY_ARGS
from lab_helpers import make_repo, variant

NOTEBOOKS = ROOT / "notebooks"
NAMES = ["prepare", "launch", "analyze"]
_counter = itertools.count()


def marimo(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "marimo", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def load_notebook(name):
    """The notebook as a module (its setup cell runs; its cells become callable with .run())."""
    spec = importlib.util.spec_from_file_location(f"nb_{name}_{next(_counter)}", NOTEBOOKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ui(value):
    """A stand-in for a UI element: what a cell reads is its .value."""
    return types.SimpleNamespace(value=value)


def write_sample_ledger(path):
    rows = [
        dict(commit="aaaaaaa", val_bpb=1.60, status="keep", description="baseline", agent="baseline",
             lines_added=0, lines_removed=0),
        dict(commit="bbbbbbb", val_bpb=1.55, status="keep", description="wider model", agent="claude",
             lines_added=3, lines_removed=1, cost_usd=0.12, input_tokens=1000, output_tokens=200),
        dict(commit="ccccccc", val_bpb=1.58, status="discard", description="raise the lr", agent="claude",
             lines_added=1, lines_removed=1, cost_usd=0.08),
        dict(commit="ddddddd", status="crash", description="explodes", agent="search", reason="RuntimeError: boom"),
        dict(commit="none", status="rejected", description="touches prepare", agent="search",
             reason="prepare.py changed"),
    ]
    for row in rows:
        ledger.append(path, row)
    return path


@pytest.fixture(scope="module")
def setting(tiny_cache, tmp_path_factory):
    """A sample ledger, and a project with a run whose baseline is recorded (with its log)."""
    base = tmp_path_factory.mktemp("notebooks")
    results = write_sample_ledger(base / "results.tsv")
    repo = make_repo(base / "repo")
    workdir = init_run(repo, "nbrun", cache=tiny_cache)
    commit = workspace.head(workdir)[:7]
    ledger.append(workdir / "results.tsv", dict(
        commit=commit, val_bpb=3.5, status="keep", description="baseline", agent="baseline",
        device="cpu (test)", profile="tiny", time_budget="4"))
    (workdir / "logs").mkdir()
    (workdir / "logs" / f"0001-{commit}.log").write_text("".join(
        f"step {s:05d} | {s * 10:5.1f}% | loss {8 - s * 0.5:.6f} | lr 1.00 | dt 1ms | 1,000 tok/s | mfu n/a\n"
        for s in range(11)))
    env = dict(os.environ, AUTORESEARCH_CACHE=str(tiny_cache), AUTORESEARCH_DEVICE="cpu",
               AUTORESEARCH_RESULTS=str(results), AUTORESEARCH_ROOT=str(repo), PYTHONUNBUFFERED="1",
               # marimo keeps session snapshots in __marimo__/ beside a notebook, or under this prefix
               PYTHONPYCACHEPREFIX=str(base / "pycache"))
    return types.SimpleNamespace(results=results, repo=repo, env=env, base=base)


def script_header(path) -> dict:
    """A notebook's inline script metadata (PEP 723), as TOML."""
    import tomllib
    block = re.search(r"^# /// script\n(.*?)^# ///\n", path.read_text(), re.S | re.M).group(1)
    return tomllib.loads("".join(line[2:] + "\n" if line.startswith("# ") else "\n" for line in block.splitlines()))


@pytest.mark.parametrize("name", NAMES)
def test_a_notebook_run_as_a_script_gets_the_versions_of_uv_lock(name):
    """`uv run notebooks/NAME.py` (and `marimo edit --sandbox`) builds its environment from the script
    header and the script's own lock beside it: that lock must be for this header and hold every
    package at uv.lock's version (after `uv lock` changes uv.lock, run .ci/lock-notebooks)."""
    import tomllib
    lock_path = NOTEBOOKS / f"{name}.py.lock"
    assert lock_path.is_file(), f"{lock_path.name} is missing: run .ci/lock-notebooks"
    script_lock = tomllib.loads(lock_path.read_text())
    project = {(p["name"], p.get("version")) for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]}
    header = script_header(NOTEBOOKS / f"{name}.py")
    locked_for = sorted(r["name"] for r in script_lock["manifest"]["requirements"])
    assert locked_for == sorted(re.split(r"[<>=!~ ]", d, 1)[0] for d in header["dependencies"]), \
        f"{lock_path.name} was locked for another header: run .ci/lock-notebooks"
    differ = sorted(f"{p['name']} {p.get('version')}" for p in script_lock["package"]
                    if (p["name"], p.get("version")) not in project)  # a package at two versions: one per Python
    assert len(script_lock["package"]) > 50 and not differ, \
        f"{lock_path.name} holds what uv.lock does not: {differ}: run .ci/lock-notebooks"


def test_marimo_check_finds_nothing():
    out = marimo("check", "--strict", *[str(NOTEBOOKS / f"{n}.py") for n in NAMES])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "issue" not in (out.stdout + out.stderr).lower(), out.stdout + out.stderr


@pytest.mark.parametrize("name", NAMES)
def test_runs_headless_as_a_script(setting, name):
    t0 = time.time()
    out = subprocess.run([sys.executable, str(NOTEBOOKS / f"{name}.py")], cwd=ROOT, env=setting.env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert time.time() - t0 < 60
    assert background.loop_pid(setting.repo, "nbrun") is None  # the defaults start nothing


EXPECT = {  # something each export must show, from the setting's files
    "prepare": ["What was made", "re-encodes to the same ids", "⟨BOS⟩", "document lengths"],
    "launch": ["nbrun", "In flight", "not running", "cpu (test)", "loss: running vs best"],
    "analyze": ["wider model", "RuntimeError: boom", "Cost per agent"],
}


@pytest.mark.parametrize("name", NAMES)
def test_exports_to_html(setting, name, tmp_path):
    out_file = tmp_path / f"{name}.html"
    out = marimo("export", "html", str(NOTEBOOKS / f"{name}.py"), "-o", str(out_file), env=setting.env)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    text = out_file.read_text()
    assert len(text) > 10_000
    for phrase in EXPECT[name]:
        assert phrase in text or phrase.encode("unicode_escape").decode() in text, phrase


@pytest.mark.parametrize("content", ["missing", "header only", "five columns"])
def test_analyze_works_with_zero_rows_and_old_ledgers(setting, tmp_path, monkeypatch, content):
    path = tmp_path / "results.tsv"
    if content == "header only":
        path.write_text("\t".join(ledger.COLUMNS) + "\n")
    elif content == "five columns":  # the original project's file: 0.0 for a crash
        path.write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
                        "a1b2c3d\t0.997900\t44.0\tkeep\tbaseline\nb2c3d4e\t0.000000\t0.0\tcrash\tOOM\n")
    monkeypatch.setenv("AUTORESEARCH_RESULTS", str(path))
    monkeypatch.setenv("AUTORESEARCH_ROOT", str(tmp_path))  # no runs/ here
    nb = load_notebook("analyze")
    _, defs = nb.app.run()  # every cell, as `python notebooks/analyze.py` runs them
    assert defs["df"].height == (2 if content == "five columns" else 0)
    if content == "five columns":
        assert defs["df"]["val"].to_list() == [0.9979, None]


def test_the_prepare_button_runs_prepare_and_shows_its_output(setting, tiny_cache):
    nb = load_notebook("prepare")
    bumps = []
    args = dict(zip(TINY_ARGS[::2], TINY_ARGS[1::2]))
    cell_args = dict(cache_box=ui(str(tiny_cache)), eval_tokens=ui(int(args["--eval-tokens"])), force=ui(False),
                     max_chars=ui(int(args["--max-chars"])), path_box=ui(""), profile=ui(args["--profile"]),
                     run_prepare=ui(True), set_generation=bumps.append, source=ui(args["--source"]),
                     time_budget=ui(int(args["--time-budget"])))
    output, _ = nb.do_prepare.run(**cell_args)  # the cache as the tests prepared it: nothing to do
    assert "finished" in output.text and "already prepared" in output.text and len(bumps) == 1
    output, _ = nb.do_prepare.run(**dict(cell_args, time_budget=ui(5)))  # other settings: refused, and said so
    assert "failed" in output.text and "already holds another cache" in output.text
    assert nb.runtime.load_manifest(tiny_cache)["constants"]["TIME_BUDGET"] == 4  # untouched


def test_the_launch_buttons_init_start_watch_and_stop(tiny_cache, tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "repo")
    monkeypatch.setenv("AUTORESEARCH_ROOT", str(repo))
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tiny_cache))
    monkeypatch.setenv("AUTORESEARCH_DEVICE", "cpu")
    nb = load_notebook("launch")
    assert nb.ROOT == repo
    changed = [dict(n=0, said=None)]  # the notebook's state the buttons set

    def bump(update):
        changed[0] = update(changed[0])

    def act(cell, **inputs):
        """A button pressed: its cell, then what the notebook shows under the buttons."""
        cell.run(**inputs)
        return nb.said.run(get_changed=lambda: changed[0])[0]

    tag = ui("lt")

    def live_text():
        output, _ = nb.live_view.run(get_changed=lambda: 0, refresh=ui("2s"), tag=tag)
        return output.text

    for typed, says in (("", "Type a tag in the"), ("a b", "cannot be a tag"), ("lt", "No run tagged")):
        tag = ui(typed)
        assert says in live_text(), typed
    output = act(nb.do_init, cache_pick=ui(str(tiny_cache)), init_button=ui(True), set_changed=bump, tag=tag)
    assert "Created run" in output.text and "profile tiny" in output.text
    output = act(nb.do_init, cache_pick=ui(str(tiny_cache)), init_button=ui(True), set_changed=bump, tag=tag)
    # the notebook's own control is named; the command stays code
    assert "exists already" in output.text and "pick another tag in the tag box" in output.text
    assert "--tag" not in output.text.replace("autoresearch run --tag lt", "")
    assert "Now:</strong> stopped" in live_text()
    start = dict(agent=ui("search"), extra=ui("--seed 3"), max_experiments=ui(1), max_hours=ui(0),
                 replay_file=ui(""), set_changed=bump, start_button=ui(True), tag=tag)
    output = act(nb.do_start, **dict(start, agent=ui("replay")))
    assert "needs a file" in output.text
    try:
        output = act(nb.do_start, **start)
        assert "Loop started" in output.text
        pid = background.loop_pid(repo, "lt")
        assert pid and f"running, pid {pid}" in live_text()
        output = act(nb.do_start, **start)
        assert "already running" in output.text
        deadline, phases = time.time() + 60, set()  # one experiment (the baseline), then the loop ends by itself
        while background.loop_pid(repo, "lt") and time.time() < deadline:
            phases.add(re.search(r"Now:</strong> (\w+)", live_text()).group(1))
            time.sleep(0.2)
        assert phases & {"starting", "training", "evaluating"}, phases  # the live view names what the loop does
        text = live_text()
        assert "not running" in text and "baseline" in text and "--seed 3" in text
        assert "Now:</strong> stopped" in text and "In flight" not in text
    finally:
        background.stop_loop(repo, "lt", timeout=10)
    output = act(nb.do_stop, set_changed=bump, stop_button=ui(True), tag=tag)
    assert "No loop was running" in output.text
    assert ledger.read_rows(repo / "runs" / "lt" / "results.tsv")[0]["seed"] == "3"


def test_the_launch_notebook_prepares_a_cache_with_a_chosen_budget_and_lists_it(tmp_path, monkeypatch):
    """A classroom budget without leaving the notebook: the cache is prepared in the user's cache folder,
    listed with its profile and budget, and picked for new runs."""
    from autoresearch import harness
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "nothing-here"))
    nb = load_notebook("launch")
    picked, outcomes = [], []
    nb.do_prepare.run(class_budget=ui(7), prepare_button=ui(True), set_cache=picked.append,
                      set_prepared=outcomes.append)
    made = (tmp_path / "home-cache" / "autoresearch-tiny-7s").resolve()
    assert picked == [str(made)] and outcomes[-1]["kind"] == "success"
    # the list of caches, made again by that, shows the outcome (the prepare cell's button is new then)
    output, _ = nb.pick_cache.run(get_cache=lambda: picked[-1], get_prepared=lambda: outcomes[-1],
                                  set_cache=picked.append)
    assert "Prepared" in output.text and "tiny profile, 7 s per run" in output.text, output.text
    # one that cannot be made says why, where the button is
    (tmp_path / "home-cache" / "autoresearch-tiny-9s").write_text("a file where the folder would go")
    nb.do_prepare.run(class_budget=ui(9), prepare_button=ui(True), set_cache=picked.append,
                      set_prepared=outcomes.append)
    assert outcomes[-1]["kind"] == "danger" and picked == [str(made)]
    output, _ = nb.pick_cache.run(get_cache=lambda: picked[-1], get_prepared=lambda: outcomes[-1],
                                  set_cache=picked.append)
    assert "Could not prepare" in output.text and "is a file, not a folder: move it away" in output.text, output.text
    listed = dict(harness.prepared_caches())
    assert list(listed) == [made] and listed[made]["constants"]["TIME_BUDGET"] == 7
    assert "(tiny profile, 7 s per run, python source)" in harness.describe_cache(made, listed[made])


def test_an_experiment_picked_in_the_analyze_notebook_shows_its_runs_diff_and_log(setting, tiny_cache, tmp_path):
    """What a click on a chart shows: the experiment's verdict, its runs, its diff against its parent
    (read from the run's repository) and the tail of its log."""
    from autoresearch import analysis
    nb = load_notebook("analyze")
    results = run_with_a_change(tmp_path, tiny_cache)
    df = analysis.load(results)
    assert analysis.picked({analysis.PICK: {"experiment": [2]}}) == 2 and analysis.picked({}) is None
    text = nb.detail_view(df, 2, results).text
    assert "#2: a stronger unigram" in text and "discard" in text and "+1/−1 lines" in text
    assert "-WEIGHT = 0.5" in text and "+WEIGHT = 0.9" in text  # the diff, from the run's repository
    assert "the last line" in text  # its log's tail
    assert "Click a point" in nb.detail_view(df, None, results).text
    # from a results file outside a run's worktree: no diff to read, and the view says where it is
    assert "in the run's worktree" in nb.detail_view(analysis.load(setting.results), 2, setting.results).text


def run_with_a_change(tmp_path, cache):
    """A run's worktree with a baseline and one discarded change, its commit and its log: its results.tsv."""
    workdir = init_run(make_repo(tmp_path / "repo"), "pick", cache=cache)
    base = workspace.head(workdir)
    (workdir / "train.py").write_text((workdir / "train.py").read_text().replace("WEIGHT = 0.5", "WEIGHT = 0.9"))
    commit = workspace.commit_train(workdir, "a stronger unigram")
    results = workdir / "results.tsv"
    ledger.append(results, dict(experiment=1, commit=base[:7], role="baseline", seed=42, run_bpb=3.5, val_bpb=3.5,
                                status="keep", description="baseline", runs=1))
    ledger.append(results, dict(experiment=2, commit=commit[:7], parent=base[:7], role="candidate", seed=42,
                                run_bpb=3.4, val_bpb=3.4, status="discard", description="a stronger unigram",
                                lines_added=1, lines_removed=1, runs=1))
    (workdir / "logs").mkdir()
    (workdir / "logs" / f"0002-{commit[:7]}-s42.log").write_text("step 00000 | 0.0% | loss 8.0\nthe last line\n")
    return results


CHROMIUM = "/usr/bin/chromium"


@contextlib.contextmanager
def served_notebook(name, cwd, **env):
    """The notebook served as an app (`marimo run`) and a headless Chromium page on it, loaded."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "marimo", "run", "--headless", "--host", "127.0.0.1",
                               "--port", str(port), "--no-token", str(NOTEBOOKS / f"{name}.py")], cwd=cwd,
                              env=dict(os.environ, **env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1300, "height": 1600})
            deadline = time.time() + 60
            while True:  # the server takes a few seconds to listen
                try:
                    page.goto(f"http://127.0.0.1:{port}")
                    break
                except sync_api.Error:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.5)
            try:
                yield page
            except Exception:
                page.screenshot(path=str(Path(cwd) / "failed.png"), full_page=True)  # what the page showed
                raise
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def click_until_shown(target, shown, seconds=90):
    """Clicks target until shown is visible, as a person clicks again when a page still loading missed
    the first click (a chart drawn before its selection listens); fails when it never shows."""
    from playwright.sync_api import Error
    deadline = time.time() + seconds
    while True:
        target.click(timeout=30_000)
        try:
            shown.first.wait_for(timeout=5_000)
            return
        except Error:
            if time.time() > deadline:
                raise


needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}")


@needs_chromium
def test_clicking_a_point_in_chromium_shows_that_experiment_and_its_diff(tiny_cache, tmp_path):
    """The analyze notebook in headless Chromium: a click on experiment 2 in the progress chart shows
    it, and its diff opens under it. An early abort's long reason is read whole in its table."""
    results = run_with_a_change(tmp_path, tiny_cache)
    reason = ("pruned at 30% of the budget: training loss 7.412 against the best's 6.903 (+0.509, more than "
              "0.041); the candidate's curve stayed above the best's at every checkpoint after that one")
    ledger.append(results, dict(experiment=3, commit="abcdef0", parent="none", role="candidate", seed=42,
                                status="pruned", description="a learning rate far too high", runs=1, reason=reason))
    with served_notebook("analyze", tmp_path, AUTORESEARCH_ROOT=str(results.parents[2]),
                         AUTORESEARCH_CACHE=str(tiny_cache)) as page:
        page.wait_for_selector("text=Click a point", timeout=60_000)
        click_until_shown(page.locator('path[aria-label*="experiment: 2;"]').first,
                          page.get_by_text("#2: a stronger unigram"))
        page.get_by_text("diff of train.py against the best it was tried on").click()
        page.locator("pre:visible", has_text="+WEIGHT = 0.9").first.wait_for(timeout=30_000)
        cell = page.locator("td", has_text="every checkpoint after that one").first
        cell.wait_for(timeout=30_000)
        cut = cell.evaluate("e => [e, ...e.querySelectorAll('*')].filter(x => getComputedStyle(x).overflow "
                            "=== 'hidden' && x.scrollWidth > x.clientWidth + 1).length")
        assert not cut, "the reason is cut off in its table cell"
        # then the baseline in the complexity chart: the last click is what shows
        click_until_shown(page.locator('path[aria-label*="experiment: 1;"]').nth(1),
                          page.get_by_text("#1: baseline"))
        assert not page.get_by_text("#2: a stronger unigram").count()


@needs_chromium
def test_in_chromium_a_cache_is_picked_a_run_made_on_it_and_the_live_view_names_the_phase(tiny_cache, tmp_path):
    """The launch notebook as a participant uses it: pick the second of two prepared caches (a 3 s
    budget), init a run on it, start the loop, see the phase of the run in flight (the baseline
    training, as a share of the budget), stop it: nothing is shown in flight after."""
    from harness import build
    home = tmp_path / "home-cache"  # the user's cache folder: where the notebook looks for caches
    other = home / "autoresearch-class"
    build.prepare(profile="tiny", source="python", max_chars=1_000_000, eval_tokens=4096, time_budget=3, cache=other)
    repo = make_repo(tmp_path / "repo", variant(SLEEP=8.0, LOSSES=(8.0, 7.6, 7.2, 6.8, 6.4, 6.0, 5.6, 5.2)))
    with served_notebook("launch", tmp_path, AUTORESEARCH_ROOT=str(repo), AUTORESEARCH_CACHE=str(tiny_cache),
                         XDG_CACHE_HOME=str(home), AUTORESEARCH_DEVICE="cpu", PYTHONPATH=str(ROOT)) as page:
        page.wait_for_selector("text=data for a new run", timeout=60_000)
        # a cache prepared here: what it did stays shown (its cell's button is made again by the list)
        budget = page.locator("marimo-number input").first  # "seconds of training per run", the page's first number
        budget.fill("4")
        budget.press("Enter")
        page.get_by_role("button", name="prepare a tiny cache with this budget").click()
        page.wait_for_selector("text=/Prepared .*autoresearch-tiny-4s/", timeout=180_000)
        page.locator("select").first.select_option(label=f"{other.resolve()} (tiny profile, 3 s per run, python source)")
        tag = page.get_by_role("textbox", name="tag")
        tag.fill("class")
        tag.press("Enter")
        page.get_by_role("button", name="init run").click()
        page.wait_for_selector("text=Created run class", timeout=60_000)
        assert page.get_by_text("3 s per experiment").count() and not page.get_by_text("exists already").count()
        page.wait_for_selector("text=/Runs in .*: class/", timeout=30_000)  # the list, updated
        page.get_by_role("button", name="start loop").click()
        page.wait_for_selector("text=/training the baseline at seed \\d+ \\(\\d+% of the budget\\)/", timeout=120_000)
        assert page.locator("text=/In flight: #1 \\(baseline/").count()
        page.get_by_role("button", name="stop loop").click()
        page.wait_for_selector("text=Loop stopped.", timeout=60_000)
        assert not page.get_by_text(re.compile(r"Loop started \(pid")).count()  # what the last button did, alone
        page.wait_for_selector("text=/Now: stopped/", timeout=30_000)
        assert not page.locator("text=/In flight: #/").count()
    assert state.load(repo / "runs" / "class")["cache"] == str(other.resolve())


@needs_chromium
def test_in_chromium_runs_from_two_participants_are_compared_by_their_gain_over_their_own_baseline(tmp_path):
    """The analyze notebook's comparison: a shared folder holding two participants' results.tsv, named
    in the box, gives the leaderboard (bob went further below his own baseline than alice, whatever
    their val_bpb) and where each was measured; a line naming nothing says so."""
    from test_analysis import write_normal, write_runs
    shared = tmp_path / "shared"
    for name, write in (("alice", write_normal), ("bob", write_runs)):
        (shared / name).mkdir(parents=True)
        write(shared / name / "results.tsv")
    with served_notebook("analyze", tmp_path, AUTORESEARCH_ROOT=str(tmp_path / "no-project")) as page:
        page.wait_for_selector("text=Compare runs", timeout=60_000)
        box = page.get_by_placeholder("more results.tsv files", exact=False)
        box.fill(f"{shared}\n{tmp_path / 'carol'}")
        box.blur()
        page.wait_for_selector("text=Leaderboard", timeout=30_000)
        page.wait_for_selector(f"text=Nothing found at {tmp_path / 'carol'}", timeout=30_000)
        rows = page.locator("tr", has_text="bpb")
        rows.first.wait_for(timeout=30_000)
        board = [r for r in rows.all_inner_texts() if "alice" in r or "bob" in r]
        assert [("bob" in r) for r in board[:2]] == [True, False], board
        assert "−0.1000 bpb" in board[0] and "−0.0795 bpb" in board[1], board
        assert page.get_by_text("Results are local to the machine", exact=False).count()


def test_the_live_view_says_what_the_best_s_value_is_the_mean_of():
    """After a drift of the machine's speed the best's value is the mean of its runs since (what the next
    candidate is compared with), not the value it was kept at: the caption says so, and a long
    description is cut at a word."""
    from autoresearch.measurements import Best
    nb = load_notebook("launch")
    best = dict(number=2, description="HEAD_DIM 64 -> 128 and a much longer description than fits", val_bpb="3.238086")
    after_drift = nb.best_caption(best, Best(commit="647d095", mean=3.449471, runs=1, era=2, seeds=(7,)))
    assert after_drift.startswith("#2 HEAD_DIM 64 -> 128") and " …;" in after_drift
    assert "mean of 1 run since the machine's speed changed (kept at 3.2381)" in after_drift
    assert nb.best_caption(best, Best(commit="647d095", mean=3.238, runs=3, era=1, seeds=(1, 2, 3))).endswith(
        "; mean of 3 runs")
    assert nb.best_caption(None, None) is None
