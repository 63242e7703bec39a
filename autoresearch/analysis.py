"""What a run's results.tsv says, as plain functions of a polars frame.

Notebooks and the HTML report only display what these return, so the numbers a person reads are the
same everywhere and are tested once. Every function accepts the awkward ledgers a real run produces:
no rows yet (or no file), a crash before any keep, only crashes, statuses this code has never heard
of, and the original project's five-column file (no lines, agent or cost columns; 0.0 for a crash).

The frontier follows the lab's judge (loop.judge): after each keep the best val_bpb becomes that
row's val_bpb, and the next experiment must beat it. A keep bought by deleting lines can raise the
frontier slightly; that is what the lab compared against, so that is what is drawn.
"""
from __future__ import annotations

from pathlib import Path

import altair as alt
import polars as pl

from . import ledger

DEFAULT_LAMBDA = 0.001 / 20
STATUS_COLORS = {"keep": "#2ca02c", "discard": "#7f7f7f", "crash": "#d62728", "timeout": "#ff7f0e",
                 "rejected": "#9467bd"}
OTHER_COLORS = ["#8c564b", "#e377c2", "#17becf", "#bcbd22", "#1f77b4"]
TOKEN_COLUMNS = ["input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"]
TOOLTIP = ["experiment:Q", "commit:N", "status:N", "val_bpb:Q", "net_lines:Q", "description:N"]


def load(source) -> pl.DataFrame:
    """The ledger (a path, or a frame from ledger.read_frame) with the derived columns added:
    experiment (1-based), val (val_bpb, <= 0 treated as missing: the old tool wrote 0 for a crash),
    net_lines, best_so_far (the frontier after this row) and improvement (for kept rows, how much
    this row lowered the frontier; null for the first keep, which has nothing to improve on)."""
    df = source if isinstance(source, pl.DataFrame) else ledger.read_frame(Path(source))
    missing = [c for c in ledger.COLUMNS if c not in df.columns]
    df = df.with_columns([pl.lit(None, dtype=pl.Utf8).alias(c) for c in missing])
    numeric = ["val_bpb", "lines_added", "lines_removed", "cost_usd", *TOKEN_COLUMNS]
    df = df.with_columns([pl.col(c).cast(pl.Float64, strict=False) for c in numeric])
    df = df.with_columns(
        pl.col("status").cast(pl.Utf8).fill_null("").str.strip_chars(),
        pl.col("description").cast(pl.Utf8).fill_null(""),
        pl.col("commit").cast(pl.Utf8).fill_null(""),
        pl.col("reason").cast(pl.Utf8).fill_null(""),
        pl.col("agent").cast(pl.Utf8).fill_null(""),
    )
    val = pl.when(pl.col("val_bpb") > 0).then(pl.col("val_bpb")).otherwise(None)
    df = df.with_columns(
        experiment=pl.int_range(1, pl.len() + 1, dtype=pl.Int64),
        val=val,
        net_lines=(pl.col("lines_added").fill_null(0) - pl.col("lines_removed").fill_null(0)).cast(pl.Int64),
    )
    kept_val = pl.when(pl.col("status") == "keep").then(pl.col("val")).otherwise(None)
    df = df.with_columns(best_so_far=kept_val.forward_fill())
    before = pl.col("best_so_far").shift(1)
    return df.with_columns(
        improvement=pl.when((pl.col("status") == "keep") & pl.col("val").is_not_null()).then(before - pl.col("val"))
    )


def _count(df: pl.DataFrame, *statuses: str) -> int:
    return int(df.filter(pl.col("status").is_in(list(statuses))).height)


def summary(df: pl.DataFrame) -> dict:
    """The headline numbers. best_* is the lab's current best (the last keep); crashed counts crash
    and timeout (ran, produced no number); other counts rejected and unknown statuses."""
    kept = df.filter((pl.col("status") == "keep") & pl.col("val").is_not_null())
    best = kept.row(-1, named=True) if kept.height else None
    base = kept.row(0, named=True) if kept.height else None
    cost = df["cost_usd"].drop_nulls()
    counted = _count(df, "keep", "discard", "crash", "timeout")
    return dict(
        experiments=df.height, kept=_count(df, "keep"), discarded=_count(df, "discard"),
        crashed=_count(df, "crash", "timeout"), other=df.height - counted,
        best_val=best["val"] if best else None, best_description=best["description"] if best else None,
        best_commit=best["commit"] if best else None, best_experiment=best["experiment"] if best else None,
        baseline_val=base["val"] if base else None,
        gain=(base["val"] - best["val"]) if best else None,
        total_cost_usd=float(cost.sum()) if cost.len() else None,
    )


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
    return alt.Scale(domain=domain or ["keep"], range=[colors[s] for s in domain] or [STATUS_COLORS["keep"]])


def _points(df: pl.DataFrame) -> pl.DataFrame:
    """Rows with a number to plot, val_bpb replaced by the cleaned val."""
    return df.filter(pl.col("val").is_not_null()).select(
        "experiment", "commit", "status", "description", "net_lines", "best_so_far", val_bpb="val",
        kept=pl.col("status") == "keep",
        label=pl.when(pl.col("description").str.len_chars() > 40)
        .then(pl.col("description").str.slice(0, 39) + "…").otherwise(pl.col("description")),
    )


def progress_chart(df: pl.DataFrame) -> alt.Chart:
    """val_bpb per experiment: every measured row (non-kept faded), the frontier as a step line and
    each keep labelled with what it changed. Rows without a number are listed in crashes()."""
    pts = _points(df)
    if pts.height == 0:
        return _empty_chart()
    lo, hi = pts["val_bpb"].min(), pts["val_bpb"].max()
    pad = max((hi - lo) * 0.08, 1e-3)
    xscale = alt.Scale(domain=[0, df.height + max(1, round(df.height * 0.15))])  # room for the last label
    x = alt.X("experiment:Q", title="experiment", axis=alt.Axis(tickMinStep=1), scale=xscale)
    yscale = alt.Scale(domain=[lo - pad, hi + pad], zero=False)
    y = alt.Y("val_bpb:Q", title="val_bpb (lower is better)", scale=yscale)
    base = alt.Chart(pts)
    points = base.mark_point(filled=True, size=60).encode(
        x=x, y=y, color=alt.Color("status:N", scale=_status_scale(pts)),
        opacity=alt.condition("datum.kept", alt.value(1.0), alt.value(0.35)), tooltip=TOOLTIP)
    frontier_rows = df.filter(pl.col("best_so_far").is_not_null()).select("experiment", "best_so_far")
    layers = [points]
    if frontier_rows.height:
        layers.insert(0, alt.Chart(frontier_rows).mark_line(interpolate="step-after", color=STATUS_COLORS["keep"])
                      .encode(x=x, y=alt.Y("best_so_far:Q", scale=yscale)))
        layers.append(base.transform_filter("datum.kept").mark_text(align="left", dx=6, dy=-8, angle=0, fontSize=10)
                      .encode(x=x, y=y, text="label:N"))
    return alt.layer(*layers).properties(width=720, height=360, title="progress").interactive()


def complexity_chart(df: pl.DataFrame, lam: float = DEFAULT_LAMBDA) -> alt.Chart:
    """val_bpb against net lines changed. Dashed lines join equal penalized scores
    (val + lam*lines = c); the shaded region is where the next experiment would be kept: its score
    below the current best val_bpb (the lab's judge, margin 0)."""
    pts = _points(df)
    if pts.height == 0:
        return _empty_chart()
    s = summary(df)
    xmin, xmax = min(pts["net_lines"].min(), 0) - 1, max(pts["net_lines"].max(), 0) + 1
    lo, hi = pts["val_bpb"].min(), pts["val_bpb"].max()
    pad = max((hi - lo) * 0.08, 1e-3)
    ymin, ymax = lo - pad, hi + pad
    x = alt.X("net_lines:Q", title="net lines changed (added - removed)", scale=alt.Scale(domain=[xmin, xmax]))
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
        layers.append(alt.Chart(region).mark_area(opacity=0.12, color=STATUS_COLORS["keep"], clip=True).encode(
            x=x, y=alt.Y("val_bpb:Q", scale=yscale), y2="floor:Q"))
        dashed = alt.Chart(lines).encode(x=x, y=alt.Y("val_bpb:Q", scale=yscale))
        layers.append(dashed.mark_line(strokeDash=[4, 4], color="#999", clip=True).encode(
            detail="level:N", tooltip=[alt.Tooltip("level:N", title="score")]))
        layers.append(dashed.transform_filter(f"datum.net_lines == {float(xmax)}").mark_text(
            align="right", dy=-6, fontSize=10, color="#777", clip=True).encode(text="level:N"))
    layers.append(alt.Chart(pts).mark_point(filled=True, size=60, clip=True).encode(
        x=x, y=y, color=alt.Color("status:N", scale=_status_scale(pts)),
        opacity=alt.condition("datum.kept", alt.value(1.0), alt.value(0.45)), tooltip=TOOLTIP))
    title = f"val_bpb vs lines changed (lam {lam:g} bpb/line; shaded: would be kept now)"
    return alt.layer(*layers).properties(width=720, height=360, title=title).interactive()


def status_rates(df: pl.DataFrame) -> pl.DataFrame:
    """Count and share of each status, the lab's statuses first, unknown ones after."""
    if df.height == 0:
        return pl.DataFrame(schema={"status": pl.Utf8, "count": pl.Int64, "share": pl.Float64})
    order = {s: i for i, s in enumerate(STATUS_COLORS)}
    counts = df.group_by("status", maintain_order=True).agg(count=pl.len().cast(pl.Int64))
    counts = counts.with_columns(share=pl.col("count") / df.height,
                                 _order=pl.col("status").replace_strict(order, default=len(order)))
    return counts.sort(["_order", "count"], descending=[False, True]).drop("_order")


def status_chart(df: pl.DataFrame) -> alt.Chart:
    rates = status_rates(df)
    if rates.height == 0:
        return _empty_chart()
    return alt.Chart(rates).mark_bar().encode(
        x=alt.X("count:Q", title="experiments", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("status:N", sort=None, title=None),
        color=alt.Color("status:N", scale=_status_scale(rates), legend=None),
        tooltip=["status:N", "count:Q", alt.Tooltip("share:Q", format=".1%")],
    ).properties(width=400, height=alt.Step(22), title="statuses")


def top_hits(df: pl.DataFrame, n: int = 10) -> pl.DataFrame:
    """The keeps that lowered the frontier most (the first keep, the baseline, has no improvement)."""
    return df.filter(pl.col("improvement").is_not_null()).sort("improvement", descending=True).head(n).select(
        "experiment", "commit", "description", pl.col("val").alias("val_bpb"), "improvement",
        pl.col("lines_added", "lines_removed").fill_null(0).cast(pl.Int64), "net_lines")


def crashes(df: pl.DataFrame) -> pl.DataFrame:
    """Everything that is neither keep nor discard (crash, timeout, rejected, unknown) and why."""
    return df.filter(~pl.col("status").is_in(["keep", "discard"])).select(
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
            .agg(experiments=pl.len().cast(pl.Int64), keeps=(pl.col("status") == "keep").sum().cast(pl.Int64),
                 tokens=pl.col("_tokens").sum(), cost_usd=pl.col("cost_usd").fill_null(0).sum())
            .sort("cost_usd", descending=True))
