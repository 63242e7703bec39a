"""Manifest, profiles and cache handling of prepare.py.  Run: uv run pytest tests/test_prepare.py"""
import json
import re
import subprocess
import sys

import pytest

import prepare
from harness import manifest as cache_manifest, packing
from conftest import ROOT, TINY_ARGS, forget_constants, python_env, run_prepare


def test_manifest_records_profile_constants_overrides_and_hashes(tiny_cache):
    manifest = json.loads((tiny_cache / "manifest.json").read_text())
    assert manifest["profile"] == "tiny"
    assert manifest["constants"] == {"MAX_SEQ_LEN": 256, "VOCAB_SIZE": 4096, "EVAL_TOKENS": 16384, "TIME_BUDGET": 4}
    assert manifest["overrides"] == {"time_budget": 4, "eval_tokens": 16384}
    assert manifest["source"]["name"] == "python" and manifest["source"]["max_chars"] == 4_000_000
    assert len(manifest["tokenizer_hash"]) == 64 and len(manifest["data_hash"]) == 64
    for name, meta in manifest["files"].items():
        assert cache_manifest.file_sha256(tiny_cache / name) == meta["sha256"]
    assert manifest["tokens"]["train"] > 10 * manifest["tokens"]["val"] > 0


def test_constants_come_from_the_active_manifest(use_cache):
    assert (prepare.MAX_SEQ_LEN, prepare.TIME_BUDGET, prepare.EVAL_TOKENS, prepare.PROFILE) == (256, 4, 16384, "tiny")
    out = subprocess.run([sys.executable, "-c", "from prepare import MAX_SEQ_LEN, TIME_BUDGET, VOCAB_SIZE; "
                          "print(MAX_SEQ_LEN, TIME_BUDGET, VOCAB_SIZE)"],
                         cwd=ROOT, env=python_env(use_cache), capture_output=True, text=True)
    assert out.stdout.split() == ["256", "4", "4096"]


def test_profiles_hold_the_documented_constants():
    assert prepare.PROFILES["h100"] == dict(max_seq_len=2048, vocab_size=8192, eval_tokens=40 * 524288, time_budget=300)
    tiny = prepare.PROFILES["tiny"]
    assert tiny["max_seq_len"] == 256 and 2048 <= tiny["vocab_size"] <= 4096 and tiny["time_budget"] == 60
    for constants in prepare.PROFILES.values():
        assert constants["eval_tokens"] % constants["max_seq_len"] == 0


def test_rerun_is_a_cheap_no_op(tiny_cache, capsys):
    before = (tiny_cache / "manifest.json").read_text()
    assert run_prepare(tiny_cache, *TINY_ARGS) == 0
    assert "already prepared" in capsys.readouterr().out
    assert (tiny_cache / "manifest.json").read_text() == before


def test_another_profile_never_mixes_silently(tiny_cache, capsys):
    assert run_prepare(tiny_cache, "--source", "python", "--profile", "small", "--max-chars", "4000000") == 2
    err = capsys.readouterr().err
    assert "already holds another cache" in err and "--force" in err and "AUTORESEARCH_CACHE" in err
    assert "profile tiny there, small asked" in err and "MAX_SEQ_LEN 256 there, 1024 asked" in err
    assert "source" not in err.split("(")[1]  # only what differs
    assert json.loads((tiny_cache / "manifest.json").read_text())["profile"] == "tiny"


def test_a_cache_from_another_python_says_what_differs(tiny_cache):
    """After a Python upgrade the same command asks for another corpus: the error names it."""
    manifest = json.loads((tiny_cache / "manifest.json").read_text())
    wanted = dict(manifest, source=dict(manifest["source"], python="3.99.0"))
    assert cache_manifest.cache_differences(manifest, wanted) == f"source python {manifest['source']['python']} there, 3.99.0 asked"
    assert cache_manifest.cache_differences(manifest, manifest) == ""


def test_missing_cache_says_which_command_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "nothing"))
    forget_constants()
    with pytest.raises(prepare.CacheError, match=r"prepare\.py --source python --profile tiny"):
        prepare.MAX_SEQ_LEN
    forget_constants()


def test_missing_cache_is_one_line_for_train_py(tmp_path):
    out = subprocess.run([sys.executable, "train.py"], cwd=ROOT, env=python_env(tmp_path / "nothing"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "prepare.py --source python --profile tiny" in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_broken_cache_is_reported_and_force_rebuilds(tmp_path, capsys):
    cache = tmp_path / "c"
    args = ["--source", "python", "--profile", "tiny", "--max-chars", "1500000", "--eval-tokens", "4096"]
    assert run_prepare(cache, *args) == 0
    with open(cache / "data" / "train.bin", "r+b") as f:  # a torn shard
        f.truncate(100)
    with pytest.raises(prepare.CacheError, match="broken.*train.bin.*--force"):
        prepare.load_manifest(cache)
    assert run_prepare(cache, *args) == 2
    assert "--force" in capsys.readouterr().err
    assert run_prepare(cache, *args, "--force") == 0
    assert prepare.load_manifest(cache)["profile"] == "tiny"


def test_an_eval_tokens_given_must_fit_and_the_error_says_what_does(tmp_path, capsys):
    cache = tmp_path / "c"
    args = ["--profile", "tiny", "--max-chars", "1000000"]
    assert run_prepare(cache, *args, "--eval-tokens", str(256 * 100000)) == 2
    err = capsys.readouterr().err
    assert not (cache / "manifest.json").exists()
    fits = int(re.search(r"prepare again with --eval-tokens (\d+) or less", err).group(1))
    assert run_prepare(cache, *args, "--eval-tokens", str(fits)) == 0
    assert run_prepare(cache, *args, "--eval-tokens", str(fits + 256), "--force") == 2


def test_a_profile_asking_more_evaluation_than_the_corpus_holds_is_lowered_to_fit(tmp_path, capsys):
    """small and h100 on the offline python source: the profile's EVAL_TOKENS exceed its validation split."""
    cache = tmp_path / "c"
    args = ["--profile", "small", "--max-chars", "1500000"]
    assert run_prepare(cache, *args) == 0
    out = capsys.readouterr().out
    manifest = prepare.load_manifest(cache)
    asked, used, T = prepare.PROFILES["small"]["eval_tokens"], manifest["constants"]["EVAL_TOKENS"], 1024
    assert manifest["lowered"] == {"EVAL_TOKENS": asked} and "eval_tokens" not in manifest["overrides"]
    assert 0 < used < asked and used % T == 0 and f"EVAL_TOKENS lowered from the small profile's {asked:,} to {used:,}" in out
    tok = prepare.Tokenizer.from_directory(cache / "tokenizer")
    tokens, offsets = prepare.load_split("val", cache)
    assert packing.validation_capacity(tokens, offsets, tok.get_bos_token_id(), T, 10**6) == used // T  # all of it
    assert prepare.validation_rows(tok, cache).shape == (used // T, T + 1)
    assert run_prepare(cache, *args) == 0 and "already prepared" in capsys.readouterr().out
    assert run_prepare(cache, *args, "--eval-tokens", str(used)) == 0  # the same cache, asked for explicitly


def test_eval_tokens_must_be_a_multiple_of_the_sequence_length(tmp_path, capsys):
    assert run_prepare(tmp_path / "c", "--profile", "tiny", "--eval-tokens", "1000") == 2
    assert "multiple" in capsys.readouterr().err


def test_import_stays_light():
    code = ("import sys, numpy, tiktoken, torch; base = set(sys.modules); import prepare; "
            "print(sorted(m for m in set(sys.modules) - base if m.split('.')[0] in "
            "{'rustbpe', 'pyarrow', 'tqdm', 'urllib', 'http', 'glob'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_prepare_names_each_phase_as_it_begins_and_its_console_lines_stream(tmp_path, monkeypatch):
    """What the prepare notebook's progress bar shows: the phases in order, and the latest console line
    (tqdm's redrawn bars among them) while it works, not everything at the end."""
    import contextlib
    from harness import build
    from autoresearch import cache_view
    monkeypatch.setattr(cache_view, "LINE_EVERY", 0.0)  # every line, not a few a second
    events = []
    console = cache_view.ConsoleLines(lambda line: events.append(("line", line)))
    with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
        build.prepare(profile="tiny", source="python", max_chars=1_000_000, eval_tokens=4096, cache=tmp_path / "c",
                      on_phase=lambda name: events.append(("phase", name)))
    assert [value for kind, value in events if kind == "phase"] == list(build.PHASES)
    lines = [value for kind, value in events if kind == "line"]
    assert any(line.startswith("tokenize train") and "%" in line for line in lines), lines
    # each phase's own output comes after it is named: the documents' count before the tokenizer starts
    order = [value for _, value in events]
    assert order.index(build.PHASES[1]) > next(i for i, v in enumerate(order) if v.startswith("documents:"))
    assert lines[-1].startswith("prepared ") and "prepared " in console.getvalue()
    assert build.prepare(profile="tiny", source="python", max_chars=1_000_000, eval_tokens=4096,
                         cache=tmp_path / "c", on_phase=lambda name: events.append(("again", name)))
    assert not [e for e in events if e[0] == "again"]  # already there: nothing to report
