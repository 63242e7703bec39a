"""Early abort of a change that makes training much slower: the judging mix's deep bad (8 layers
where the tiny profile has 2) proposed on train.py as it is, at a budget long enough for the deep
model to take a few steps before the first checkpoint (at judging.py's 10 s it takes one step in
the whole budget, and no early abort can see it). The default policy and --no-prune, each on a
fresh branch of the same repository, one after the other; per policy the deep proposal's runs (the
control of the best its stop asks for counted with them), their seconds and its verdict.

    uv run benchmarks/slow_stop.py [--budget 60]

About 10 minutes on a 2-core machine with the defaults; not part of the tests.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from autoresearch import measurements  # noqa: E402
from autoresearch.agents import Proposal  # noqa: E402
from autoresearch.agents.replay import OneProposal  # noqa: E402
from autoresearch.judge import Policy  # noqa: E402
from autoresearch.recorder import Display  # noqa: E402
from autoresearch.scheduler import Scheduler, init_run  # noqa: E402
from judging import BADS, one_experiment, timed_runs, tiny_cache  # noqa: E402
from lab_helpers import make_repo  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=int, default=60, help="seconds of training per run (default 60)")
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tiny_cache(tmp, args.budget)
        os.environ.update(AUTORESEARCH_CACHE=str(cache), AUTORESEARCH_DEVICE="cpu")
        base = (ROOT / "train.py").read_text()
        old, new = BADS[-1]
        assert old in base, f"train.py changed: {old!r} is not in it; update judging.BADS"
        repo = make_repo(tmp / "repo", base)
        print(f"budget {args.budget} s; the deep proposal: {old.strip()} -> {new.strip()}")
        print("| policy | the deep proposal's runs | their seconds | wall s | verdict | reason |")
        print("| --- | --- | --- | --- | --- | --- |")
        details = []
        for name, policy in (("default", Policy()), ("no-prune", Policy(prune=False))):
            lab = Scheduler(init_run(repo, name), policy, display=Display(stream=io.StringIO()))
            seconds = {}
            timed_runs(lab, seconds)
            agent = OneProposal(Proposal(description="8 layers", train_py=base.replace(old, new, 1)), "deep")
            with lab.session():
                one_experiment(lab, agent)  # the baseline, at its seeds
                t0 = time.time()
                one_experiment(lab, agent)
                wall = time.time() - t0
            rows = measurements.rows_of(lab.rows(), 2)
            runs = [f"{r['role']} {r['status']} {seconds.get((2, int(r['seed']), r['role']), 0):.0f} s"
                    for r in rows if r["role"] != "verdict"]
            spent = sum(v for k, v in seconds.items() if k[0] == 2)
            print(f"| {name} | {'; '.join(runs)} | {spent:.0f} | {wall:.0f} | {rows[-1]['status']} | "
                  f"{rows[-1]['reason']} |", flush=True)
            details.append((name, [(r["role"], r["status"], r["era"], r.get("tokens_per_s", ""), r["reason"])
                                   for r in lab.rows()]))
        for name, rows in details:  # every run of each policy's branch, the baseline's included
            print(f"\n{name}:")
            for row in rows:
                print("  " + " | ".join(row))
    print(f"\n{time.time() - started:.0f} s in all; load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
