"""Helpers for the lab's tests: a real temporary git repository holding the project's files, a fast
stand-in train.py, and the invariants every run must keep."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT

from autoresearch import harness, ledger, state, workspace

# A train.py that honours the harness contract in ~3 s: a unigram model mixed with the uniform one
# by WEIGHT (1.0 is best), NOISE that moves it with the seed, and knobs for the failure paths.
FAKE_TRAIN = '''
import os, sys, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, evaluate_bpb, load_split

WEIGHT = 0.5
NOISE = 0.0
JITTER = 0.0
LOSSES = ()
SPEED_FILE = ""
SLEEP = 0.0
CRASH = False
PRINT_FAKE = False
CALL_EVAL = True
TOUCH_PREPARE = False
KERNEL = ""

# NOISE: the weight moves with the lab's seed, as a real train.py's val_bpb does; JITTER: with each run
WEIGHT += NOISE * float(np.random.default_rng(int(os.environ.get("AUTORESEARCH_SEED", "0"))).standard_normal())
WEIGHT += JITTER * float(np.random.default_rng().standard_normal())
print("secret visible:", any(k in os.environ for k in ("ANTHROPIC_API_KEY", "MY_SECRET_TOKEN")), flush=True)
print("compile cache:", os.environ.get("TORCHINDUCTOR_CACHE_DIR"), os.environ.get("TRITON_CACHE_DIR"), flush=True)
# KERNEL: a file this run leaves in its compile cache, as torch.compile leaves the code it generates
if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
    print("compile cache holds:", sorted(os.listdir(os.environ["TORCHINDUCTOR_CACHE_DIR"])), flush=True)
    if KERNEL:
        open(os.path.join(os.environ["TORCHINDUCTOR_CACHE_DIR"], KERNEL), "w").write("print('ran')")
# the machine's speed, as a test sets it; else what the summary's tokens and seconds below make
SPEED = float(open(SPEED_FILE).read()) if SPEED_FILE else 100_000.0
# LOSSES: one progress line per loss, spread over SLEEP seconds (else one line, then SLEEP)
# (as train.py's lines: the percent is where the step began, the seconds left where it ended)
STEPS = LOSSES or (8.0,)
for i, loss in enumerate(STEPS):
    print(f"step {i:05d} | {100 * i / len(STEPS):5.1f}% | loss {loss:.6f} | lr 1.00 | dt 1ms | {SPEED:,.0f} tok/s | "
          f"mfu n/a | epoch 0 | {TIME_BUDGET * (1 - (i + 1) / len(STEPS)):.0f}s left", flush=True)
    time.sleep(SLEEP / len(STEPS))
if CRASH:
    raise RuntimeError("boom: the model exploded")
if TOUCH_PREPARE:
    with open("prepare.py", "a") as f:
        f.write("# tampered\\n")
tok = Tokenizer.from_directory()
train, _ = load_split("train")
counts = np.bincount(np.asarray(train[:200000]), minlength=tok.get_vocab_size()) + 1.0

class Unigram(nn.Module):
    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(WEIGHT * torch.log(torch.tensor(counts / counts.sum(), dtype=torch.float32)))
    def forward(self, x, y=None, reduction="mean"):
        logits = self.logits.expand(*x.shape, -1)
        if y is None:
            return logits
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction=reduction)

val_bpb = evaluate_bpb(Unigram(), tok, 64) if CALL_EVAL else 9.0
print("---")
print(f"val_bpb:          {0.000001 if PRINT_FAKE else val_bpb:.6f}")
print("training_seconds: 1.0")
print("total_seconds:    2.0")
print("peak_vram_mb:     2048.0")
print("mfu_percent:      n/a")
print("total_tokens_M:   0.1")
print("num_steps:        1")
print("num_params_M:     0.0")
print("depth:            0")
if SPEED_FILE:
    print(f"tokens_per_s:     {SPEED:.0f}")
'''


def variant(**knobs) -> str:
    """FAKE_TRAIN with some knobs set, e.g. variant(WEIGHT=1.0, CRASH=True)."""
    text = FAKE_TRAIN
    for name, value in knobs.items():
        lines = [f"{name} = {value!r}" if line.startswith(f"{name} = ") else line for line in text.splitlines()]
        text = "\n".join(lines) + "\n"
    return text


def make_repo(path: Path, train_text: str = FAKE_TRAIN) -> Path:
    """A git repository with the project's harness, manual and a train.py, one commit."""
    path.mkdir(parents=True)
    for name in ("program.md", ".gitignore"):
        shutil.copy(ROOT / name, path / name)
    harness.copy_harness(ROOT, path)
    (path / "train.py").write_text(train_text)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    subprocess.run(["git", *workspace.IDENTITY, "commit", "-qm", "start"], cwd=path, check=True)
    return path


def git(cwd, *args) -> str:
    """git's output, stripped; a failure fails the test."""
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def write_replay(path: Path, proposals) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in proposals))
    return path


def cli_env(cache, **extra):
    env = dict(os.environ, AUTORESEARCH_CACHE=str(cache), AUTORESEARCH_DEVICE="cpu", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def cli(repo, cache, *args, timeout=300, **extra):
    return subprocess.run([sys.executable, "-m", "autoresearch.cli", *args], cwd=repo, env=cli_env(cache, **extra),
                          capture_output=True, text=True, timeout=timeout)


def start_cli(repo, cache, *args, **extra):
    return subprocess.Popen([sys.executable, "-m", "autoresearch.cli", *args], cwd=repo, env=cli_env(cache, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def check_invariants(workdir: Path):
    """A clean tree, the tip at the best kept commit, no run recorded twice, one verdict per experiment
    at most. Returns the rows."""
    from autoresearch import measurements
    st = state.load(workdir)
    rows = ledger.read_rows(workdir / "results.tsv")
    assert workspace.changed_paths(workdir) == [], "the worktree is dirty"
    assert workspace.branch_of(workdir) == st["branch"], "HEAD is not on the run's branch"
    tip = workspace.head(workdir)
    assert tip == st["best_commit"], "the branch tip is not the best commit"
    keeps = [r for r in rows if r["status"] == "keep"]
    if keeps:
        assert tip.startswith(keeps[-1]["commit"])
    runs = [(r["experiment"], r["commit"], r["seed"]) for r in rows if r["commit"] != "none" and r["role"] != "verdict"]
    assert len(runs) == len(set(runs)), f"a run was recorded twice: {runs}"
    ended = [r["experiment"] for r in measurements.verdicts(rows)]
    assert len(ended) == len(set(ended)), f"an experiment has two verdicts: {ended}"
    assert all(e["phase"] in ("measuring", "interrupted") for e in st["experiments"])
    return rows


def verdicts(rows):
    """The rows that end experiments."""
    from autoresearch import measurements
    return measurements.verdicts(rows)


def wait_for(predicate, timeout=120.0, what="the condition"):
    """predicate()'s first true value, looked for every 0.1 s; a timeout fails the test naming `what`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
