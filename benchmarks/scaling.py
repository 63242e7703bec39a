"""Experiments per hour with N workers on Ray, N = 1, 2, 4, 8: the real lab path (`autoresearch run
--workers N --ray-address ...`, its sandbox, its evaluator, its ledger), real Ray, and a train.py
stand-in whose run costs a fixed sleep, so that a few cores simulate many GPUs: a Ray head started
with a custom resource (`ray start --head --resources '{"sim_gpu": 8}'`), each worker asking for one
unit of it (AUTORESEARCH_RAY_RESOURCE).

Each N runs 2·N null experiments (one run each, `--policy single`, each discarded) after the baseline
(one run, not counted), so every N fills its workers twice; the rate counts from the first
candidate's start to the last one's end.
Beside it: each N's rate against N times the rate at N=1 (the target is >= 0.9 at 8), the median
seconds of a run (train.py and its scoring) and the lab's own seconds per run outside it.

With --start, the loop's start instead, under the default judging: the baseline at its three seeds,
then N null proposals (each discarded after one run: the stand-in scores the same at every seed),
timed from the baseline's first start to the last run's end, for this checkout and, with --reference
REV, for another commit of the lab in the same run (its code from a worktree of this repository):
how much of N workers' time the start keeps busy.

    uv run benchmarks/scaling.py [--sleep 30] [--workers 1 2 4 8]
    uv run benchmarks/scaling.py --start [--reference REV] [--workers 2 8]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoresearch import harness, ledger, workspace  # noqa: E402

RESOURCE = "sim_gpu"

STAND_IN = '''
import os, time
import numpy as np
import torch
import torch.nn as nn
from prepare import Tokenizer, evaluate_bpb, load_split

VARIANT = 0   # what each null proposal changes: nothing that matters
SLEEP = {sleep}

time.sleep(SLEEP)  # a GPU's training, as far as the lab can tell
tok = Tokenizer.from_directory()
train, _ = load_split("train")
counts = np.bincount(np.asarray(train[:100000]), minlength=tok.get_vocab_size()) + 1.0

class Unigram(nn.Module):
    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.log(torch.tensor(counts / counts.sum(), dtype=torch.float32)))
    def forward(self, x, y=None, reduction="mean"):
        return self.logits.expand(*x.shape, -1)

val_bpb = evaluate_bpb(Unigram(), tok, 64)
print("---")
print(f"val_bpb:          {{val_bpb:.6f}}")
print(f"training_seconds: {{SLEEP:.1f}}")
print("num_steps:        1")
'''


def make_repo(path: Path, sleep: float) -> Path:
    path.mkdir(parents=True)
    for name in ("program.md", ".gitignore"):
        shutil.copy(ROOT / name, path / name)
    harness.copy_harness(ROOT, path)
    (path / "train.py").write_text(STAND_IN.format(sleep=sleep))
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], [*workspace.IDENTITY, "commit", "-qm", "start"]):
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)
    return path


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def loop(n: int, proposals: int, tmp: Path, cache: Path, sleep: float, address: str, judging: list[str],
         lab: Path = ROOT, name: str = "") -> tuple[list[dict], float]:
    """`autoresearch run --workers n` (the lab's code from `lab`) over the baseline and `proposals`
    null changes; the ledger's rows and the loop's wall seconds."""
    repo = make_repo(tmp / f"repo{name}{n}", sleep)
    text = (repo / "train.py").read_text()
    replay = tmp / f"replay{name}{n}.jsonl"
    # null changes that add a line: the same val_bpb, a worse penalized score, so each is discarded
    # after its one run and the best never moves (no replay on a new best)
    replay.write_text("".join(json.dumps({"description": f"null {i}", "train_py": text.replace(
        "VARIANT = 0", f"VARIANT = {i + 1}\n# null change {i + 1}")}) + "\n" for i in range(proposals)))
    env = dict(os.environ, AUTORESEARCH_CACHE=str(cache), AUTORESEARCH_RAY_RESOURCE=RESOURCE, PYTHONPATH=str(lab))
    cli = [sys.executable, "-m", "autoresearch.cli"]
    subprocess.run([*cli, "init", "--tag", "s"], cwd=repo, env=env, check=True, capture_output=True)
    t0 = time.time()
    out = subprocess.run([*cli, "run", "--tag", "s", "--agent", f"replay:{replay}", *judging,
                          "--workers", str(n), "--ray-address", address],
                         cwd=repo, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if out.returncode != 0:
        raise SystemExit(f"N={n} failed:\n{out.stdout}\n{out.stderr}")
    return ledger.read_rows(repo / "runs" / "s" / "results.tsv"), wall


def start(n: int, tmp: Path, cache: Path, sleep: float, lab: Path, name: str) -> dict:
    """The baseline at three seeds and n null proposals on n workers, from the first start to the last end."""
    rows, _ = loop(n, n, tmp, cache, sleep, "auto", ["--baseline-runs", "3"], lab, name)
    runs = [r for r in rows if r["role"] != "verdict" and r["started"]]
    if sum(r["role"] == "candidate" for r in runs) != n:
        raise SystemExit(f"N={n} ({name}): expected {n} null candidates, got {[(r['role'], r['status']) for r in runs]}")
    first, last = min(seconds(r["started"]) for r in runs), max(seconds(r["finished"]) for r in runs)
    verdict = next(seconds(r["finished"]) for r in rows if r["role"] == "baseline" and r["status"] == ledger.KEEP)
    busy = sum(seconds(r["finished"]) - seconds(r["started"]) for r in runs)
    roles = {}
    for r in runs:
        roles[r["role"]] = roles.get(r["role"], 0) + 1
    return dict(span=last - first, busy=busy / (n * (last - first)), runs=", ".join(f"{k} {v}" for k, v in roles.items()),
                early=sum(r["role"] == "candidate" and seconds(r["started"]) < verdict for r in runs))


def one(n: int, tmp: Path, cache: Path, sleep: float, address: str) -> dict:
    rows, wall = loop(n, 2 * n, tmp, cache, sleep, address, ["--policy", "single", "--baseline-runs", "1"])
    rows = [r for r in rows if r["role"] == "candidate"]
    # an overrun is a run the lab's clock saw train past its budget plus start-up (processes contending
    # for a few cores): it ended its experiment like the others, and is counted apart
    if len(rows) != 2 * n or any(r["status"] not in (ledger.KEEP, ledger.DISCARD, ledger.OVERRUN) for r in rows):
        raise SystemExit(f"N={n}: expected {2 * n} judged candidates, got {[(r['status'], r['reason']) for r in rows]}")
    span = max(seconds(r["finished"]) for r in rows) - min(seconds(r["started"]) for r in rows)
    return dict(n=n, experiments=len(rows), span=span, wall=wall, per_hour=len(rows) / span * 3600,
                run=statistics.median(float(r["run_seconds"]) for r in rows),
                lab=statistics.median(float(r["lab_seconds"]) for r in rows),
                workers=len({r["worker"] for r in rows}), overruns=sum(r["status"] == ledger.OVERRUN for r in rows))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sleep", type=float, default=30.0, help="seconds a run of the stand-in trains (default 30)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--start", action="store_true", help="time the loop's start (baseline and N proposals) instead")
    p.add_argument("--reference", metavar="REV", help="with --start: the lab at this commit too, side by side")
    args = p.parse_args()
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        subprocess.run([sys.executable, str(ROOT / "prepare.py"), "--source", "python", "--profile", "tiny",
                        "--max-chars", "4000000", "--eval-tokens", "16384", "--time-budget", str(int(args.sleep)),
                        "--cache", str(cache)], check=True, capture_output=True)
        port = "6389"
        subprocess.run([ray, "start", "--head", "--port", port, "--include-dashboard=false",
                        "--resources", json.dumps({RESOURCE: max(args.workers)})], check=True, capture_output=True)
        print(f"{os.cpu_count()} cores, a run of the stand-in sleeps {args.sleep:g} s; {RESOURCE} resource on a "
              f"local Ray head")
        base = None
        try:
            if args.start:
                compare_starts(args, tmp, cache)
                return
            print("| workers | experiments | seconds (first start to last end) | experiments per hour | of linear | "
                  "median run s | median lab s per run | overruns |")
            print("| --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
            for n in args.workers:  # each row as it is measured
                r = one(n, tmp, cache, args.sleep, "auto")  # the head just started
                base = r["per_hour"] if n == 1 else base
                linear = f"{r['per_hour'] / (base * n):.2f}" if base else "-"
                print(f"| {n} ({r['workers']} used) | {r['experiments']} | {r['span']:.0f} | {r['per_hour']:.0f} | "
                      f"{linear} | {r['run']:.1f} | {r['lab']:.2f} | {r['overruns']} |", flush=True)
        finally:
            subprocess.run([ray, "stop", "--force"], capture_output=True)


def compare_starts(args, tmp: Path, cache: Path):
    labs = [("this checkout", ROOT)]
    if args.reference:
        ref = tmp / "reference"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(ref), args.reference], cwd=ROOT, check=True)
        labs.append((f"at {args.reference}", ref))
    print("| workers | lab | runs | seconds (first start to last end) | workers busy | proposals started before "
          "the baseline's verdict |")
    print("| --- | --- | --- | --- | --- | --- |", flush=True)
    try:
        for n in args.workers:
            for i, (label, lab) in enumerate(labs):
                r = start(n, tmp, cache, args.sleep, lab, f"start{i}-")
                print(f"| {n} | {label} | {r['runs']} | {r['span']:.0f} | {r['busy']:.0%} | {r['early']} of {n} |",
                      flush=True)
    finally:
        if args.reference:
            subprocess.run(["git", "worktree", "remove", "--force", str(ref)], cwd=ROOT, capture_output=True)


if __name__ == "__main__":
    main()
