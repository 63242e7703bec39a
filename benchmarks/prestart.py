"""Seconds per experiment from the hand-over of a committed train.py to its result, with the next
experiment's Python started while the agent works (the lab's default) and without it
(AUTORESEARCH_PRESTART=0), side by side. The real lab, a real temporary git repository, the real
train.py on the active cache, and an agent that takes --think seconds per proposal, as a call to a
model's API does.

    AUTORESEARCH_CACHE=... uv run benchmarks/prestart.py [--experiments 4] [--think 5] [--compile]

--compile sets AUTORESEARCH_COMPILE=1 (a CPU then compiles too), with one compile cache that the
first baseline warms. Use a cache prepared with a short --time-budget.
"""
import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from autoresearch import runner  # noqa: E402
from autoresearch.judge import Policy  # noqa: E402
from autoresearch.recorder import Display  # noqa: E402
from autoresearch.scheduler import Scheduler, init_run  # noqa: E402
from autoresearch.agents.replay import ReplayAgent  # noqa: E402
from lab_helpers import make_repo, write_replay  # noqa: E402


class Thinking(ReplayAgent):
    """Replayed proposals, each after `think` seconds."""

    def __init__(self, path, think):
        super().__init__(path)
        self.think = think

    def propose(self, context):
        time.sleep(self.think)
        return super().propose(context)


def run_lab(repo, tag, replay, think, n, prestart):
    os.environ["AUTORESEARCH_PRESTART"] = "1" if prestart else "0"
    seconds, own = [], []
    real_run = runner.run_training

    def timed_run(*args, **kwargs):
        t0 = time.perf_counter()
        result = real_run(*args, **kwargs)
        seconds.append(time.perf_counter() - t0)
        own.append(float(result.summary.get("total_seconds", "nan")))
        return result

    runner.run_training = timed_run
    try:
        workdir = init_run(repo, tag)
        # one run per experiment: the Python is started ahead while the agent works, before each proposal
        lab = Scheduler(workdir, Policy(name="single"), display=Display(stream=io.StringIO()))
        lab.run(Thinking(replay, think), max_experiments=n + 1)
    finally:
        runner.run_training = real_run
    return seconds[1:], own[1:]  # the proposals: the baseline overlaps the device probe instead


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--experiments", type=int, default=4)
    parser.add_argument("--think", type=float, default=5.0, help="seconds the agent takes per proposal")
    parser.add_argument("--compile", action="store_true", help="AUTORESEARCH_COMPILE=1")
    args = parser.parse_args()
    train = (ROOT / "train.py").read_text()
    marker = "UNEMBEDDING_LR = 0.004"
    assert marker in train, "train.py changed: update the proposals"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.compile:
            os.environ["AUTORESEARCH_COMPILE"] = "1"
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / "inductor")
        repo = make_repo(tmp / "repo", train)
        replay = write_replay(tmp / "r.jsonl", [
            {"description": f"lm_head lr {lr}", "train_py": train.replace(marker, f"UNEMBEDDING_LR = {lr}")}
            for lr in [0.003 + 0.0005 * i for i in range(args.experiments)]])
        results = {}
        for tag, prestart in (("cold", False), ("ahead", True)):
            results[tag] = run_lab(repo, tag, replay, args.think, args.experiments, prestart)
    cold, ahead = (statistics.median(results[t][0]) for t in ("cold", "ahead"))
    inside = {t: statistics.median(results[t][1]) for t in results}
    print(f"{args.experiments} experiments per row after the baseline, agent thinking {args.think:.0f} s each"
          f"{', compiled' if args.compile else ''}; seconds from hand-over to result, median")
    print("| python | per experiment | train.py's own total_seconds | start-up outside it |")
    print("| --- | --- | --- | --- |")
    print(f"| fresh (AUTORESEARCH_PRESTART=0) | {cold:.2f} | {inside['cold']:.1f} | {cold - inside['cold']:.2f} |")
    print(f"| started ahead (default) | {ahead:.2f} | {inside['ahead']:.1f} | {ahead - inside['ahead']:.2f} |")
    print(f"ratio started ahead / fresh: {ahead / cold:.3f} ({cold - ahead:.2f} s less per experiment)")


if __name__ == "__main__":
    main()
