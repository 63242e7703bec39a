"""The lab's own time per experiment: everything outside train.py's process and the agent
(apply, guard, commit, judge, ledger, reset, state writes). A real temporary git repository, the
active cache, a stand-in train.py that evaluates a unigram model, and replayed proposals.

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
from autoresearch import loop as lab_loop  # noqa: E402
from autoresearch.agents.replay import ReplayAgent  # noqa: E402
from lab_helpers import make_repo, variant, write_replay  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--experiments", type=int, default=12)
    n = parser.parse_args().experiments
    timings = {"train": [], "agent": [], "experiment": []}
    real_run = runner.run_training

    def timed_run(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real_run(*args, **kwargs)
        finally:
            timings["train"].append(time.perf_counter() - t0)

    lab_loop.runner.run_training = timed_run
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        repo = make_repo(tmp / "repo")
        weights = [0.2 + 0.8 * ((i * 7) % n) / n for i in range(n)]
        replay = write_replay(tmp / "r.jsonl", [{"description": f"weight {w:.3f}", "train_py": variant(WEIGHT=w)}
                                                for w in weights])
        workdir = lab_loop.init_run(repo, "bench")
        lab = lab_loop.Lab(workdir, display=lab_loop.Display(stream=io.StringIO()))
        agent = ReplayAgent(replay)
        propose = agent.propose

        def timed_propose(context):
            t0 = time.perf_counter()
            try:
                return propose(context)
            finally:
                timings["agent"].append(time.perf_counter() - t0)

        agent.propose = timed_propose
        for method in ("propose", "run_current"):
            inner = getattr(lab, method)

            def timed(*args, _inner=inner, **kwargs):
                t0 = time.perf_counter()
                try:
                    return _inner(*args, **kwargs)
                finally:
                    timings["experiment"].append(time.perf_counter() - t0)

            setattr(lab, method, timed)
        lab.run(agent, max_experiments=n + 1)
    # baseline: run_current only; each proposal: propose + run_current
    parts = timings["experiment"]
    per_experiment = [parts[0] - timings["train"][0]]
    for i in range(n):
        total = parts[1 + 2 * i] + parts[2 + 2 * i]
        per_experiment.append(total - timings["train"][i + 1] - timings["agent"][i])
    print(f"{n + 1} experiments on a temporary repository; lab time outside train.py and the agent, seconds")
    print("| figure | value |\n| --- | --- |")
    print(f"| median lab overhead | {statistics.median(per_experiment):.3f} s |")
    print(f"| max lab overhead | {max(per_experiment):.3f} s |")
    print(f"| median train.py process | {statistics.median(timings['train']):.2f} s |")
    print(f"| overhead / train.py process | {statistics.median(per_experiment) / statistics.median(timings['train']):.3f} |")


if __name__ == "__main__":
    main()
