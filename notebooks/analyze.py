# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "autoresearch",
#     "marimo>=0.10",
#     "altair>=5.4",
#     "polars>=1.0",
# ]
#
# [tool.uv.sources]
# autoresearch = { path = "..", editable = true }
# ///
"""What a run found: its results.tsv as charts and tables (autoresearch.analysis computes them).

Open it from the repository root:  uv run marimo edit notebooks/analyze.py
Pick a run (runs/*/results.tsv) or type the path of any results.tsv, also the original project's.
AUTORESEARCH_RESULTS=path/to/results.tsv preselects a file (e.g. for `python notebooks/analyze.py`);
AUTORESEARCH_ROOT names the project root when the notebook is not in it.
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="autoresearch: analyze a run")

with app.setup:
    import os
    import sys
    from pathlib import Path

    import marimo as mo

    REPO = Path(__file__).resolve().parents[1]  # this checkout: the autoresearch package
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    ROOT = Path(os.environ.get("AUTORESEARCH_ROOT") or REPO)  # where runs/ are

    import polars as pl

    from autoresearch import analysis, ledger, logs, workspace
    from autoresearch.cli import DEMO_PREFIX
    from autoresearch.workspace import LabError


@app.function
def find_results(root: Path) -> dict:
    """{tag: path} of every run's results.tsv, the most recently written last."""
    found = sorted((root / "runs").glob("*/results.tsv"), key=lambda p: p.stat().st_mtime)
    return {p.parent.name: str(p) for p in found}


@app.function
def detail_view(df: pl.DataFrame, number, results_path) -> mo.Html:
    """One experiment as a person looks into it: what it changed, its verdict and why, its runs, its diff
    against the best it was tried on (from the run's repository) and the tail of its last run's log."""
    detail = analysis.experiment_detail(df, number)
    if detail is None:
        return mo.md("_Click a point in a chart above (or pick an experiment) to see it here._")
    workdir = results_path.parent if results_path is not None else None
    in_repo = workdir is not None and (workdir / ".git").exists()
    diff = None
    if in_repo and detail["parent"] and detail["commit"] not in ("", "none"):
        try:
            diff = workspace.diff_text(workdir, detail["parent"], detail["commit"])
        except LabError as e:
            diff = f"(the diff could not be read: {e})"
    runs = detail["runs"]
    tail = ""
    if in_repo and runs.height:
        row = runs.row(-1, named=True)
        rows = ledger.read_rows(results_path)
        tail = logs.tail(logs.row_log(workdir, rows[row["row"]], row["row"]))
    added, removed = detail["lines"]
    head = (f"### #{detail['number']}: {detail['description']}\n\n**{detail['status']}**"
            + (f", mean val_bpb {detail['val']:.6f}" if detail["val"] is not None else "")
            + f", +{added}/−{removed} lines, commit `{detail['commit']}`"
            + (f" on `{detail['parent']}`" if detail["parent"] else "")
            + (f"  \n{detail['reason']}" if detail["reason"] else ""))
    parts = [mo.md(head),
             mo.ui.table(runs.drop("row"), selection=None, show_column_summaries=False, wrapped_columns=analysis.wrapped(runs),
                         format_mapping={"run_bpb": "{:.6f}".format}) if runs.height else mo.md("_No run: it never ran._")]
    if diff is not None:
        parts.append(mo.accordion({"diff of train.py against the best it was tried on": mo.plain_text(diff or "(no change)")}))
    elif not in_repo:
        parts.append(mo.md("_The diff and the logs are in the run's worktree: pick the run above to see them._"))
    if tail:
        parts.append(mo.accordion({"the tail of its last run's log": mo.plain_text(tail)}))
    return mo.vstack(parts)


@app.function
def clickable(chart) -> mo.ui.altair_chart:
    """A chart drawn as SVG (each point an element a click, or a test, can find), whose point selection
    picks an experiment; it zooms and pans (scroll, drag), a double click resets it."""
    chart = chart.properties(usermeta={"embedOptions": {"renderer": "svg"}})
    return mo.ui.altair_chart(chart, chart_selection=False, legend_selection=False)


@app.function
def fmt(value, spec: str = ".6f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


@app.cell(hide_code=True)
def _():
    mo.md("""
    # Analyze a run

    Every row of `results.tsv` is one run; the row that ends an experiment carries its verdict and its
    mean `val_bpb` over the runs it took. `keep`: the lab was sure it beats the best; `discard`: it was not
    shown better (or shown worse); `pruned`: stopped early, clearly worse; `crash`/`timeout`: no number;
    `rejected`: never ran (the guard refused it). The other rows (`run`) are confirmations at more seeds
    and control runs of the best; `stopped` is a run stopped for training much slower than the best,
    which a control run of the best then judges (the machine's slowness, or the change's own).
    """)
    return


@app.cell
def _():
    runs = find_results(ROOT)
    run_pick = mo.ui.dropdown(options=runs, value=next(reversed(runs), None) if runs else None,
                              label="run")
    path_box = mo.ui.text(value=os.environ.get("AUTORESEARCH_RESULTS", ""), label="or a results.tsv path",
                          full_width=True)
    lam = mo.ui.slider(steps=[0.0, 1e-5, 2.5e-5, analysis.DEFAULT_LAMBDA, 1e-4, 2e-4, 5e-4, 1e-3],
                       value=analysis.DEFAULT_LAMBDA, label="λ (bpb per net line)", show_value=True)
    mo.vstack([mo.hstack([run_pick, lam], justify="start", gap=2), path_box])
    return lam, path_box, run_pick


@app.cell
def _(path_box, run_pick):
    results_path = Path(path_box.value).expanduser() if path_box.value.strip() else (
        Path(run_pick.value) if run_pick.value else None)
    df = analysis.load(results_path) if results_path is not None else analysis.load(pl.DataFrame())
    s = analysis.summary(df)
    if results_path is None:
        _where = mo.callout(mo.md(f"No run yet in `{ROOT / 'runs'}`: start one with the launch notebook, "
                                  "or type the path of a results.tsv."), kind="warn")
    elif not results_path.exists():
        _where = mo.callout(mo.md(f"`{results_path}` does not exist (yet)."), kind="warn")
    else:
        _where = mo.md(f"`{results_path}`")
    _cost = [mo.stat(f"${s['total_cost_usd']:.2f}", label="agent cost")] if s["total_cost_usd"] else []
    _gain = f"{analysis.change(-s['gain'], 6)} from the baseline" if s["gain"] else None
    _noise = [mo.stat(f"±{s['noise']:.4f}", label="noise floor", caption="one run's val_bpb, seed to seed"
                      + (f"; {s['eras'] - 1} drift(s) seen" if s["eras"] > 1 else ""))] if s["noise"] is not None else []
    mo.vstack([
        _where,
        mo.hstack([
            mo.stat(s["experiments"], label="experiments", caption=f"{s['runs']} runs"),
            mo.stat(s["kept"], label="kept"),
            mo.stat(s["discarded"], label="discarded"),
            mo.stat(s["crashed"], label="crashed / timed out"),
            mo.stat(fmt(s["best_val"]), label="best val_bpb", caption=_gain),
            *_noise,
            *_cost,
        ], justify="start", gap=1),
        mo.md(f"**Best:** #{s['best_experiment']} `{s['best_commit']}` (mean of {s['best_runs']} runs): "
              f"{s['best_description']}" if s["best_val"] is not None else "**Best:** none yet"),
    ])
    return df, results_path


@app.cell
def _(df):
    progress = clickable(analysis.progress_chart(df))  # a click on an experiment shows it below
    progress
    return (progress,)


@app.cell
def _(df, lam):
    complexity = clickable(analysis.complexity_chart(df, lam=lam.value))
    mo.vstack([complexity, mo.md(
        "Each dashed line joins the points of equal penalized score, val_bpb + λ × net lines: a change "
        "that adds lines must lower val_bpb by λ per line to score the same, one that deletes lines may cost "
        "that much. The shaded region is where a score beats the best's: a keep needs that, and the judge "
        "also needs it shown beyond the noise. Move λ to see how much it matters here: the search agent's "
        "changes are about ±1 line each, so for them λ barely moves the verdict; a coding agent's edits of tens of lines feel it.")])
    return (complexity,)


@app.cell
def _(df):
    _numbers = analysis.experiments(df)["experiment"].to_list() if df.height else []
    experiment_pick = mo.ui.dropdown(options=[str(n) for n in _numbers], label="or pick an experiment")
    experiment_pick
    return (experiment_pick,)


@app.cell
def _():
    latest_pick = analysis.LatestPick()  # which of the charts and the list was used last
    return (latest_pick,)


@app.cell
def _(complexity, df, experiment_pick, latest_pick, progress, results_path):
    _number = latest_pick.update(progress=analysis.picked(progress.selections),
                                 complexity=analysis.picked(complexity.selections),
                                 listed=int(experiment_pick.value) if experiment_pick.value else None)
    detail_view(df, _number, results_path)
    return


@app.cell
def _(df):
    mo.hstack([
        mo.vstack([mo.md("### Verdicts"), mo.ui.table(analysis.status_rates(df), selection=None,
                                                      format_mapping={"share": "{:.1%}".format}),
                   mo.md("### Runs spent per verdict"),
                   mo.ui.table(analysis.runs_per_verdict(df), selection=None,
                               format_mapping={"runs_per_experiment": "{:.2f}".format})]),
        analysis.status_chart(df),
    ], justify="start", gap=2)
    return


@app.cell
def _(df):
    _hits = analysis.top_hits(df)
    mo.vstack([mo.md("### Top hits: the keeps that lowered the best most"),
               mo.ui.table(_hits, selection=None, wrapped_columns=analysis.wrapped(_hits),
                           format_mapping={"val_bpb": "{:.6f}".format, "change": analysis.change})])
    return


@app.cell
def _(df):
    _failed = analysis.crashes(df)
    mo.vstack([mo.md("### Crashes, timeouts, early aborts and rejections"),
               mo.ui.table(_failed, selection=None, wrapped_columns=analysis.wrapped(_failed))])
    return


@app.cell
def _(df):
    _cost = analysis.cost_by_agent(df)
    mo.vstack([mo.md("### Cost per agent"),
               mo.ui.table(_cost, selection=None, format_mapping={"cost_usd": "${:.4f}".format})]) if _cost.height else \
        mo.md("_No agent recorded tokens or cost (the search agent is free)._")
    return


@app.function
def compared_files(picked: list[str], more: str) -> tuple[dict, list[str]]:
    """The results.tsv files to compare, by label (analysis.labelled): the runs picked here, then each
    line of `more`: a results.tsv, or a folder searched for them (a shared folder of participants'
    runs). Returns them and the lines that named nothing."""
    paths, missing = [Path(p) for p in picked], []
    for line in filter(None, (ln.strip() for ln in more.splitlines())):
        path = Path(line).expanduser()
        found = [path] if path.is_file() else sorted(path.glob("**/results.tsv")) if path.is_dir() else []
        paths += found
        if not found:
            missing.append(line)
    return analysis.labelled(dict.fromkeys(p.resolve() for p in paths)), missing


@app.cell(hide_code=True)
def _():
    _runs = find_results(ROOT)
    _yours = [t for t in _runs if not t.startswith(DEMO_PREFIX)]  # a demo's budget is not the class's
    compare_pick = mo.ui.multiselect(options=_runs, value=_yours[-4:], label="runs here")
    compare_more = mo.ui.text_area(placeholder="more results.tsv files, or folders holding them (a shared folder of "
                                               "participants' runs), one per line", full_width=True, rows=3)
    mo.vstack([mo.md("## Compare runs\n\nSeveral runs side by side: tags here, or results.tsv files from other "
                     "machines or participants. `autoresearch report --compare ...` writes the same as one page."),
               compare_pick, compare_more])
    return compare_more, compare_pick


@app.cell
def _(compare_more, compare_pick):
    _sources, _missing = compared_files(compare_pick.value, compare_more.value)
    _frames = {label: analysis.load(path) for label, path in _sources.items()}
    _warn = [mo.callout(mo.md("Nothing found at " + ", ".join(f"`{m}`" for m in _missing)), kind="warn")] \
        if _missing else []
    _differ = analysis.setup_differences(_frames)
    _warn += [mo.callout(_differ, kind="warn")] if _differ else []
    mo.vstack(_warn + ([
        mo.md(f"### Leaderboard\n\n{analysis.LOCAL_RESULTS}"),
        mo.ui.table(analysis.comparison(_frames), selection=None, show_column_summaries=False),
        analysis.comparison_chart(_frames),
        mo.md("### Where each run was measured"),
        mo.ui.table(analysis.setups(_frames), selection=None, show_column_summaries=False),
    ] if _frames else [mo.md("_Pick runs, or name results.tsv files, to compare them._")]))
    return


if __name__ == "__main__":
    app.run()
