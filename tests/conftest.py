"""Shared fixtures: a small prepared cache (the `python` source, tiny profile) made once per session.

Run the suite with: uv run pytest
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import prepare  # noqa: E402
from harness import build, manifest  # noqa: E402

# Small enough to prepare in a few seconds, big enough for a meaningful run.
TINY_ARGS = ["--source", "python", "--profile", "tiny", "--max-chars", "4000000",
             "--time-budget", "4", "--eval-tokens", "16384"]


def run_prepare(cache, *args):
    """prepare.py's CLI (harness/build.py's main), in-process; returns its exit code."""
    return build.main([*args, "--cache", str(cache)])


def forget_constants():
    """Drop the constants prepare cached from an earlier manifest."""
    for name in (*manifest.CONSTANTS, "PROFILE"):
        prepare.__dict__.pop(name, None)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache") / "tiny"
    assert run_prepare(cache, *TINY_ARGS) == 0
    return cache


@pytest.fixture
def use_cache(tiny_cache, monkeypatch):
    """Point the harness at the session's tiny cache."""
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tiny_cache))
    monkeypatch.setenv("AUTORESEARCH_DEVICE", "cpu")
    forget_constants()
    yield tiny_cache
    forget_constants()


def python_env(cache, **extra):
    """Environment for a subprocess that uses the cache on the CPU."""
    env = dict(os.environ, AUTORESEARCH_CACHE=str(cache), AUTORESEARCH_DEVICE="cpu", PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_script(script, cwd, env, timeout=300):
    return subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)

