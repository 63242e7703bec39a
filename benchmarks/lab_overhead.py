"""The lab's own time per run: everything outside train.py's process and the agent (apply, guard,
commit, judge, ledger, checkout, reset, state writes). A real temporary git repository, the active
cache, a stand-in train.py that evaluates a unigram model, and replayed proposals.

    uv run benchmarks/lab_overhead.py [--experiments 12]
"""
import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from autoresearch import runner  # noqa: E402
from autoresearch.agents.replay import ReplayAgent  # noqa: E402
from autoresearch.recorder import Display  # noqa: E402
from autoresearch.scheduler import Scheduler, init_run  # noqa: E402
from lab_helpers import make_repo, variant, write_replay  # noqa: E402


def timed(fn, seconds: list):
    """fn, appending the seconds of each call to `seconds`."""
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - t0)
    return wrapper


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--experiments", type=int, default=12)
    n = parser.parse_args().experiments
    timings = {"train": [], "agent": [], "step": [], "probe": []}
    runner.run_training = timed(runner.run_training, timings["train"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        repo = make_repo(tmp / "repo")
        weights = [0.2 + 0.8 * ((i * 7) % n) / n for i in range(n)]
        replay = write_replay(tmp / "r.jsonl", [{"description": f"weight {w:.3f}", "train_py": variant(WEIGHT=w)}
                                                for w in weights])
        lab = Scheduler(init_run(repo, "bench"), display=Display(stream=io.StringIO()))
        agent = ReplayAgent(replay)
        agent.propose = timed(agent.propose, timings["agent"])
        lab.step = timed(lab.step, timings["step"])
        lab.check_environment = timed(lab.check_environment, timings["probe"])
        t0 = time.perf_counter()
        lab.run(agent, max_experiments=n + 1)
        wall = time.perf_counter() - t0
    runs = len(timings["train"])
    per_step = [s - t for s, t in zip(timings["step"], timings["train"])]  # judge, record, checkout, reset
    outside = wall - sum(timings["train"]) - sum(timings["agent"]) - sum(timings["probe"])
    print(f"{n + 1} experiments, {runs} runs on a temporary repository; lab time outside train.py and the agent")
    print("| figure | value |\n| --- | --- |")
    print(f"| lab time per run, all of it (propose, guard, commit, start, judge, record) | {outside / runs:.3f} s |")
    print(f"| lab time around each run (judge, record, checkout), median | {statistics.median(per_step):.3f} s |")
    print(f"| lab time around each run, max | {max(per_step):.3f} s |")
    print(f"| median train.py process | {statistics.median(timings['train']):.2f} s |")
    print(f"| once per loop: naming the device (a Python with torch) | {sum(timings['probe']):.2f} s |")
    print(f"| lab time per run / train.py process | {outside / runs / statistics.median(timings['train']):.3f} |")


if __name__ == "__main__":
    main()
