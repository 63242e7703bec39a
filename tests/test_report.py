"""The HTML report: one offline file (nothing fetched), escaped text, the numbers, the CLI, and a real
headless chromium that renders the charts with no request leaving file://.
Run: uv run pytest tests/test_report.py"""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoresearch import analysis, ledger, report
from test_analysis import EVIL, KINDS, write_ledger, write_normal, write_runs

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def outside_references(text):
    """Everything in the page that would make a browser reach beyond the file itself."""
    found = re.findall(r"""\b(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//[^"'\s>]*""", text, re.I)
    found += re.findall(r"<link\b[^>]*>", text, re.I)
    found += re.findall(r"@import\b[^;]*", text, re.I)
    found += re.findall(r"""url\(\s*["']?\s*(?:https?:)?//[^)]*\)""", text, re.I)
    found += re.findall(r"<script\b[^>]*\bsrc\s*=", text, re.I)  # every script is inline
    return found


def test_report_is_self_contained_and_escaped(tmp_path):
    results = write_normal(tmp_path / "results.tsv")
    started = time.monotonic()
    out = report.write_report(results, tmp_path / "out" / "report.html", title="run <t&t>")
    assert time.monotonic() - started < 15  # the first call also builds vl-convert's bundle
    text = out.read_text()
    assert outside_references(text) == []
    assert text.count("window.vegaEmbed=") == 1  # the bundle is inlined exactly once
    assert text.count('<script type="module">') == 2 and text.count('type="application/json" data-chart=') == 3
    assert "<title>run &lt;t&amp;t&gt;</title>" in text
    # the agent-written description never reaches the page as markup: not in tables, specs or SVG
    assert "<script>alert(1)" not in text
    assert "bigger lr &lt;script&gt;alert(1)&lt;/script&gt;</td>" in text
    assert "alert(1)\\u003c/script\\u003e" in text
    for number in ("1.500000", "1.420500", "0.079500 bpb", "$0.7500", "CUDA out of memory",
                   "touched protected prepare.py", "ran past the budget", "delete dead code", "Cost per agent"):
        assert number in text, number
    assert "<noscript><svg" in text


def test_embedded_specs_are_the_charts(tmp_path):
    results = write_normal(tmp_path / "results.tsv")
    text = report.write_report(results, tmp_path / "report.html").read_text()
    blocks = re.findall(r'<script type="application/json" data-chart="chart-(\w+)">(.*?)</script>', text, re.S)
    assert [name for name, _ in blocks] == ["progress", "complexity", "statuses"]
    specs = {name: json.loads(body) for name, body in blocks}
    df = analysis.load(results)
    assert specs["progress"] == json.loads(json.dumps(analysis.progress_chart(df).to_dict()))


@pytest.mark.parametrize("kind", KINDS)
def test_report_on_every_ledger(tmp_path, kind):
    results = write_ledger(tmp_path / "results.tsv", kind)
    text = report.write_report(results, tmp_path / "report.html").read_text()
    assert outside_references(text) == []
    assert "<h2>Progress</h2>" in text and "<h2>Crashes, timeouts, early aborts and rejections</h2>" in text
    assert ("Cost per agent" in text) == (kind == "normal")
    assert "<h3>Runs spent per verdict</h3>" in text
    if kind in ("empty", "missing"):
        assert "no data yet" in text


def run_cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "autoresearch.cli", "report", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_report_from_a_results_file(tmp_path):
    results = write_normal(tmp_path / "results.tsv")
    out = tmp_path / "sub" / "r.html"
    done = run_cli("--results", str(results), "-o", str(out), "--lam", "0.001", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out) and out.is_file()
    assert "complexity penalty 0.001 bpb" in out.read_text()
    done = run_cli("--results", str(tmp_path / "nope.tsv"), cwd=tmp_path)
    assert done.returncode == 2 and "no results file" in done.stderr


def test_cli_report_of_a_run(tmp_path):
    repo = tmp_path / "repo"
    (repo / "runs" / "mytag" / ".lab").mkdir(parents=True)
    (repo / "train.py").write_text("")
    (repo / "prepare.py").write_text("")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "runs" / "mytag" / ".lab" / "state.json").write_text("{}")
    write_normal(repo / "runs" / "mytag" / "results.tsv")
    done = run_cli("--tag", "mytag", cwd=repo)
    assert done.returncode == 0, done.stderr
    text = (repo / "report.html").read_text()
    assert "autoresearch run mytag" in text and "delete dead code" in text
    assert run_cli("--tag", "other", cwd=repo).returncode == 2


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        yield b
        b.close()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM}")
@pytest.mark.parametrize("kind", ["normal", "empty", "five_columns"])
def test_report_renders_offline_in_chromium(browser, tmp_path, kind):
    out = report.write_report(write_ledger(tmp_path / "results.tsv", kind), tmp_path / "report.html")
    page = browser.new_page()
    errors, outside, dialogs = [], [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    def only_files(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()
    page.route("**/*", only_files)
    try:
        page.goto(out.as_uri())
        page.wait_for_function("document.querySelectorAll('.chart.vega-embed svg.marks, .chart.vega-embed canvas')"
                               ".length >= 3", timeout=30_000)
        rendered = page.locator(".chart.vega-embed svg.marks").count()
        text = page.inner_text("body")
    finally:
        page.close()
    assert rendered >= 3
    assert errors == [] and outside == [] and dialogs == []
    assert "this chart failed" not in text
    if kind == "normal":
        assert EVIL in text  # shown as text, not run


def section(text, heading):
    """The page between this h2 and the next."""
    start = text.index(f"<h2>{heading}</h2>")
    end = text.find("<h2>", start + 1)
    return text[start:end if end > 0 else None]


def test_the_page_opens_with_its_setup_and_shows_every_experiment(tmp_path):
    text = report.write_report(write_runs(tmp_path / "results.tsv"), tmp_path / "report.html").read_text()
    assert text.index("<h2>Setup</h2>") < text.index("How to read this page") < text.index("<h2>Summary</h2>")
    setup = section(text, "Setup")
    for value in ("<th>device</th><td>cpu</td>", "<td>tiny</td>", "<td>10 s</td>", "<td>noise (a keep is 95% sure)</td>",
                  "<td>bwrap</td>", "<td>±0.0462 bpb per run</td>", "<td>search</td>", "<td>dddddddddddd</td>"):
        assert value in setup, value
    assert "better than the best by more than chance explains with 95% confidence" in setup
    assert "it can disagree with the difference of the two val_bpb columns" in setup
    every = section(text, "Every experiment")
    for description in ("baseline", "better lr", "worse", "diverges"):  # the discard and the pruned one too
        assert f"<td>{description}</td>" in every, description
    assert "−0.1000 bpb [−0.1500, −0.0500]" in every and "pruned at 30% of the budget" in every
    # a gain is a lower bpb, never a plus
    assert "<th>change from the baseline</th><td>−0.100000 bpb</td>" in text
    assert re.search(r"\+0\.1\d* ", text) is None
    assert "--tag TAG` adds each kept change" in section(text, "Kept changes")


def test_a_report_without_setup_columns_says_so(tmp_path):
    text = report.write_report(write_normal(tmp_path / "results.tsv"), tmp_path / "report.html").read_text()
    assert "<th>device</th><td>not recorded</td>" in text and "<td>not measured</td>" in text
    assert "<th>change from the baseline</th><td>−0.079500 bpb</td>" in text
    assert "<td>deeper</td>" in section(text, "Every experiment")  # a discard, in no other table


def test_kept_changes_come_with_their_diffs_from_the_run_s_repository(tmp_path):
    from lab_helpers import git
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text("lr = 0.01\nsteps = 10\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "train.py")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    base = git(repo, "rev-parse", "--short=7", "HEAD")
    (repo / "train.py").write_text("lr = 0.02  # <b>bold</b>\nsteps = 10\n")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "higher")
    kept = git(repo, "rev-parse", "--short=7", "HEAD")
    results = tmp_path / "results.tsv"
    ledger.append(results, dict(experiment=1, commit=base, status="keep", val_bpb=3.0, description="baseline",
                                role="baseline", seed=42, run_bpb=3.0))
    ledger.append(results, dict(experiment=2, commit=kept, parent=base, status="keep", val_bpb=2.9, role="confirm",
                                seed=43, run_bpb=2.9, description="<i>higher lr</i>", lines_added=1, lines_removed=1))
    ledger.append(results, dict(experiment=3, commit="abcdef0", parent=kept, status="keep", val_bpb=2.8,
                                role="confirm", seed=43, run_bpb=2.8, description="lost", lines_added=1))
    text = report.write_report(results, tmp_path / "report.html", repository=repo).read_text()
    changes = section(text, "Kept changes")
    assert "<summary>#2 &lt;i&gt;higher lr&lt;/i&gt; &middot; −0.1000 bpb" in changes
    assert "-lr = 0.01" in changes and "+lr = 0.02  # &lt;b&gt;bold&lt;/b&gt;" in changes
    assert "#3 lost" in changes and "could not be read from the run" in changes


def test_cli_compares_runs_from_several_machines(tmp_path):
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    alice.mkdir()
    bob.mkdir()
    write_normal(alice / "results.tsv")
    write_runs(bob / "results.tsv")
    out = tmp_path / "compare.html"
    done = run_cli("--compare", str(alice / "results.tsv"), str(bob / "results.tsv"), "-o", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert outside_references(text) == []
    assert "Results are local to the machine" in text
    board = section(text, "Leaderboard")
    # bob went further below his own baseline (−0.1000) than alice (−0.0795), whatever their val_bpb
    assert board.index("<td>bob</td>") < board.index("<td>alice</td>")
    assert "−0.1000 bpb" in board and "−0.0795 bpb" in board and "<td>cpu</td>" in board
    assert text.count('type="application/json" data-chart=') == 1
    missing = run_cli("--compare", str(alice / "results.tsv"), str(tmp_path / "carol.tsv"), cwd=tmp_path)
    assert missing.returncode == 2 and "no results file" in missing.stderr and "carol.tsv" in missing.stderr
    assert missing.stderr.count("\n") == 1


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM}")
def test_the_comparison_renders_offline_in_chromium(browser, tmp_path):
    a = write_normal(tmp_path / "a.tsv")
    b = write_runs(tmp_path / "b.tsv")
    out = report.write_comparison({"a": a, "b": b}, tmp_path / "compare.html")
    page = browser.new_page()
    errors, outside = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
               else (outside.append(route.request.url), route.abort()))
    try:
        page.goto(out.as_uri())
        page.wait_for_function("document.querySelectorAll('.chart.vega-embed svg.marks').length >= 1", timeout=30_000)
        legend = page.inner_text("#chart-comparison")
    finally:
        page.close()
    assert errors == [] and outside == []
    assert "a" in legend and "b" in legend
