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
"""Start a run, let the loop work in the background and watch it live.

Open it from the repository root:  uv run marimo edit notebooks/launch.py
The loop runs as its own process (autoresearch.background.start_loop), not in the kernel: interrupting
or restarting the notebook does not stop it, and a fresh kernel finds it again from the run's files.
AUTORESEARCH_ROOT names the project root when the notebook is not in it.
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="autoresearch: launch and watch")

with app.setup:
    import html
    import os
    import re
    import shlex
    import sys
    import textwrap
    import time
    from pathlib import Path

    import marimo as mo

    REPO = Path(__file__).resolve().parents[1]  # this checkout: the autoresearch package
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    ROOT = Path(os.environ.get("AUTORESEARCH_ROOT") or REPO)  # the project whose runs/ we drive

    import polars as pl

    from autoresearch import analysis, background, harness, workspace
    from autoresearch.judge import Policy
    from autoresearch.scheduler import init_run
    from autoresearch.workspace import LabError
    from autoresearch.cache_view import prepare_with_progress  # the harness's build, under a progress bar

    FEED_COLUMNS = ["experiment", "role", "seed", "commit", "status", "run_bpb", "val_bpb", "runs", "lines_added",
                    "lines_removed", "agent", "description", "num_steps", "tokens_per_s", "started", "reason"]


@app.function
def run_tags(root: Path) -> list[str]:
    """Tags of the runs under root/runs, the most recently active last."""
    found = sorted((root / "runs").glob("*/.lab/state.json"), key=lambda p: p.stat().st_mtime) \
        if (root / "runs").exists() else []
    return [p.parent.parent.name for p in found]


@app.function
def feed(rows: pl.DataFrame) -> pl.DataFrame:
    """The ledger as a feed of runs, newest first, the columns a person reads: each run's own value
    (run_bpb), and on the row that ends an experiment its verdict and mean (val_bpb)."""
    if "experiment" not in rows.columns:
        rows = rows.with_columns(experiment=pl.int_range(1, pl.len() + 1))
    return rows.select([c for c in FEED_COLUMNS if c in rows.columns]).reverse()


@app.function
def readable(error: Exception) -> mo.Html:
    """A lab error as a person reads it in this notebook: commands as code, the notebook's controls
    named where the message names a command-line flag."""
    parts = re.split(r"(`[^`]*`)", str(error))  # code spans stay as they are
    for flag, control in (("--tag", "tag in the tag box"), ("--agent", "the agent menu"),
                          ("--max-experiments", "max experiments"), ("--max-hours", "max hours")):
        parts = [p if p.startswith("`") else re.sub(rf"{re.escape(flag)}(?![\w-])", control, p) for p in parts]
    return mo.callout(mo.md("".join(parts)), kind="danger")


@app.function
def outcome(action, set_changed, errors=(LabError,)) -> None:
    """What a button did: action()'s message, or the error it raised as a person reads it, becomes the
    one shown under the buttons (the last action's: an earlier one's message goes); the run list and
    the live view reload either way."""
    try:
        message = action()
    except errors as e:
        message = readable(e)
    set_changed(lambda old: dict(n=old["n"] + 1, said=message))


@app.function
def best_caption(best: dict | None, measure) -> str | None:
    """Which experiment the best is and what its value is the mean of: after a drift of the machine's
    speed, only its runs since (what the next candidate is compared with), not the value it was kept at."""
    if not best:
        return None
    text = textwrap.shorten(f"#{best['number']} {best['description']}", 48, placeholder=" …")
    runs = f"mean of {measure.runs} run{'s' if measure.runs != 1 else ''}"
    if measure.era > 1:
        return f"{text}; {runs} since the machine's speed changed (kept at {float(best['val_bpb']):.4f})"
    return f"{text}; {runs}"


@app.function
def agent_argument(kind: str, replay_file: str) -> str:
    if kind == "replay":
        if not replay_file.strip():
            raise LabError("the replay agent needs a file: one JSON proposal per line")
        return "replay:" + str(Path(replay_file.strip()).expanduser().resolve())
    return kind


@app.cell(hide_code=True)
def _():
    mo.md("""
    # Launch and watch a run

    **init** creates the run: branch `autoresearch/<tag>` in its own worktree `runs/<tag>/`.
    **start** runs the experiment loop on it in the background (its output goes to
    `runs/<tag>/.lab/loop.log`); **stop** asks it to stop cleanly (the experiment in flight is run again
    on the next start). The view below refreshes from the run's files, so it shows a loop started
    anywhere, also from a terminal with `autoresearch run`.
    """)
    return


@app.cell
def _():
    get_cache, set_cache = mo.state(None)  # the cache picked (or just prepared) for new runs
    # set by a prepare only, to its outcome (kind, text): the list of caches is made again and shows it
    # (not by init, start or stop, whose cells take the cache picked: they would run again); the
    # prepare cell cannot show it itself, as the list's cell, run again, gives it a new button
    get_prepared, set_prepared = mo.state(None)
    return get_cache, get_prepared, set_cache, set_prepared


@app.cell
def pick_cache(get_cache, get_prepared, set_cache):
    _outcome = get_prepared()
    _caches = {harness.describe_cache(_p, _m): str(_p) for _p, _m in harness.prepared_caches()}
    _picked = next((k for k, v in _caches.items() if v == get_cache()), next(iter(_caches), None))
    cache_pick = mo.ui.dropdown(options=_caches, value=_picked, label="data for a new run",
                                on_change=set_cache, full_width=True)
    class_budget = mo.ui.number(start=2, stop=3600, step=1, value=10, label="seconds of training per run")
    prepare_button = mo.ui.run_button(label="prepare a tiny cache with this budget")
    mo.vstack([
        mo.md("### Data"),
        cache_pick if _caches else mo.md("_No prepared cache yet: prepare one here, or with the prepare notebook._"),
        mo.hstack([class_budget, prepare_button], justify="start", gap=1),
        mo.callout(mo.md(_outcome["text"]), kind=_outcome["kind"]) if _outcome else mo.md(""),
        mo.md("A new run uses the cache picked here (its profile and training budget are fixed for the run); "
              "a run already made keeps its own. Preparing takes about ten seconds on a laptop (the `python` "
              "source, the `tiny` profile)."),
    ])
    return cache_pick, class_budget, prepare_button


@app.cell
def do_prepare(class_budget, prepare_button, set_cache, set_prepared):
    mo.stop(not prepare_button.value)
    _budget = int(class_budget.value)
    _cache = harness.cache_home() / f"autoresearch-tiny-{_budget}s"
    _error, _ = prepare_with_progress(f"preparing {_cache} (tiny profile, {_budget} s per run)", profile="tiny",
                                      source="python", time_budget=_budget, cache=_cache)
    if _error is None:
        set_cache(str(_cache.resolve()))
        set_prepared(dict(kind="success", text=f"Prepared `{_cache}`: new runs use it."))
    else:  # shown, never a traceback
        set_prepared(dict(kind="danger", text=f"Could not prepare `{_cache}`: {_error}"))
    return


@app.cell
def _():
    _tags = run_tags(ROOT)
    tag = mo.ui.text(value=_tags[-1] if _tags else time.strftime("run-%Y%m%d-%H%M"), label="tag")
    agent = mo.ui.dropdown(options=["search", "claude", "replay"], value="search", label="agent")
    replay_file = mo.ui.text(placeholder="proposals.jsonl", label="replay file")
    max_experiments = mo.ui.number(start=0, stop=100_000, step=1, value=0, label="max experiments (0: no limit)")
    max_hours = mo.ui.number(start=0, stop=1000, step=0.25, value=0, label="max hours (0: no limit)")
    extra = mo.ui.text(placeholder="--seed 1 --max-cost 5", label="more `run` options")
    init_button = mo.ui.run_button(label="init run")
    start_button = mo.ui.run_button(label="start loop", kind="success")
    stop_button = mo.ui.run_button(label="stop loop", kind="danger")
    mo.vstack([
        mo.hstack([tag, agent, replay_file], justify="start", gap=2),
        mo.hstack([max_experiments, max_hours, extra], justify="start", gap=2),
        mo.hstack([init_button, start_button, stop_button], justify="start", gap=1),
    ])
    return (agent, extra, init_button, max_experiments, max_hours, replay_file, start_button, stop_button, tag)


@app.cell
def said(get_changed):
    get_changed()["said"] or mo.md("")  # what the last button did
    return


@app.cell
def _(get_changed):
    get_changed()  # a run just made is listed
    mo.md(f"Runs in `{ROOT / 'runs'}`: " + (", ".join(f"`{t}`" for t in run_tags(ROOT)) or "none yet")
          + ". The `claude` agent needs `ANTHROPIC_API_KEY` in the environment marimo was started from.")
    return


@app.cell
def _():
    # set by the buttons (a count, and what the last one did): the live view reloads at once
    get_changed, set_changed = mo.state(dict(n=0, said=None))
    return get_changed, set_changed


@app.cell
def do_init(cache_pick, init_button, set_changed, tag):
    mo.stop(not init_button.value)

    def _init():
        _workdir = init_run(ROOT, tag.value.strip(), cache=cache_pick.value or None)
        _manifest = harness.read_manifest(cache_pick.value or None)
        return mo.callout(mo.md(f"Created run `{tag.value.strip()}` in `{_workdir}` (profile "
                                f"{_manifest['profile']}, {_manifest['constants']['TIME_BUDGET']} s per experiment). "
                                f"Press **start loop**."), kind="success")
    outcome(_init, set_changed)
    return


@app.cell
def do_start(agent, extra, max_experiments, max_hours, replay_file, set_changed, start_button, tag):
    mo.stop(not start_button.value)

    def _start():
        _pid = background.start_loop(
            ROOT, tag.value.strip(), agent=agent_argument(agent.value, replay_file.value),
            max_experiments=int(max_experiments.value) or None, max_hours=float(max_hours.value) or None,
            extra_args=shlex.split(extra.value))
        return mo.callout(mo.md(f"Loop started (pid {_pid}); its output: "
                                f"`{background.log_file(ROOT, tag.value.strip())}`."), kind="success")
    outcome(_start, set_changed, (LabError, ValueError))
    return


@app.cell
def do_stop(set_changed, stop_button, tag):
    mo.stop(not stop_button.value)

    def _stop():
        with mo.status.spinner(title="stopping the loop (it stops train.py and records where it was) ..."):
            _stopped = background.stop_loop(ROOT, tag.value.strip(), timeout=30)
        return mo.callout("Loop stopped." if _stopped else "No loop was running on this run.",
                          kind="success" if _stopped else "neutral")
    outcome(_stop, set_changed)
    return


@app.cell
def _():
    refresh = mo.ui.refresh(options=["1s", "2s", "5s", "10s", "30s"], default_interval="2s")
    mo.hstack([mo.md("## Live"), refresh], justify="start", align="center", gap=1)
    return (refresh,)


@app.cell
def live_view(get_changed, refresh, tag):
    refresh.value, get_changed()
    _tag = tag.value.strip()
    try:
        info = background.live(ROOT, _tag)
    except LabError:
        info = None
        try:
            workspace.valid_tag(_tag)
            _why = f"No run tagged `{_tag}` yet. Press **init run** to create it."
        except LabError:  # what init would refuse: say so here, before it is pressed
            _why = (f"Type a tag in the **tag** box: {workspace.TAG_RULE}, e.g. `alice`." if not _tag else
                    f"`{_tag}` cannot be a tag: use {workspace.TAG_RULE} (e.g. `alice`).")
        _view = mo.callout(mo.md(_why), kind="neutral")
    if info is not None:
        _rows, _cur = info["rows"], info["current"]
        _feed = feed(_rows)
        _best = info["best"]
        _loop = f"running, pid {info['pid']}" if info["running"] else "not running"
        _stats = mo.hstack([
            mo.stat(_loop, label="loop"),
            mo.stat(info["experiments"], label="experiments", caption=f"{info['kept']} kept, {_rows.height} runs"),
            mo.stat(f"{info['best_val_bpb']:.6f}" if info["best_val_bpb"] is not None else "-", label="best val_bpb",
                    caption=best_caption(_best, info["best_measure"])),
            mo.stat(f"±{info['noise'].sigma:.4f}" if info["noise"].sigma is not None else "-", label="noise floor",
                    caption="one run's val_bpb, seed to seed"),
            mo.stat(info["device"] or "-", label="device",
                    caption=f"{info['time_budget']} s budget" if info["time_budget"] else None),
        ], justify="start", gap=1)
        _phase = background.phase(info, Policy().max_runs)
        if _cur and info["running"]:
            _last = info["current_points"][-1] if info["current_points"] else None
            _where = (f" — step {_last['step']}, loss {_last['loss']:.4f}, {_last['tokens_per_s']:,.0f} tok/s"
                      if _last else "")
            _done = ", ".join(f"{r['role']} s{r['seed']} {float(r['run_bpb']):.4f}" for r in _cur["runs"] if r["run_bpb"])
            _now = mo.md(f"**Now:** {_phase}{_where}  \n**In flight:** #{_cur['number']} ({_cur['agent']}"
                         f"{', since ' + _cur['started'] if _cur['started'] else ''}): {_cur['description']}"
                         + (f"  \nIts runs so far: {_done}" if _done else ""))
        else:
            _now = mo.md(f"**Now:** {_phase}" + ("" if info["running"] else " (press **start loop** to go on)"))
        _workers = info["runs_in_flight"] if info["running"] and len(info["runs_in_flight"]) > 1 else []
        _view = mo.vstack([
            _stats, _now,
            mo.vstack([mo.md("**Runs in flight, one per worker:**"), mo.ui.table(
                [{"worker": r["worker"], "experiment": textwrap.shorten(f"#{r['experiment']} {r['description']}", 60, placeholder=" …"),
                  "run": f"{r['role']} s{r['seed']}", "commit": r["commit"],
                  "progress": "starting" if r["progress"] is None else f"{r['progress']:.0%}"} for r in _workers],
                selection=None, show_column_summaries=False)]) if _workers else mo.md(""),
            background.curves_chart(info),
            mo.md("### Experiments (newest first)"),
            mo.ui.table(_feed, selection=None, page_size=10, show_column_summaries=False,
                        wrapped_columns=analysis.wrapped(_feed))
            if _rows.height else mo.md("_No experiment recorded yet._"),
            mo.accordion({"loop output (`.lab/loop.log`)": mo.Html(  # wrapped: no line cut at the edge
                f'<pre style="white-space: pre-wrap">{html.escape(info["loop_log"] or "(nothing yet)")}</pre>')}),
        ])
    _view
    return


if __name__ == "__main__":
    app.run()
