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

from autoresearch import analysis, report
from test_analysis import EVIL, KINDS, write_ledger, write_normal

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
