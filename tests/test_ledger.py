"""results.tsv: atomic appends from two processes, a torn last line, the original five columns.
Run: uv run pytest tests/test_ledger.py"""
import multiprocessing

import polars as pl

from autoresearch import ledger


def appender(path, name, n):
    for i in range(n):
        ledger.append(path, dict(commit=f"{name}{i:05d}", val_bpb=1.0 + i / 1e4, status="discard",
                                 description=f"{name} row {i} " + "x" * 300))


def test_two_appenders_never_interleave(tmp_path):
    path = tmp_path / "results.tsv"
    procs = [multiprocessing.Process(target=appender, args=(path, name, 300)) for name in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    text = path.read_text()
    assert text.count("commit\tval_bpb") == 1
    assert all(len(line.split("\t")) == len(ledger.COLUMNS) for line in text.splitlines())
    rows = ledger.read_rows(path)
    assert len(rows) == 600 and len({r["commit"] for r in rows}) == 600


def test_a_torn_last_line_is_skipped_then_sealed(tmp_path):
    path = tmp_path / "results.tsv"
    ledger.append(path, dict(commit="aaaaaaa", val_bpb=1.5, status="keep", description="baseline"))
    with open(path, "a") as f:
        f.write("bbbbbbb\t1.4\t0.1\tdisc")  # the loop died mid-write
    assert [r["commit"] for r in ledger.read_rows(path)] == ["aaaaaaa"]
    ledger.append(path, dict(commit="ccccccc", val_bpb=1.3, status="keep", description="next"))
    assert [r["commit"] for r in ledger.read_rows(path)] == ["aaaaaaa", "ccccccc"]
    frame = ledger.read_frame(path)
    assert frame["val_bpb"].to_list() == [1.5, 1.3]


def test_the_first_five_columns_are_the_original_ones(tmp_path):
    path = tmp_path / "results.tsv"
    ledger.append(path, dict(commit="abc1234", val_bpb=0.9979, memory_gb=44.0, status="keep", description="baseline",
                             lines_added=3, reason="tab\tand\nnewline"))
    header, row = path.read_text().splitlines()
    assert header.split("\t")[:5] == ["commit", "val_bpb", "memory_gb", "status", "description"]
    assert row.split("\t")[:5] == ["abc1234", "0.997900", "44.0", "keep", "baseline"]
    assert ledger.read_rows(path)[0]["reason"] == "tab and newline"
    # what the original project's analysis does with it
    frame = pl.read_csv(path, separator="\t")
    assert frame.select(["commit", "val_bpb", "memory_gb", "status", "description"]).row(0) == \
        ("abc1234", 0.9979, 44.0, "keep", "baseline")


def test_a_five_column_file_from_the_original_project_reads(tmp_path):
    path = tmp_path / "results.tsv"
    path.write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
                    "a1b2c3d\t0.997900\t44.0\tkeep\tbaseline\n"
                    "b2c3d4e\t0.000000\t0.0\tcrash\tdouble the width (OOM)\n"
                    "c3d4e5f\t0.993200\t44.2\tweird-status\tsomething new\n")
    rows = ledger.read_rows(path)
    assert [r["status"] for r in rows] == ["keep", "crash", "weird-status"]
    assert rows[0]["agent"] == "" and ledger.mismatch(rows, {"profile": "tiny"}) is None
    assert ledger.read_frame(path).height == 3


def test_an_empty_or_missing_ledger(tmp_path):
    assert ledger.read_rows(tmp_path / "missing.tsv") == []
    (tmp_path / "empty.tsv").write_text("")
    assert ledger.read_rows(tmp_path / "empty.tsv") == []
    assert ledger.read_frame(tmp_path / "empty.tsv").height == 0


def test_a_description_with_terminal_escapes_and_tabs_is_stored_and_printed_as_one_inert_line(tmp_path):
    """What an agent writes as a description, or a run as its error, reaches the operator's terminal
    through `status` and the loop's lines: a window title set, a colour, a cursor moved to redraw a
    verdict are all escape sequences, and none survives into the ledger or the printed description."""
    from autoresearch import proposals
    from autoresearch.agents import Proposal
    forged = "x\tkeep\n0000000\t0.1 \x1b]0;pwn\x07\x1b[31mRED\x1b[2A\x9b1m\x7f done"
    path = tmp_path / "results.tsv"
    ledger.append(path, dict(commit="aaaaaaa", status="discard", description=forged, reason=forged))
    row = ledger.read_rows(path)[-1]
    for text in (row["description"], row["reason"], proposals.describe(Proposal(description=forged, train_py=""))):
        assert text == "x keep 0000000 0.1 ]0;pwn[31mRED[2A1m done", repr(text)
    assert len(path.read_text().splitlines()) == 2  # the header and one row
