"""One self-contained HTML page about a run, to open anywhere, offline, years later.

Nothing is fetched: the Vega, Vega-Lite and vega-embed JavaScript comes from vl-convert's bundle
and is inlined once as a module script that puts `vegaEmbed` on `window`; each chart's Vega-Lite
spec sits in a `<script type="application/json">` block that a second module script renders. A
static SVG of every chart (also from vl-convert) sits in `<noscript>`, for viewers without
JavaScript. Every piece of text from the ledger is HTML-escaped (descriptions are written by agents).
"""
from __future__ import annotations

import functools
import html
import json
import math
import time
from pathlib import Path

import polars as pl

from . import analysis, workspace

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: .25em .7em; border-bottom: 1px solid #eee;
text-align: left; vertical-align: top; } th { background: #f6f6f6; } td.num { text-align: right;
font-variant-numeric: tabular-nums; } .muted { color: #777; } .warn { border-left: 4px solid #d9a400; padding: .3em .8em; background: #fff8e1; } .chart { margin: 1em 0; min-height: 120px; }
"""

RENDER = """
for (const block of document.querySelectorAll('script[type="application/json"][data-chart]')) {
  const target = document.getElementById(block.dataset.chart);
  const options = {renderer: "svg", actions: {export: true, source: false, compiled: false, editor: false}};
  window.vegaEmbed(target, JSON.parse(block.textContent), options).catch((err) => {
    target.textContent = "this chart failed to render: " + err;
    console.error(err);
  });
}
"""

FORMATS = {"val_bpb": "{:.6f}", "baseline val_bpb": "{:.6f}", "best val_bpb": "{:.6f}", "share": "{:.1%}", "cost_usd": "${:.4f}",
           "tokens": "{:,.0f}", "runs_per_experiment": "{:.2f}"}


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """vl-convert's bundle of vega-embed, vega-lite and vega (about 0.9 MB; built once per process).
    Its default snippet assigns window.vegaEmbed, so it can run as an inline module."""
    import vl_convert as vlc
    bundle = vlc.javascript_bundle()
    # "</script" would end the inline script early; inside JS, "<\\/script" means the same
    return bundle.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")


def _json_for_script(obj) -> str:
    """JSON that cannot close its <script> element or open a comment: <, > and & as \\u escapes."""
    text = json.dumps(obj, allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<td class="muted">-</td>'
    if column == "change" and isinstance(value, float):
        return f'<td class="num">{html.escape(analysis.change(value))}</td>'
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = FORMATS.get(column, "{:.6g}" if isinstance(value, float) else "{}").format(value)
        return f'<td class="num">{html.escape(text)}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def table(frame: pl.DataFrame, empty: str = "none") -> str:
    """A polars frame as a plain, escaped HTML table."""
    if frame.height == 0:
        return f'<p class="muted">{html.escape(empty)}</p>'
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(_cell(c, row[c]) for c in frame.columns) + "</tr>"
                   for row in frame.iter_rows(named=True))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def summary_table(s: dict) -> str:
    def num(v, fmt="{:.6f}"):
        return "-" if v is None else fmt.format(v)
    best = "-" if s["best_val"] is None else f"{s['best_val']:.6f} (mean of {s['best_runs']} runs; experiment " \
                                             f"{s['best_experiment']}, commit {s['best_commit'] or '-'}): " \
                                             f"{s['best_description']}"
    noise = "-" if s["noise"] is None else f"±{s['noise']:.4f} bpb per run" + \
        (f" ({s['eras'] - 1} drift{'s' if s['eras'] > 2 else ''} seen)" if s["eras"] > 1 else "")
    items = [("experiments", s["experiments"]), ("runs", s["runs"]), ("kept", s["kept"]), ("discarded", s["discarded"]),
             ("pruned early", s["pruned"]), ("crashed or timed out", s["crashed"]),
             ("rejected or other", s["other"] - s["pruned"]), ("noise floor", noise),
             ("baseline val_bpb", num(s["baseline_val"])), ("best val_bpb", best),
             ("change from the baseline", analysis.change(-s["gain"], 6) if s["gain"] is not None else "-"),
             ("total cost", num(s["total_cost_usd"], "${:.4f}"))]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in items)
    return f'<table class="summary">{rows}</table>'


def setup_table(setup: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(label)}</th><td>{html.escape(str(setup[key]))}</td></tr>"
                   for key, label in analysis.SETUP_LABELS.items())
    return f'<table class="setup">{rows}</table>'


def reading_guide(setup: dict, confidence: str | None) -> str:
    """What the page's numbers mean, for a reader who has never seen the project."""
    budget = setup["time_budget"] if setup["time_budget"] != "not recorded" else "the same fixed time"
    noise = setup["noise"]
    confidence = f"with {confidence} confidence" if confidence else "with the confidence the run was given"
    return (
        "<p><b>How to read this page.</b> An agent changed one file, <code>train.py</code> (a small language "
        f"model and the way it is trained), one idea at a time. Every version trained for {html.escape(budget)} "
        "on the same machine and was scored by <b>val_bpb</b>: how many bits the model needs, on average, to "
        "predict each byte of text it never saw in training. Lower is better, so a gain is written as a negative "
        "change (−0.032 bpb).</p>"
        "<p>Each <b>experiment</b> is one idea, run as many times as its verdict needed, at the lab's seeds, seed "
        "by seed against the best version so far. <b>keep</b>: better than the best by more than chance explains "
        f"{confidence} (the change's interval is shown beside it), so it became the new best; "
        "<b>discard</b>: not shown better; <b>pruned</b>: stopped early because its training loss was clearly "
        "worse, or because it trained so much slower than the best that it fell far behind within the same time "
        "(a run of the best then showed the machine as fast as before); crash, timeout, rejected and overrun "
        "produced no number that counts. The <b>change vs best</b> is the mean of its differences from the best "
        "at the same seeds (and the same machine speed), so it can disagree with the difference of the two val_bpb columns, which average over different seeds. The "
        "<b>noise floor</b> "
        f"({html.escape(noise)}) is how much one run moves by chance: a difference smaller than that, measured "
        "once, says nothing.</p>")


def diff_block(item: dict, diffs: dict[str, str] | None) -> str:
    """A kept change, its diff folded under it (diffs None: the report was made without the run's repository)."""
    head = (f"#{item['experiment']} {html.escape(item['description'])} &middot; "
            f"{html.escape(analysis.change(item['change']))} &middot; commit {html.escape(item['commit'])}")
    diff = (diffs or {}).get(item["commit"])
    if diff is None:
        why = ("its commit could not be read from the run's repository" if diffs is not None else
               "made from a results file alone: `autoresearch report --tag TAG` adds each kept change's diff")
        return f'<p>{head} <span class="muted">({html.escape(why)})</span></p>'
    return f"<details><summary>{head}</summary><pre>{html.escape(diff)}</pre></details>"


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n"
            f'<script type="module">{vega_bundle()}</script>\n<script type="module">{RENDER}</script>\n'
            f"</body></html>\n")


def chart_block(name: str, chart, svg: bool = True) -> str:
    """A div vega-embed fills, the spec it reads, and a static SVG for viewers without JavaScript."""
    spec = chart.to_dict()
    fallback = ""
    if svg:
        import vl_convert as vlc
        fallback = f"<noscript>{vlc.vegalite_to_svg(spec)}</noscript>"
    return (f'<div class="chart" id="chart-{name}"></div>'
            f'<script type="application/json" data-chart="chart-{name}">{_json_for_script(spec)}</script>{fallback}')


def render_report(df: pl.DataFrame, lam: float = analysis.DEFAULT_LAMBDA, title: str = "autoresearch report",
                  source: str = "", svg: bool = True, diffs: dict[str, str] | None = None) -> str:
    """The whole page as a string, from a frame made by analysis.load. diffs: each kept commit's diff
    of train.py against its parent, by short hash (None: no repository to read them from)."""
    s, where = analysis.summary(df), analysis.setup(df)
    costs = analysis.cost_by_agent(df)
    kept = analysis.kept(df)
    changes = "".join(diff_block(k, diffs) for k in kept) \
        or '<p class="muted">no change has been kept over the baseline yet</p>'
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="muted">{html.escape(source)} &middot; generated {html.escape(time.strftime("%Y-%m-%d %H:%M"))}'
        f" &middot; complexity penalty {lam:g} bpb per net added line</p>",
        "<h2>Setup</h2>", setup_table(where), reading_guide(where, analysis.keep_confidence(df)),
        "<h2>Summary</h2>", summary_table(s),
        "<h2>Progress</h2>", chart_block("progress", analysis.progress_chart(df), svg),
        "<h2>Every experiment</h2>", table(analysis.every_experiment(df), "no experiments yet"),
        "<h2>Kept changes</h2>", changes,
        "<h2>Complexity</h2>", chart_block("complexity", analysis.complexity_chart(df, lam), svg),
        "<h2>Verdicts</h2>", chart_block("statuses", analysis.status_chart(df), svg),
        table(analysis.status_rates(df), "no experiments yet"),
        "<h3>Runs spent per verdict</h3>", table(analysis.runs_per_verdict(df), "no experiments yet"),
        "<h2>Top improvements</h2>", table(analysis.top_hits(df), "no keep has improved on the baseline yet"),
        "<h2>Crashes, timeouts, early aborts and rejections</h2>", table(analysis.crashes(df), "none"),
    ]
    if costs.height:
        parts += ["<h2>Cost per agent</h2>", table(costs)]
    return page(title, "\n".join(parts))


def kept_diffs(df: pl.DataFrame, repository) -> dict[str, str]:
    """Each kept commit's diff of train.py against its parent, read from the run's repository (one
    that cannot be read is left out, and the page says where to find it)."""
    diffs = {}
    for item in analysis.kept(df):
        try:
            diffs[item["commit"]] = workspace.diff_text(repository, item["parent"], item["commit"])
        except workspace.LabError:
            pass
    return diffs


def write_report(results_path, out_path, lam: float = analysis.DEFAULT_LAMBDA, title: str | None = None,
                 repository=None) -> Path:
    """Write the report for a results.tsv (missing or empty is fine: the page says so) and return its
    path; with the run's repository (its worktree), the kept changes come with their diffs."""
    results_path, out_path = Path(results_path), Path(out_path)
    df = analysis.load(results_path)
    title = title or f"autoresearch: {results_path.parent.name or results_path.name}"
    diffs = kept_diffs(df, repository) if repository is not None else None
    return _write(out_path, render_report(df, lam=lam, title=title, source=str(results_path), diffs=diffs))


# --- several runs side by side ----------------------------------------------------------------------

def render_comparison(frames: dict[str, pl.DataFrame], title: str = "autoresearch: runs compared",
                      svg: bool = True) -> str:
    """One page comparing runs (frames from analysis.load, by label): a leaderboard by each run's change
    from its own baseline, the runs' progress on one chart, and where each was measured."""
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="muted">{len(frames)} runs &middot; generated {html.escape(time.strftime("%Y-%m-%d %H:%M"))}</p>',
        f"<p>{html.escape(analysis.LOCAL_RESULTS)}</p>",
        *([f'<p class="warn">{html.escape(differ)}</p>'] if (differ := analysis.setup_differences(frames)) else []),
        "<h2>Leaderboard</h2>", table(analysis.comparison(frames), "no runs"),
        "<h2>Each run against its own baseline</h2>",
        chart_block("comparison", analysis.comparison_chart(frames), svg),
        "<h2>Where each run was measured</h2>", table(analysis.setups(frames), "no runs"),
    ]
    return page(title, "\n".join(parts))


def write_comparison(sources: dict[str, Path], out_path, title: str | None = None) -> Path:
    """Write the comparison page of several results.tsv files, by label, and return its path."""
    frames = {label: analysis.load(Path(path)) for label, path in sources.items()}
    return _write(Path(out_path), render_comparison(frames, title or "autoresearch: runs compared"))


def _write(out_path: Path, text: str) -> Path:
    """Written whole or not at all: a reader never opens half a page."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out_path)
    return out_path
