"""analysis.py on real results.tsv files: a run with a row per run (confirmations, controls, an early
abort), the lab's older one-row-per-experiment files, and the awkward ones a run really produces (no
rows, no file, a crash first, only crashes, the original five-column format).
Run: uv run pytest tests/test_analysis.py"""
import polars as pl
import pytest
import vl_convert as vlc

from autoresearch import analysis, ledger, measurements

EVIL = "bigger lr <script>alert(1)</script>"
FIVE_COLUMNS = """commit\tval_bpb\tmemory_gb\tstatus\tdescription
a1b2c3d\t0.997900\t44.0\tkeep\tbaseline
b2c3d4e\t0.993200\t44.2\tkeep\tincrease LR to 0.04
c3d4e5f\t1.005000\t44.0\tdiscard\tswitch to GeLU activation
d4e5f6g\t0.000000\t0.0\tcrash\tdouble model width (OOM)
e5f6g7h\t0.990000\t44.1\tkeep\tlonger warmup
"""


def write_normal(path):
    """A lab run: baseline, keeps, a simplification keep that raises the frontier, every status."""
    rows = [
        dict(commit="aaaaaaa", val_bpb=1.5, status="keep", description="baseline", lines_added=0, lines_removed=0,
             agent="search"),
        dict(commit="bbbbbbb", val_bpb=1.52, status="discard", description="deeper", lines_added=5, lines_removed=0,
             agent="search"),
        dict(commit="ccccccc", val_bpb=1.45, status="keep", description=EVIL, lines_added=3, lines_removed=1,
             agent="claude", cost_usd=0.5, input_tokens=1000, output_tokens=200),
        dict(commit="ddddddd", status="crash", description="huge batch", reason="CUDA out of memory",
             agent="claude", cost_usd=0.25, input_tokens=500),
        dict(commit="none", status="rejected", description="edit prepare", reason="touched protected prepare.py",
             agent="claude"),
        dict(commit="fffffff", val_bpb=1.42, status="keep", description="warmup", lines_added=2, lines_removed=0,
             agent="search"),
        dict(commit="ggggggg", val_bpb=1.41, status="weird", description="from the future", agent="search"),
        # kept on score: 1.4205 + 5e-5 * (0 - 60) = 1.4175 < 1.42, so the frontier goes up to 1.4205
        dict(commit="hhhhhhh", val_bpb=1.4205, status="keep", description="delete dead code", lines_added=0,
             lines_removed=60, agent="search"),
        dict(commit="iiiiiii", status="timeout", description="slow attention", reason="ran past the budget",
             agent="search"),
    ]
    for row in rows:
        ledger.append(path, row)
    return path


# where write_runs's rows say they were measured, as the lab records it in every row
SETUP = dict(device="cpu", profile="tiny", time_budget=10, sandbox="bwrap", policy="noise", data_hash="d" * 64,
             tokenizer_hash="e" * 64)


def write_runs(path):
    """A ledger as the lab writes it now: the baseline at three seeds, a candidate confirmed at more
    seeds with a control of the best beside it, a discard after one run and an early abort."""
    def run(experiment, commit, role, seed, value, status="run", **extra):
        row = dict(experiment=experiment, commit=commit, role=role, seed=seed, run_bpb=value, val_bpb=value,
                   status=status, era=1, noise=0.05, description="", agent="baseline" if experiment == 1 else "search",
                   **SETUP)
        ledger.append(path, {**row, **extra})
    run(1, "aaaaaaa", "baseline", 42, 3.00, description="baseline")
    run(1, "aaaaaaa", "baseline", 43, 3.10, description="baseline")
    run(1, "aaaaaaa", "baseline", 44, 3.05, "keep", description="baseline", runs=3, val_bpb=3.05)
    change = dict(description="better lr", lines_added=1, lines_removed=1, parent="aaaaaaa")
    run(2, "aaaaaaa", "control", 45, 3.02, description="better lr")
    run(2, "bbbbbbb", "candidate", 42, 2.90, **change)
    run(2, "bbbbbbb", "confirm", 43, 3.00, **change)
    run(2, "bbbbbbb", "confirm", 44, 2.95, "keep", runs=3, val_bpb=2.95, diff=-0.10, diff_low=-0.15,
        diff_high=-0.05, confidence=0.95, **change)
    run(3, "aaaaaaa", "control", 46, 3.60, description="worse", era=2,
        reason="drift: throughput 2,000 tok/s against 4,400 (-55%)")
    run(3, "ccccccc", "candidate", 46, 3.70, "discard", description="worse", runs=1, lines_added=3, era=2)
    ledger.append(path, dict(experiment=4, commit="ddddddd", role="candidate", seed=42, status="pruned",
                             description="diverges", reason="pruned at 30% of the budget", era=1))
    return path


def write_ledger(path, kind):
    if kind == "normal":
        write_normal(path)
    elif kind == "runs":
        write_runs(path)
    elif kind == "empty":
        path.write_text("\t".join(ledger.COLUMNS) + "\n")
    elif kind == "crash_first":
        ledger.append(path, dict(commit="aaaaaaa", status="crash", description="baseline", reason="no GPU"))
        ledger.append(path, dict(commit="bbbbbbb", val_bpb=1.5, status="keep", description="baseline again"))
        ledger.append(path, dict(commit="ccccccc", val_bpb=1.6, status="discard", description="worse"))
    elif kind == "only_crashes":
        ledger.append(path, dict(commit="aaaaaaa", status="crash", description="baseline", reason="no GPU"))
        ledger.append(path, dict(commit="aaaaaaa", status="timeout", description="baseline", reason="too slow"))
    elif kind == "five_columns":
        path.write_text(FIVE_COLUMNS)
    else:
        assert kind == "missing"
    return path


KINDS = ["normal", "runs", "empty", "missing", "crash_first", "only_crashes", "five_columns"]


@pytest.fixture(params=KINDS)
def any_ledger(request, tmp_path):
    return write_ledger(tmp_path / "results.tsv", request.param)


def test_normal_run_values(tmp_path):
    df = analysis.load(write_normal(tmp_path / "results.tsv"))
    assert df["experiment"].to_list() == list(range(1, 10))
    assert df["best_so_far"].to_list() == pytest.approx([1.5, 1.5, 1.45, 1.45, 1.45, 1.42, 1.42, 1.4205, 1.4205])
    assert df["net_lines"].to_list() == [0, 5, 2, 0, 0, 2, 0, -60, 0]
    imp = df["improvement"].to_list()
    assert imp[0] is None  # the baseline improves on nothing
    assert imp[2] == pytest.approx(0.05) and imp[5] == pytest.approx(0.03) and imp[7] == pytest.approx(-0.0005)
    assert [imp[i] for i in (1, 3, 4, 6, 8)] == [None] * 5
    assert df["val"][3] is None

    s = analysis.summary(df)
    assert (s["experiments"], s["kept"], s["discarded"], s["crashed"], s["other"]) == (9, 4, 1, 2, 2)
    assert s["best_val"] == pytest.approx(1.4205) and s["best_description"] == "delete dead code"
    assert s["baseline_val"] == pytest.approx(1.5) and s["gain"] == pytest.approx(0.0795)
    assert s["total_cost_usd"] == pytest.approx(0.75)

    rates = analysis.status_rates(df)
    assert rates["status"].to_list() == ["keep", "discard", "crash", "timeout", "rejected", "weird"]
    assert rates["count"].to_list() == [4, 1, 1, 1, 1, 1]
    assert rates["share"].sum() == pytest.approx(1.0)

    hits = analysis.top_hits(df)
    assert hits["commit"].to_list() == ["ccccccc", "fffffff", "hhhhhhh"]
    assert hits["description"][0] == EVIL and hits["net_lines"].to_list() == [2, 2, -60]
    assert analysis.top_hits(df, n=1).height == 1

    bad = analysis.crashes(df)
    assert bad["status"].to_list() == ["crash", "rejected", "weird", "timeout"]
    assert bad["reason"].to_list() == ["CUDA out of memory", "touched protected prepare.py", "", "ran past the budget"]

    cost = analysis.cost_by_agent(df)
    by = {r["agent"]: r for r in cost.iter_rows(named=True)}
    assert by["claude"]["experiments"] == 3 and by["claude"]["keeps"] == 1
    assert by["claude"]["tokens"] == 1700 and by["claude"]["cost_usd"] == pytest.approx(0.75)
    assert by["search"]["experiments"] == 6 and by["search"]["keeps"] == 3 and by["search"]["cost_usd"] == 0


def test_five_column_file_from_the_original_tool(tmp_path):
    path = write_ledger(tmp_path / "results.tsv", "five_columns")
    raw = ledger.read_frame(path)
    assert raw["lines_added"].null_count() == raw.height and set(raw["agent"].to_list()) == {""}
    df = analysis.load(path)
    assert df["val"][3] is None  # 0.000000 meant a crash
    assert df["best_so_far"].to_list() == pytest.approx([0.9979, 0.9932, 0.9932, 0.9932, 0.99])
    assert df["net_lines"].to_list() == [0] * 5
    s = analysis.summary(df)
    assert (s["experiments"], s["kept"], s["discarded"], s["crashed"], s["other"]) == (5, 3, 1, 1, 0)
    assert s["best_val"] == pytest.approx(0.99) and s["total_cost_usd"] is None
    assert analysis.top_hits(df)["change"].to_list() == pytest.approx([-0.0047, -0.0032])
    assert analysis.crashes(df)["description"].to_list() == ["double model width (OOM)"]
    assert analysis.cost_by_agent(df).height == 0


def test_a_frame_works_as_well_as_a_path(tmp_path):
    path = write_ledger(tmp_path / "results.tsv", "five_columns")
    frame = pl.read_csv(path, separator="\t")  # as the original tool's notebook would read it
    assert analysis.load(frame)["best_so_far"].to_list() == analysis.load(path)["best_so_far"].to_list()


def test_crash_first_and_only_crashes(tmp_path):
    df = analysis.load(write_ledger(tmp_path / "a.tsv", "crash_first"))
    assert df["best_so_far"].to_list() == [None, 1.5, 1.5]
    assert df["improvement"].to_list() == [None, None, None]
    s = analysis.summary(df)
    assert s["baseline_val"] == 1.5 and s["best_val"] == 1.5 and s["crashed"] == 1
    assert analysis.crashes(df)["reason"].to_list() == ["no GPU"]

    df = analysis.load(write_ledger(tmp_path / "b.tsv", "only_crashes"))
    assert df["best_so_far"].to_list() == [None, None]
    s = analysis.summary(df)
    assert s["kept"] == 0 and s["crashed"] == 2 and s["best_val"] is None and s["gain"] is None
    assert analysis.top_hits(df).height == 0 and analysis.crashes(df).height == 2


@pytest.mark.parametrize("kind", ["empty", "missing"])
def test_no_rows(tmp_path, kind):
    df = analysis.load(write_ledger(tmp_path / "results.tsv", kind))
    assert df.height == 0
    s = analysis.summary(df)
    assert s["experiments"] == 0 and s["best_val"] is None and s["total_cost_usd"] is None
    for frame in (analysis.status_rates(df), analysis.top_hits(df), analysis.crashes(df), analysis.cost_by_agent(df)):
        assert frame.height == 0 and frame.width > 0


def test_every_chart_renders_on_every_ledger(any_ledger):
    df = analysis.load(any_ledger)
    analysis.summary(df), analysis.status_rates(df), analysis.top_hits(df), analysis.crashes(df)
    analysis.cost_by_agent(df)
    charts = [analysis.progress_chart(df), analysis.complexity_chart(df), analysis.complexity_chart(df, lam=1e-3),
              analysis.status_chart(df)]
    for chart in charts:
        svg = vlc.vegalite_to_svg(chart.to_dict())
        assert svg.startswith("<svg") and "</svg>" in svg
    if df.filter(pl.col("val").is_not_null()).height == 0:
        assert "no data yet" in vlc.vegalite_to_svg(charts[0].to_dict())


def test_charts_carry_the_data_they_claim(tmp_path):
    df = analysis.load(write_normal(tmp_path / "results.tsv"))
    spec = analysis.progress_chart(df).to_dict()
    rows = [r for values in spec["datasets"].values() for r in values]
    plotted = {r["experiment"] for r in rows if "val_bpb" in r and r.get("val_bpb") is not None}
    assert plotted == {1, 2, 3, 6, 7, 8}  # every measured row; the crash, rejection and timeout have no number
    assert "selection" in str(spec) or "param" in str(spec)  # interactive
    labels = {r["label"] for r in rows if "label" in r}
    assert all(len(label) <= 40 for label in labels) and "baseline" in labels
    svg = vlc.vegalite_to_svg(analysis.complexity_chart(df).to_dict())
    assert "best 1.4205" in svg and "baseline 1.5000" in svg


def test_a_ledger_with_a_row_per_run(tmp_path):
    path = write_runs(tmp_path / "results.tsv")
    df = analysis.load(path)
    ex = analysis.experiments(df)
    assert ex["experiment"].to_list() == [1, 2, 3, 4]
    assert ex["status"].to_list() == ["keep", "keep", "discard", "pruned"]
    assert ex["val"].to_list()[:3] == pytest.approx([3.05, 2.95, 3.70]) and ex["val"][3] is None
    assert ex["runs_spent"].to_list() == [3, 4, 2, 1]  # experiment 2: a control of the best and 3 candidate runs
    assert ex["improvement"].to_list()[1] == pytest.approx(0.10)
    assert ex["se"][1] == pytest.approx(0.05 / 3 ** 0.5)

    s = analysis.summary(df)
    assert (s["experiments"], s["runs"], s["kept"], s["discarded"], s["pruned"]) == (4, 10, 2, 1, 1)
    # the best and the noise as the judge (and `autoresearch status`) holds them, from the same rows
    judged = measurements.noise(ledger.read_rows(path))
    assert s["best_val"] == pytest.approx(2.95) and s["best_runs"] == 3 and s["noise"] == pytest.approx(judged.sigma)
    assert judged.sigma != pytest.approx(0.05)  # not the last one the lab wrote down, a run before
    assert s["gain"] == pytest.approx(0.10) and s["eras"] == 2
    # a control of the best after the drift: its value now is that era's, as the judge compares with it
    ledger.append(path, dict(experiment=5, commit="bbbbbbb", role="control", seed=47, run_bpb=3.40, val_bpb=3.40,
                             status="run", era=2, description="a control", **SETUP))
    s = analysis.summary(analysis.load(path))
    held = measurements.best(ledger.read_rows(path), "bbbbbbb")
    assert (s["best_val"], s["best_runs"]) == (pytest.approx(3.40), 1) == (pytest.approx(held.mean), held.runs)
    assert s["gain"] == pytest.approx(0.10)  # the machine slowed, not the model: its gain is as it was judged

    spent = {r["status"]: r for r in analysis.runs_per_verdict(df).iter_rows(named=True)}
    assert spent["keep"]["experiments"] == 2 and spent["keep"]["runs"] == 7
    assert spent["keep"]["runs_per_experiment"] == pytest.approx(3.5) and spent["discard"]["runs"] == 2
    assert analysis.status_rates(df)["count"].to_list() == [2, 1, 1]
    assert analysis.crashes(df)["status"].to_list() == ["pruned"]
    assert analysis.top_hits(df)["runs"].to_list() == [3]

    spec = analysis.progress_chart(df).to_dict()
    rows = [r for values in spec["datasets"].values() for r in values]
    means = {r["experiment"]: r["val_bpb"] for r in rows if "val_bpb" in r and "label" in r}
    assert means == pytest.approx({1: 3.05, 2: 2.95, 3: 3.70})
    runs = [(r["experiment"], r["role"], r["seed"]) for r in rows if "run_bpb" in r]
    assert (2, "control", 45) in runs and (2, "confirm", 43) in runs and len(runs) == 9  # the runs behind means
    assert [r["experiment"] for r in rows if str(r.get("reason", "")).startswith("drift:")] == [3]
    assert any("band_low" in r for r in rows)  # the noise band around the frontier
    bars = [r for r in rows if r.get("low") is not None and "label" in r]
    assert {r["experiment"] for r in bars} == {1, 2}  # kept means with their standard error


def test_the_setup_names_the_workers_and_the_runs_each_took(tmp_path):
    one = analysis.load(write_runs(tmp_path / "one.tsv"))
    assert analysis.setup(one)["workers"] == "1 (this machine)"  # a ledger of one worker names none
    path = tmp_path / "two.tsv"
    for seed, worker in ((42, "h/1"), (43, "h/2"), (44, "h/1")):
        ledger.append(path, dict(experiment=1, commit="aaaaaaa", role="baseline", seed=seed, run_bpb=3.0, val_bpb=3.0,
                                 status="run", era=1, description="baseline", agent="baseline", worker=worker, **SETUP))
    assert analysis.setup(analysis.load(path))["workers"] == "2 (h/1: 2 runs, h/2: 1 run)"


def x_axis_labels(chart) -> list[str]:
    """The tick labels of the chart's x axis as drawn (vl-convert's SVG, as in the report)."""
    import html as html_module
    import re as re_module
    import vl_convert
    svg = vl_convert.vegalite_to_svg(chart.to_json())
    axis = re_module.search(r'aria-label="X-axis.*?</g></g></g>', svg, re_module.S).group(0)
    labels = re_module.search(r'role-axis-label.*?</g>', axis, re_module.S).group(0)
    return [html_module.unescape(t) for t in re_module.findall(r"<text[^>]*>([^<]*)</text>", labels)]


def test_whole_number_axes_label_each_number_once(tmp_path):
    """Lines changed of -1, 0 and +1 and a couple of verdicts: each axis labels a whole number once
    (a format alone drew -1, -1, 0, 1, 1)."""
    path = tmp_path / "results.tsv"
    for commit, value, status, added, removed in (("aaaaaaa", 1.5, "keep", 0, 0), ("bbbbbbb", 1.45, "keep", 1, 0),
                                                  ("ccccccc", 1.52, "discard", 0, 1)):
        ledger.append(path, dict(commit=commit, val_bpb=value, status=status, description=commit,
                                 lines_added=added, lines_removed=removed))
    df = analysis.load(path)
    for chart in (analysis.complexity_chart(df), analysis.status_chart(df), analysis.progress_chart(df)):
        labels = x_axis_labels(chart)
        assert labels and len(labels) == len(set(labels)), labels
    assert x_axis_labels(analysis.complexity_chart(df)) == ["−2", "−1", "0", "1", "2"]


def test_runs_measured_differently_are_said_to_differ_in_what_and_runs_alike_are_not(tmp_path):
    alike = {"a": analysis.load(write_runs(tmp_path / "a.tsv")), "b": analysis.load(write_runs(tmp_path / "b.tsv"))}
    assert analysis.setup_differences(alike) is None
    slower = tmp_path / "c.tsv"
    slower.write_text((tmp_path / "a.tsv").read_text().replace("\t10\t", "\t20\t"))
    frames = {**alike, "c": analysis.load(slower)}
    assert analysis.setup(frames["c"])["time_budget"] == "20 s"
    said = analysis.setup_differences(frames)
    assert "training budget per run (a: 10 s, b: 10 s, c: 20 s)" in said and "not their val_bpb" in said
    assert "device" not in said


def test_a_leaderboard_ranks_by_gain_and_equal_gains_share_a_rank(tmp_path):
    """A workshop: one participant lowered their baseline, two kept nothing (a gain of 0 each), one has no
    baseline yet. Ranks go 1, 2, 2, 4: the two who kept nothing are not put in an order by chance."""
    def only_baseline(name, value):
        path = tmp_path / name / "results.tsv"
        path.parent.mkdir()
        ledger.append(path, dict(experiment=1, commit="aaaaaaa", role="baseline", seed=42, run_bpb=value, val_bpb=value,
                                 status="keep", description="baseline", runs=1))
        return path
    (tmp_path / "ann").mkdir()
    frames = {"ann": analysis.load(write_runs(tmp_path / "ann" / "results.tsv")),
              "zoe": analysis.load(only_baseline("zoe", 3.1)), "bob": analysis.load(only_baseline("bob", 2.9)),
              "eve": analysis.load(pl.DataFrame())}
    board = analysis.comparison(frames)
    assert board.columns[:3] == ["rank", "run", "change from its baseline"]
    assert board["run"].to_list() == ["ann", "bob", "zoe", "eve"]
    assert board["rank"].to_list() == [1, 2, 2, 4]


def test_a_log_s_tail_skips_the_exit_noise_and_the_lab_s_lines_start_their_own(tmp_path):
    """torch's triton extension prints ~30 lines of 'leaked' objects as train.py's Python exits, the
    last without a newline: the lab's evaluator line still starts a line, and the tail a reader sees
    (the analyze notebook, the agent's crash context) keeps the summary block."""
    from autoresearch import logs
    log = tmp_path / "0002-abcdef1-s42.log"
    noise = ["nanobind: leaked 4 instances!", *[f' - leaked instance 0x{i:x} of type "triton._C.ir.attribute"'
                                                 for i in range(12)], " - ... skipped remainder",
             "nanobind: this is likely caused by a reference counting issue in the binding code.",
             "See https://nanobind.readthedocs.io/en/latest/refleaks.html"]
    log.write_text("step 00041 |  98.1% | loss 5.09 | lr 0.04 | dt 506ms | 8,090 tok/s | mfu n/a\n---\n"
                   "val_bpb:          nan\ntokens_per_s:     8343\n" + "\n".join(noise))
    logs.end_line(log)
    with open(log, "a") as f:
        f.write("---\nval_bpb: 2.759762\n")
    logs.end_line(log)  # a log that ends its line is left as it is
    text = log.read_text()
    assert "refleaks.html\n---\nval_bpb: 2.759762\n" in text and text.endswith("2.759762\n")
    tail = logs.tail(log, lines=5)
    assert "nanobind" not in tail and "leaked" not in tail
    assert tail.splitlines() == ["---", "val_bpb:          nan", "tokens_per_s:     8343", "---", "val_bpb: 2.759762"]
    assert logs.tail(tmp_path / "none.log") == ""
    empty = tmp_path / "empty.log"
    empty.write_text("")
    logs.end_line(empty)
    assert empty.read_text() == ""


def test_the_detail_shows_what_was_picked_last_in_any_chart_or_list():
    picks = analysis.LatestPick()
    assert picks.update(progress=None, complexity=None, listed=None) is None
    assert picks.update(progress=2, complexity=None, listed=None) == 2
    assert picks.update(progress=2, complexity=5, listed=None) == 5  # the progress chart still holds 2
    assert picks.update(progress=2, complexity=5, listed=7) == 7
    assert picks.update(progress=3, complexity=5, listed=7) == 3
    assert picks.update(progress=None, complexity=None, listed=7) == 3  # the charts drawn again: still 3
    assert picks.update(progress=None, complexity=5, listed=7) == 5  # the same point clicked again


def test_a_lines_axis_has_whole_ticks_and_zero_at_any_span():
    for lo, hi in ((-2, 3), (-3, 40), (-120, 7), (-30, -2), (0, 1000)):
        values = analysis.integer_axis(lo, hi).to_dict()["values"]
        assert all(isinstance(v, int) and lo <= v <= hi for v in values) and 3 <= len(values) <= 26, (lo, hi)
        assert (0 in values) == (lo <= 0 <= hi), (lo, hi, values)
