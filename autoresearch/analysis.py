"""What a run's results.tsv says, as plain functions of a polars frame.

Notebooks and the HTML report only display what these return, so the numbers a person reads are the
same everywhere and are tested once. Every function accepts the awkward ledgers a real run produces:
no rows yet (or no file), a crash before any keep, only crashes, statuses this code has never heard
of, the lab's older one-row-per-experiment files, and the original project's five-column file (no
lines, agent or cost columns; 0.0 for a crash).

A ledger has a row per run; the row that ends an experiment carries its verdict and its mean
val_bpb (ledger.py). `load` keeps every row and marks those (`is_verdict`); the experiment-level
functions here (summary, charts, rates, hits) read the verdict rows, and the runs behind them are
drawn too (`run_val`: each run's own value).

The frontier follows the lab's judge: after each keep the best val_bpb becomes that experiment's
mean, and the next experiment is compared with it. A keep bought by deleting lines can raise the
frontier slightly; that is what the lab compared against, so that is what is drawn.
"""
from __future__ import annotations

import math
from pathlib import Path

import altair as alt
import polars as pl

from . import ledger, measurements
from .judge import DEFAULT_LAMBDA

STATUS_COLORS = {ledger.KEEP: "#2ca02c", ledger.DISCARD: "#7f7f7f", ledger.CRASH: "#d62728", ledger.TIMEOUT: "#ff7f0e",
                 ledger.REJECTED: "#9467bd", ledger.PRUNED: "#8c6d31"}
OTHER_COLORS = ["#8c564b", "#e377c2", "#17becf", "#bcbd22", "#1f77b4"]
TOKEN_COLUMNS = ["input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"]
TOOLTIP = ["experiment:Q", "commit:N", "status:N", "val_bpb:Q", "runs:Q", "net_lines:Q", "description:N"]
NUMERIC = ["val_bpb", "lines_added", "lines_removed", "cost_usd", "experiment", "seed", "run_bpb", "runs", "diff",
           "diff_low", "diff_high", "noise", "era", "tokens_per_s", "num_steps", *TOKEN_COLUMNS]


def load(source) -> pl.DataFrame:
    """The ledger (a path, or a frame from ledger.read_frame) with derived columns added: experiment
    (its number; in an older ledger the row's), is_verdict (the row ends its experiment), val
    (val_bpb, <= 0 treated as missing: the old tool wrote 0 for a crash), run_val (this run's own
    value), net_lines, runs_spent (the runs its experiment took), se (a kept mean's standard error,
    from the noise and its runs), best_so_far (the frontier after this row) and improvement (for kept
    experiments, how much they lowered the frontier; null for the first keep)."""
    df = source if isinstance(source, pl.DataFrame) else ledger.read_frame(Path(source))
    missing = [c for c in ledger.COLUMNS if c not in df.columns]
    df = df.with_columns([pl.lit(None, dtype=pl.Utf8).alias(c) for c in missing])
    df = df.with_columns([pl.col(c).cast(pl.Float64, strict=False) for c in NUMERIC])
    df = df.with_columns([pl.col(c).cast(pl.Utf8).fill_null("").str.strip_chars()
                          for c in ("status", "description", "commit", "reason", "agent", "role")])
    numbered = pl.col("experiment").is_not_null()
    df = df.with_columns(
        experiment=pl.when(numbered).then(pl.col("experiment")).otherwise(pl.int_range(1, pl.len() + 1))
        .cast(pl.Int64),
        is_verdict=pl.col("status").is_in(list(ledger.VERDICTS)) | (~numbered & (pl.col("status") != ledger.RUN)),
        val=pl.when(pl.col("val_bpb") > 0).then(pl.col("val_bpb")).otherwise(None),
        net_lines=(pl.col("lines_added").fill_null(0) - pl.col("lines_removed").fill_null(0)).cast(pl.Int64),
    )
    run_val = pl.when(pl.col("run_bpb") > 0).then(pl.col("run_bpb")).when(numbered).then(None).otherwise(pl.col("val"))
    ran = (pl.col("role") != "verdict") & (pl.col("commit") != "none") & (pl.col("commit") != "")
    df = df.with_columns(
        run_val=pl.when(pl.col("role") == "verdict").then(None).otherwise(run_val),
        runs_spent=ran.cast(pl.Int64).sum().over("experiment"),
        se=pl.when(pl.col("is_verdict") & (pl.col("runs") > 1)).then(pl.col("noise") / pl.col("runs").sqrt()),
    )
    kept_val = pl.when(pl.col("is_verdict") & (pl.col("status") == ledger.KEEP)).then(pl.col("val")).otherwise(None)
    df = df.with_columns(best_so_far=kept_val.forward_fill())
    before = pl.col("best_so_far").shift(1)
    keep = pl.col("is_verdict") & (pl.col("status") == ledger.KEEP) & pl.col("val").is_not_null()
    return df.with_columns(improvement=pl.when(keep).then(before - pl.col("val")))


def experiments(df: pl.DataFrame) -> pl.DataFrame:
    """One row per experiment: the rows that carry verdicts."""
    return df.filter(pl.col("is_verdict")) if df.height else df


def _count(df: pl.DataFrame, *statuses: str) -> int:
    return int(df.filter(pl.col("status").is_in(list(statuses))).height)


def judged_rows(df: pl.DataFrame) -> list[dict]:
    """The ledger's rows as the judge reads them (measurements: dicts of strings)."""
    return df.select([pl.col(c).cast(pl.Utf8) for c in ledger.COLUMNS]).to_dicts()


def noise_floor(df: pl.DataFrame, rows: list[dict] | None = None) -> float | None:
    """One run's standard deviation as the judge estimates it from all the runs (as `status` says);
    the latest the lab recorded where the rows cannot give it (an older ledger)."""
    recorded = df["noise"].drop_nulls()
    return measurements.noise(judged_rows(df) if rows is None else rows).sigma or \
        (float(recorded[-1]) if recorded.len() else None)


def summary(df: pl.DataFrame) -> dict:
    """The headline numbers, per experiment. best_* is the lab's current best (the last keep), its
    value as the judge holds it now: the mean over its best_runs runs since the last drift, later
    confirmations and controls included (what `autoresearch status` says); crashed counts crash and
    timeout (ran, produced no number); other counts rejected, pruned and unknown statuses. runs
    counts every run; noise is the judge's noise floor from all the runs (one run's standard
    deviation; the latest the lab recorded where the rows cannot give it), eras the drifts seen plus
    one; gain the baseline's value less the best's (after a drift, the values they were judged at)."""
    ex = experiments(df)
    kept = ex.filter((pl.col("status") == ledger.KEEP) & pl.col("val").is_not_null())
    best = kept.row(-1, named=True) if kept.height else None
    base = kept.row(0, named=True) if kept.height else None
    cost = df["cost_usd"].drop_nulls()
    rows = judged_rows(df)
    held = measurements.best(rows, best["commit"]) if best else None
    if held is not None and held.mean is None:
        held = None
    best_val = held.mean if held else best["val"] if best else None
    eras = int(df["era"].max()) if df["era"].drop_nulls().len() else 1
    # the gain compares like with like: after a drift the best's value now is the new era's, and the
    # baseline's is the old one's; the values the two were judged at are then what is compared
    gain = None if not best else (base["val"] - best_val) if eras == 1 else (base["val"] - best["val"])
    counted = _count(ex, ledger.KEEP, ledger.DISCARD, *ledger.FAILED)
    return dict(
        experiments=ex.height, kept=_count(ex, ledger.KEEP), discarded=_count(ex, ledger.DISCARD),
        crashed=_count(ex, *ledger.FAILED), pruned=_count(ex, ledger.PRUNED), other=ex.height - counted,
        runs=int(df.filter(pl.col("run_val").is_not_null() | (pl.col("role") != "verdict")
                           & (pl.col("commit") != "none")).height),
        best_val=best_val,
        best_description=best["description"] if best else None,
        best_commit=best["commit"] if best else None, best_experiment=best["experiment"] if best else None,
        best_runs=held.runs if held else int(best["runs"] or 1) if best else None,
        baseline_val=base["val"] if base else None,
        gain=gain,
        noise=noise_floor(df, rows),
        eras=eras,
        total_cost_usd=float(cost.sum()) if cost.len() else None,
    )


def integer_axis(lo: float, hi: float) -> alt.Axis:
    """An axis of whole numbers (experiments, lines, counts): each integer from lo to hi as a tick when
    there are few (a format alone would label -1, -1, 0, 1, 1 on a short span), else the multiples of a
    round step (1, 2 or 5 times a power of ten, about ten ticks), 0 among them where it is in the span."""
    lo, hi = math.floor(lo), math.ceil(hi)
    if hi - lo <= 25:
        return alt.Axis(values=list(range(lo, hi + 1)), format="d")
    power = 10 ** math.floor(math.log10((hi - lo) / 10))
    step = next(k * power for k in (1, 2, 5, 10) if (hi - lo) / (k * power) <= 12)
    return alt.Axis(values=list(range(math.ceil(lo / step) * step, hi + 1, step)), format="d")


def _empty_chart(message: str = "no data yet") -> alt.Chart:
    """A chart that still renders (and converts to SVG) when there is nothing to plot."""
    return alt.Chart(pl.DataFrame({"text": [message]})).mark_text(size=16, color="#888").encode(
        text="text:N").properties(width=600, height=120)


def _status_scale(df: pl.DataFrame) -> alt.Scale:
    """Fixed colors for the lab's statuses, so charts agree; unknown ones get the leftovers."""
    present = df["status"].unique(maintain_order=True).to_list()
    unknown = [s for s in present if s not in STATUS_COLORS]
    domain = [s for s in STATUS_COLORS if s in present] + unknown
    colors = {**STATUS_COLORS, **{s: OTHER_COLORS[i % len(OTHER_COLORS)] for i, s in enumerate(unknown)}}
    return alt.Scale(domain=domain or [ledger.KEEP], range=[colors[s] for s in domain] or [STATUS_COLORS[ledger.KEEP]])


LONG_TEXT = ("description", "reason")  # the columns a notebook's table wraps instead of cutting


def wrapped(frame: pl.DataFrame) -> list[str]:
    """The long-text columns of a frame, for a table's wrapped_columns: read whole, not cut at its edge."""
    return [c for c in LONG_TEXT if c in frame.columns]


PICK = "pick"  # the charts' point selection: a click on an experiment picks it (the notebook shows it)


def _pick():
    return alt.selection_point(name=PICK, fields=["experiment"], on="click")


def picked(selections) -> int | None:
    """The experiment a click on a chart picked, from its selections ({PICK: {"experiment": [n]}}, as
    marimo's altair_chart keeps them), or None."""
    value = (selections or {}).get(PICK) if isinstance(selections, dict) else None
    got = value.get("experiment") if isinstance(value, dict) else None
    if isinstance(got, (list, tuple)):
        got = got[0] if got else None
    try:
        return int(got) if got is not None else None
    except (TypeError, ValueError):
        return None


class LatestPick:
    """The experiment a detail view shows: the one picked last in any of its sources (a click on one
    chart or another, a list), as a person expects; a source whose pick has not changed since the last
    look is not what they just did."""

    def __init__(self):
        self.seen: dict = {}
        self.number: int | None = None

    def update(self, **picks) -> int | None:
        for source, number in picks.items():
            if number is not None and self.seen.get(source) != number:
                self.number = number
        self.seen = picks
        return self.number


def experiment_detail(df: pl.DataFrame, number: int | None) -> dict | None:
    """One experiment: its verdict row (description, status, reason, commit, parent, mean val_bpb,
    lines) and its runs (role, seed, commit, status, run_bpb, steps, tokens/s), each with its row's
    index in the ledger (which names its log); None when there is no such experiment."""
    if number is None or df.height == 0:
        return None
    mine = df.with_row_index("row").filter(pl.col("experiment") == number)
    if mine.height == 0:
        return None
    ends = mine.filter(pl.col("is_verdict"))
    verdict = (ends if ends.height else mine).row(-1, named=True)
    runs = mine.filter((pl.col("role") != "verdict") & (pl.col("commit") != "none") & (pl.col("commit") != ""))
    return dict(number=number, description=verdict["description"], status=verdict["status"],
                reason=verdict["reason"], commit=verdict["commit"], parent=verdict["parent"] or "",
                val=verdict["val"], lines=(int(verdict["lines_added"] or 0), int(verdict["lines_removed"] or 0)),
                runs=runs.select("row", "role", pl.col("seed").cast(pl.Int64), "commit", "status",
                                 pl.col("run_val").alias("run_bpb"), "num_steps", "tokens_per_s"))


def _points(df: pl.DataFrame) -> pl.DataFrame:
    """Experiments with a number to plot, val_bpb replaced by the cleaned val (a mean over its runs)."""
    return experiments(df).filter(pl.col("val").is_not_null()).select(
        "experiment", "commit", "status", "description", "net_lines", "best_so_far", val_bpb="val",
        runs=pl.col("runs").fill_null(1).cast(pl.Int64),
        low=pl.col("val") - pl.col("se"), high=pl.col("val") + pl.col("se"),
        kept=pl.col("status") == ledger.KEEP,
        label=pl.when(pl.col("description").str.len_chars() > 40)
        .then(pl.col("description").str.slice(0, 39) + "…").otherwise(pl.col("description")),
    )


def _runs(df: pl.DataFrame) -> pl.DataFrame:
    """Every run of an experiment that took more than one, with its own value: what the means are of."""
    if df.height == 0:
        return pl.DataFrame(schema={"experiment": pl.Int64, "run_bpb": pl.Float64, "role": pl.Utf8})
    return df.filter(pl.col("run_val").is_not_null() & (pl.col("runs_spent") > 1)).select(
        "experiment", "commit", "role", pl.col("seed").cast(pl.Int64), run_bpb="run_val")


def progress_chart(df: pl.DataFrame) -> alt.Chart:
    """val_bpb per experiment: each experiment's mean (non-kept faded; kept ones with a bar of one
    standard error), the runs behind the means as small rings (confirmations, the best's controls),
    the frontier as a step line inside its noise band (± one run's noise), a dashed red line where a
    drift was seen, and each keep labelled with what it changed. Experiments without a number are
    listed in crashes()."""
    pts = _points(df)
    if pts.height == 0:
        return _empty_chart()
    runs = _runs(df)
    values = pts["val_bpb"].to_list() + runs["run_bpb"].to_list()
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.08, 1e-3)
    last = int(df["experiment"].max())
    end = last + max(1, round(last * 0.15))  # room for the last label
    x = alt.X("experiment:Q", title="experiment", axis=integer_axis(0, end), scale=alt.Scale(domain=[0, end]))
    yscale = alt.Scale(domain=[lo - pad, hi + pad], zero=False)
    y = alt.Y("val_bpb:Q", title="val_bpb (lower is better)", scale=yscale)
    base = alt.Chart(pts)
    pick = _pick()
    points = base.mark_point(filled=True).encode(
        x=x, y=y, color=alt.Color("status:N", scale=_status_scale(pts)),
        size=alt.condition(pick, alt.value(150), alt.value(60), empty=False),  # the picked one stands out
        opacity=alt.condition("datum.kept", alt.value(1.0), alt.value(0.35)), tooltip=TOOLTIP).add_params(pick)
    layers = []
    frontier = experiments(df).filter(pl.col("best_so_far").is_not_null()).select(
        "experiment", "best_so_far", band_low=pl.col("best_so_far") - pl.col("noise").forward_fill(),
        band_high=pl.col("best_so_far") + pl.col("noise").forward_fill())
    if frontier.height:
        band = frontier.filter(pl.col("band_low").is_not_null())
        if band.height:
            layers.append(alt.Chart(band).mark_area(interpolate="step-after", opacity=0.12, color=STATUS_COLORS[ledger.KEEP],
                                                    clip=True)
                          .encode(x=x, y=alt.Y("band_low:Q", scale=yscale), y2="band_high:Q",
                                  tooltip=[alt.Tooltip("best_so_far:Q", title="best"),
                                           alt.Tooltip("band_high:Q", title="+1 run's noise")]))
        layers.append(alt.Chart(frontier).mark_line(interpolate="step-after", color=STATUS_COLORS[ledger.KEEP])
                      .encode(x=x, y=alt.Y("best_so_far:Q", scale=yscale)))
    if runs.height:
        layers.append(alt.Chart(runs).mark_point(size=25, color="#555", opacity=0.5).encode(
            x=x, y=alt.Y("run_bpb:Q", scale=yscale), shape=alt.Shape("role:N", title="run"),
            tooltip=["experiment:Q", "role:N", "seed:Q", "commit:N", alt.Tooltip("run_bpb:Q", format=".6f")]))
    drifts = df.filter(pl.col("reason").str.starts_with("drift:")).select("experiment", "reason")
    if drifts.height:  # where a control saw the machine change: the runs before it were set aside
        layers.append(alt.Chart(drifts).mark_rule(color="#d62728", strokeDash=[2, 3]).encode(
            x=x, tooltip=["experiment:Q", "reason:N"]))
        layers.append(alt.Chart(drifts).mark_text(align="left", dx=3, y=8, fontSize=10, color="#d62728")
                      .encode(x=x, text=alt.value("drift")))
    bars = pts.filter(pl.col("kept") & pl.col("low").is_not_null())
    if bars.height:
        layers.append(alt.Chart(bars).mark_rule(color=STATUS_COLORS[ledger.KEEP], strokeWidth=2).encode(
            x=x, y=alt.Y("low:Q", scale=yscale), y2="high:Q"))
    layers.append(points)
    if frontier.height:
        layers.append(base.transform_filter("datum.kept").mark_text(align="left", dx=6, dy=-8, angle=0, fontSize=10)
                      .encode(x=x, y=y, text="label:N"))
    return alt.layer(*layers).properties(width=720, height=360, title="progress").interactive()


def complexity_chart(df: pl.DataFrame, lam: float = DEFAULT_LAMBDA) -> alt.Chart:
    """val_bpb against net lines changed. Dashed lines join equal penalized scores
    (val + lam*lines = c); the shaded region is where a score is below the current best's val_bpb,
    which a keep needs (the judge also needs it shown beyond the noise, at its confidence)."""
    pts = _points(df)
    if pts.height == 0:
        return _empty_chart()
    s = summary(df)
    xmin, xmax = min(pts["net_lines"].min(), 0) - 1, max(pts["net_lines"].max(), 0) + 1
    lo, hi = pts["val_bpb"].min(), pts["val_bpb"].max()
    pad = max((hi - lo) * 0.08, 1e-3)
    ymin, ymax = lo - pad, hi + pad
    x = alt.X("net_lines:Q", title="net lines changed (added - removed)", scale=alt.Scale(domain=[xmin, xmax]),
              axis=integer_axis(xmin, xmax))
    yscale = alt.Scale(domain=[ymin, ymax])
    y = alt.Y("val_bpb:Q", title="val_bpb", scale=yscale)
    layers = []
    best, base = s["best_val"], s["baseline_val"]
    if best is not None:
        levels = {f"best {best:.4f}": best}
        if base is not None and base != best:
            levels[f"baseline {base:.4f}"] = base
            steps = [best + (base - best) * k / 3 for k in (1, 2)]
            levels.update({f"score {c:.4f}": c for c in steps})
        lines = pl.DataFrame([dict(level=name, net_lines=float(xv), val_bpb=c - lam * xv)
                              for name, c in levels.items() for xv in (xmin, xmax)])
        region = pl.DataFrame(dict(net_lines=[float(xmin), float(xmax)],
                                   val_bpb=[best - lam * xmin, best - lam * xmax], floor=[ymin, ymin]))
        layers.append(alt.Chart(region).mark_area(opacity=0.12, color=STATUS_COLORS[ledger.KEEP], clip=True).encode(
            x=x, y=alt.Y("val_bpb:Q", scale=yscale), y2="floor:Q"))
        dashed = alt.Chart(lines).encode(x=x, y=alt.Y("val_bpb:Q", scale=yscale))
        layers.append(dashed.mark_line(strokeDash=[4, 4], color="#999", clip=True).encode(
            detail="level:N", tooltip=[alt.Tooltip("level:N", title="score")]))
        layers.append(dashed.transform_filter(f"datum.net_lines == {float(xmax)}").mark_text(
            align="right", dy=-6, fontSize=10, color="#777", clip=True).encode(text="level:N"))
    layers.append(alt.Chart(pts).mark_point(filled=True, size=60, clip=True).encode(
        x=x, y=y, color=alt.Color("status:N", scale=_status_scale(pts)),
        opacity=alt.condition("datum.kept", alt.value(1.0), alt.value(0.45)), tooltip=TOOLTIP).add_params(_pick()))
    title = f"val_bpb vs lines changed (λ {lam:g} bpb/line; shaded: scores below the best)"
    return alt.layer(*layers).properties(width=720, height=360, title=title).interactive()


def status_rates(df: pl.DataFrame) -> pl.DataFrame:
    """Count and share of each verdict over the experiments, the lab's statuses first, unknown ones after."""
    ex = experiments(df)
    if ex.height == 0:
        return pl.DataFrame(schema={"status": pl.Utf8, "count": pl.Int64, "share": pl.Float64})
    order = {s: i for i, s in enumerate(STATUS_COLORS)}
    counts = ex.group_by("status", maintain_order=True).agg(count=pl.len().cast(pl.Int64))
    counts = counts.with_columns(share=pl.col("count") / ex.height,
                                 _order=pl.col("status").replace_strict(order, default=len(order)))
    return counts.sort(["_order", "count"], descending=[False, True]).drop("_order")


def runs_per_verdict(df: pl.DataFrame) -> pl.DataFrame:
    """What the verdicts cost: per status, the experiments, the runs they took in all (confirmations
    and the best's runs beside them included) and the runs per experiment."""
    ex = experiments(df)
    if ex.height == 0:
        return pl.DataFrame(schema={"status": pl.Utf8, "experiments": pl.Int64, "runs": pl.Int64,
                                    "runs_per_experiment": pl.Float64})
    order = {s: i for i, s in enumerate(STATUS_COLORS)}
    table = ex.group_by("status", maintain_order=True).agg(
        experiments=pl.len().cast(pl.Int64), runs=pl.col("runs_spent").sum().cast(pl.Int64))
    table = table.with_columns(runs_per_experiment=pl.col("runs") / pl.col("experiments"),
                               _order=pl.col("status").replace_strict(order, default=len(order)))
    return table.sort("_order").drop("_order")


def status_chart(df: pl.DataFrame) -> alt.Chart:
    rates = status_rates(df)
    if rates.height == 0:
        return _empty_chart()
    return alt.Chart(rates).mark_bar().encode(
        x=alt.X("count:Q", title="experiments", axis=integer_axis(0, rates["count"].max())),
        y=alt.Y("status:N", sort=None, title=None),
        color=alt.Color("status:N", scale=_status_scale(rates), legend=None),
        tooltip=["status:N", "count:Q", alt.Tooltip("share:Q", format=".1%")],
    ).properties(width=400, height=alt.Step(22), title="verdicts")


def top_hits(df: pl.DataFrame, n: int = 10) -> pl.DataFrame:
    """The keeps that lowered the frontier most (the first keep, the baseline, has no improvement); their
    change of the best in bpb (negative: lower, better)."""
    return experiments(df).filter(pl.col("improvement").is_not_null()).sort("improvement", descending=True).head(n) \
        .select("experiment", "commit", "description", pl.col("val").alias("val_bpb"),
                pl.col("runs").fill_null(1).cast(pl.Int64), (-pl.col("improvement")).alias("change"),
                pl.col("lines_added", "lines_removed").fill_null(0).cast(pl.Int64), "net_lines")


def crashes(df: pl.DataFrame) -> pl.DataFrame:
    """Every experiment that is neither keep nor discard (crash, timeout, rejected, pruned, unknown) and why."""
    return experiments(df).filter(~pl.col("status").is_in([ledger.KEEP, ledger.DISCARD])).select(
        "experiment", "commit", "status", "description", "reason")


def cost_by_agent(df: pl.DataFrame) -> pl.DataFrame:
    """Per agent: experiments, keeps, tokens and USD. Empty when no row carries cost or tokens
    (the search agent and the old tool record none), so a report can simply leave it out."""
    has_cost = df.select([pl.col(c).is_not_null().any() for c in ["cost_usd", *TOKEN_COLUMNS]]).row(0) \
        if df.height else ()
    if not any(has_cost):
        return pl.DataFrame(schema={"agent": pl.Utf8, "experiments": pl.Int64, "keeps": pl.Int64,
                                    "tokens": pl.Float64, "cost_usd": pl.Float64})
    tokens = pl.sum_horizontal([pl.col(c).fill_null(0) for c in TOKEN_COLUMNS])
    return (df.with_columns(agent=pl.when(pl.col("agent") == "").then(pl.lit("(none)")).otherwise(pl.col("agent")),
                            _tokens=tokens)
            .group_by("agent", maintain_order=True)
            .agg(experiments=pl.col("is_verdict").sum().cast(pl.Int64),
                 keeps=(pl.col("is_verdict") & (pl.col("status") == ledger.KEEP)).sum().cast(pl.Int64),
                 tokens=pl.col("_tokens").sum(), cost_usd=pl.col("cost_usd").fill_null(0).sum())
            .sort("cost_usd", descending=True))


# --- for a reader: the setup, every experiment, changes written as lower bpb -----------------------

MINUS = "\u2212"


def change(d: float | None, digits: int = 4) -> str:
    """A change in val_bpb as a reader reads it: lower is better, so a gain is "−0.0320 bpb" (never
    "+0.032 improvement"), a loss "+0.0100 bpb"."""
    if d is None:
        return "-"
    if round(d, digits) == 0:
        return f"{0:.{digits}f} bpb"
    return f"{MINUS if d < 0 else '+'}{abs(d):.{digits}f} bpb"


def _values(df: pl.DataFrame, column: str) -> list[str]:
    """The distinct non-empty values of a column, in the order they first appear."""
    if column not in df.columns or df.height == 0:
        return []
    seen = df[column].cast(pl.Utf8).drop_nulls().str.strip_chars()
    return [v for v in dict.fromkeys(seen.to_list()) if v]


def keep_confidence(df: pl.DataFrame) -> str | None:
    """How sure the judge had to be to keep (e.g. "95%"; several if it changed), or None where the
    ledger does not say (the single-run rule, an older ledger)."""
    values = _values(df, "confidence")
    return ", ".join(f"{float(v):.0%}" for v in values) if values else None


def setup(df: pl.DataFrame) -> dict:
    """Where and how a run's numbers were measured, from its rows: device, profile, time budget, data
    and tokenizer (their hashes), agents, judging policy, noise floor and sandbox. A value a ledger
    does not record (an older or the original project's file) is "not recorded"; several values
    (a device changed during the run) are all listed."""
    def listed(column, fmt=str):
        values = _values(df, column)
        return ", ".join(fmt(v) for v in values) if values else "not recorded"

    def seconds(v):
        try:
            return f"{float(v):g} s"
        except ValueError:
            return v
    agents = [a for a in _values(df, "agent") if a not in ("baseline", "noise")]
    confidence = keep_confidence(df)
    policy = listed("policy") + (f" (a keep is {confidence} sure)" if confidence else "")
    sigma = noise_floor(df)
    noise = "not measured" if sigma is None else f"±{sigma:.4f} bpb per run"
    return dict(device=listed("device"), profile=listed("profile"),
                time_budget=listed("time_budget", seconds),
                data=listed("data_hash", lambda v: v[:12]), tokenizer=listed("tokenizer_hash", lambda v: v[:12]),
                agent=", ".join(agents) if agents else "not recorded", policy=policy, noise=noise,
                sandbox=listed("sandbox"), workers=workers(df))


SETUP_LABELS = {"device": "device", "profile": "profile", "time_budget": "training budget per run",
                "data": "data (hash)", "tokenizer": "tokenizer (hash)", "agent": "agent", "policy": "judging policy",
                "noise": "noise floor", "sandbox": "sandbox", "workers": "workers (runs each)"}


def setups(frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Where each run (a frame from `load`, by its label) was measured: a row per run, SETUP_LABELS as columns."""
    return pl.DataFrame([{"run": label, **{SETUP_LABELS[k]: str(v) for k, v in setup(df).items()}}
                         for label, df in frames.items()],
                        schema={"run": pl.Utf8, **{label: pl.Utf8 for label in SETUP_LABELS.values()}})


def workers(df: pl.DataFrame) -> str:
    """The workers the runs went to (`--workers N`) and how many runs each took; one worker, this
    machine's, where the ledger names none."""
    if "worker" not in df.columns:
        return "1 (this machine)"
    counts = df.filter(pl.col("worker").is_not_null() & (pl.col("worker") != "")).group_by("worker").len().sort("worker")
    if counts.height == 0:
        return "1 (this machine)"
    each = ", ".join(f"{w}: {n} run{'s' if n != 1 else ''}" for w, n in counts.iter_rows())
    return f"{counts.height} ({each})"


def every_experiment(df: pl.DataFrame) -> pl.DataFrame:
    """One row per experiment for a reader: its verdict, what it changed, the runs it took, its mean
    val_bpb and its change against the best it was tried on (the judge's paired difference with its
    interval; in a ledger without one, its value against the best's; lower is better), its lines and,
    for what is neither kept nor discarded, why."""
    ex = experiments(df)
    schema = {"#": pl.Int64, "verdict": pl.Utf8, "description": pl.Utf8, "runs": pl.Int64, "val_bpb": pl.Float64,
              "change vs best, same seeds": pl.Utf8, "lines": pl.Utf8, "why": pl.Utf8}
    if ex.height == 0:
        return pl.DataFrame(schema=schema)
    rows, best = [], None
    for r in ex.iter_rows(named=True):
        d = r["diff"]
        if d is None and r["val"] is not None and best is not None:
            d = r["val"] - best  # a ledger without the judge's paired difference: against the best's value
        if r["status"] == ledger.KEEP and r["val"] is not None:
            best = r["val"]
        low, high = r["diff_low"], r["diff_high"]
        interval = f" [{change(low).removesuffix(' bpb')}, {change(high).removesuffix(' bpb')}]" \
            if r["diff"] is not None and low is not None and high is not None else ""
        lines = f"+{int(r['lines_added'] or 0)}/{MINUS}{int(r['lines_removed'] or 0)}" \
            if r["lines_added"] is not None or r["lines_removed"] is not None else "-"
        why = r["reason"] if r["status"] not in (ledger.KEEP, ledger.DISCARD) else ""
        rows.append({"#": r["experiment"], "verdict": r["status"], "description": r["description"],
                     "runs": int(r["runs_spent"] or 0) or None, "val_bpb": r["val"],
                     "change vs best, same seeds": (change(d) + interval) if d is not None else "-", "lines": lines,
                     "why": why[:200]})
    return pl.DataFrame(rows, schema=schema)


def kept(df: pl.DataFrame) -> list[dict]:
    """The kept experiments after the baseline, in order: experiment, commit, parent, description,
    mean val_bpb and how much it lowered the best (as a change: negative is a gain)."""
    ex = experiments(df).filter((pl.col("status") == ledger.KEEP) & pl.col("improvement").is_not_null())
    return [dict(experiment=r["experiment"], commit=r["commit"], parent=r["parent"] or "", description=r["description"],
                 val=r["val"], change=-r["improvement"]) for r in ex.iter_rows(named=True)]


# --- several runs side by side --------------------------------------------------------------------

LOCAL_RESULTS = ("Results are local to the machine: a run's val_bpb depends on its device, its data and its "
                 "training budget, so runs are ranked by how far each got below its own baseline (lower is "
                 "better), never by val_bpb across machines. Compare val_bpb itself only between runs with the "
                 "same setup.")


def setup_differences(frames: dict[str, pl.DataFrame]) -> str | None:
    """A sentence naming what differs in where the runs were measured (device, profile, training
    budget, data), or None when they agree: their val_bpb is then not comparable, their gains are."""
    where = {label: setup(df) for label, df in frames.items()}
    differ = []
    for key in ("device", "profile", "time_budget", "data"):
        if len({w[key] for w in where.values()}) > 1:
            differ.append(f"{SETUP_LABELS[key]} ({', '.join(f'{label}: {w[key]}' for label, w in where.items())})")
    return ("These runs were not measured alike: they differ in " + "; ".join(differ)
            + ". Compare their gains over their own baselines, not their val_bpb.") if differ else None


def labelled(paths) -> dict[str, Path]:
    """results.tsv files by a label each: the name of the folder holding it (a run's tag, a participant's
    folder), or the file's own name when it is not called results.tsv; a label taken gets (2), (3), ..."""
    found: dict[str, Path] = {}
    for path in map(Path, paths):
        label = path.parent.resolve().name if path.name == "results.tsv" else path.stem
        unique, k = label, 2
        while unique in found:
            unique, k = f"{label} ({k})", k + 1
        found[unique] = path
    return found


def comparison(frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """A leaderboard of runs (each a frame from `load`, by its label): where each was measured, its
    baseline, its best and its change from its own baseline, best first. Runs on different machines
    are compared by their change from their own baseline, never by val_bpb itself."""
    rows = []
    for label, df in frames.items():
        s, where = summary(df), setup(df)
        gain = -s["gain"] if s["gain"] is not None else None
        rows.append({"run": label, "change from its baseline": change(gain), "experiments": s["experiments"],
                     "kept": s["kept"], "baseline val_bpb": s["baseline_val"], "best val_bpb": s["best_val"],
                     "noise": where["noise"], "device": where["device"], "profile": where["profile"],
                     "budget": where["time_budget"], "_order": gain if gain is not None else float("inf")})
    # what the ranking is by comes first: a narrow page still shows it
    schema = {"run": pl.Utf8, "change from its baseline": pl.Utf8, "experiments": pl.Int64, "kept": pl.Int64,
              "baseline val_bpb": pl.Float64, "best val_bpb": pl.Float64, "noise": pl.Utf8, "device": pl.Utf8,
              "profile": pl.Utf8, "budget": pl.Utf8, "_order": pl.Float64}
    table = pl.DataFrame(rows, schema=schema).sort("_order", "run", maintain_order=True)
    rank = pl.col("_order").rank("min").cast(pl.Int64).alias("rank")  # equal gains share a rank: 1, 2, 2, 4
    return table.select(rank, pl.exclude("_order"))


def comparison_chart(frames: dict[str, pl.DataFrame]) -> alt.Chart:
    """Each run's best so far as a change from its own baseline, against its experiment number."""
    parts = []
    for label, df in frames.items():
        ex = experiments(df).filter(pl.col("best_so_far").is_not_null())
        if ex.height == 0:
            continue
        base = ex["best_so_far"][0]
        parts.append(ex.select("experiment", change=pl.col("best_so_far") - base).with_columns(run=pl.lit(label)))
    if not parts:
        return _empty_chart()
    data = pl.concat(parts)
    return alt.Chart(data).mark_line(interpolate="step-after", point=True).encode(
        x=alt.X("experiment:Q", title="experiment", axis=integer_axis(data["experiment"].min(), data["experiment"].max())),
        y=alt.Y("change:Q", title="best so far − its baseline (bpb, lower is better)", scale=alt.Scale(zero=False)),
        color=alt.Color("run:N", title="run"),
        tooltip=["run:N", "experiment:Q", alt.Tooltip("change:Q", format="+.4f")],
    ).properties(width=700, height=300, title="each run against its own baseline")
