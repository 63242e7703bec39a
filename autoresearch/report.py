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

from . import analysis

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: .25em .7em; border-bottom: 1px solid #eee;
text-align: left; vertical-align: top; } th { background: #f6f6f6; } td.num { text-align: right;
font-variant-numeric: tabular-nums; } .muted { color: #777; } .chart { margin: 1em 0; min-height: 120px; }
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

FORMATS = {"val_bpb": "{:.6f}", "improvement": "{:.6f}", "share": "{:.1%}", "cost_usd": "${:.4f}",
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
             ("lower than the baseline by", num(s["gain"], "{:.6f} bpb")),
             ("total cost", num(s["total_cost_usd"], "${:.4f}"))]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in items)
    return f'<table class="summary">{rows}</table>'


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
                  source: str = "", svg: bool = True) -> str:
    """The whole page as a string, from a frame made by analysis.load."""
    s = analysis.summary(df)
    costs = analysis.cost_by_agent(df)
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="muted">{html.escape(source)} &middot; generated {html.escape(time.strftime("%Y-%m-%d %H:%M"))}'
        f" &middot; complexity penalty {lam:g} bpb per net added line</p>",
        "<h2>Summary</h2>", summary_table(s),
        "<h2>Progress</h2>", chart_block("progress", analysis.progress_chart(df), svg),
        "<h2>Complexity</h2>", chart_block("complexity", analysis.complexity_chart(df, lam), svg),
        "<h2>Verdicts</h2>", chart_block("statuses", analysis.status_chart(df), svg),
        table(analysis.status_rates(df), "no experiments yet"),
        "<h3>Runs spent per verdict</h3>", table(analysis.runs_per_verdict(df), "no experiments yet"),
        "<h2>Top improvements</h2>", table(analysis.top_hits(df), "no keep has improved on the baseline yet"),
        "<h2>Crashes, timeouts, early aborts and rejections</h2>", table(analysis.crashes(df), "none"),
    ]
    if costs.height:
        parts += ["<h2>Cost per agent</h2>", table(costs)]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n"
            f'<script type="module">{vega_bundle()}</script>\n<script type="module">{RENDER}</script>\n'
            f"</body></html>\n")


def write_report(results_path, out_path, lam: float = analysis.DEFAULT_LAMBDA, title: str | None = None) -> Path:
    """Write the report for a results.tsv (missing or empty is fine: the page says so) and return its path."""
    results_path, out_path = Path(results_path), Path(out_path)
    df = analysis.load(results_path)
    title = title or f"autoresearch: {results_path.parent.name or results_path.name}"
    text = render_report(df, lam=lam, title=title, source=str(results_path))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out_path)
    return out_path
