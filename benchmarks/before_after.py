"""Seconds per experiment of the lab in this tree beside a reference commit, in one run: the real lab
(`Scheduler.run`, one run per experiment), a real temporary git repository, the real train.py on the
active cache and an agent that takes --think seconds per proposal, run in each tree in turn for
--rounds rounds. Each experiment's seconds run from the end of the agent's proposal to its recorded
verdict (train.py's budget, its start-up, its evaluation, the lab's own work); reported as medians
and the ratio this tree / reference.

    AUTORESEARCH_CACHE=... uv run benchmarks/before_after.py --reference COMMIT [--rounds 3]
                                                             [--experiments 3] [--think 5]

The reference is checked out with `git worktree add` in a temporary folder. Use a cache prepared
with a short --time-budget; keep the machine otherwise quiet.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# run in a tree's folder: its lab on its files, printing the seconds of each experiment after the baseline
DRIVER = r'''
import io, json, sys, tempfile, time
from pathlib import Path
tree, n, think = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
sys.path[:0] = [str(tree), str(tree / "tests")]
from autoresearch.agents.replay import ReplayAgent
from autoresearch.judge import Policy
from autoresearch.recorder import Display
from autoresearch.scheduler import Scheduler, init_run
from lab_helpers import make_repo, write_replay

class Thinking(ReplayAgent):
    def propose(self, context):
        time.sleep(think)
        proposal = super().propose(context)
        marks.append(("proposed", time.perf_counter()))
        return proposal

marks = []
train = (tree / "train.py").read_text()
marker = "UNEMBEDDING_LR = 0.004"
assert marker in train
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    repo = make_repo(tmp / "repo", train)
    replay = write_replay(tmp / "r.jsonl", [
        {"description": f"lm_head lr {lr}", "train_py": train.replace(marker, f"UNEMBEDDING_LR = {lr}")}
        for lr in [0.003 + 0.0005 * i for i in range(n)]])
    lab = Scheduler(init_run(repo, "bench"), Policy(name="single"), display=Display(stream=io.StringIO()))
    finish = lab.finish
    def finished(*args, **kwargs):
        marks.append(("verdict", time.perf_counter()))
        return finish(*args, **kwargs)
    lab.finish = finished
    lab.run(Thinking(replay), max_experiments=n + 1)
seconds = [b[1] - a[1] for a, b in zip(marks, marks[1:]) if a[0] == "proposed" and b[0] == "verdict"]
print("SECONDS " + json.dumps(seconds))
'''


def measure(tree: Path, experiments: int, think: float) -> list[float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", DRIVER, str(tree), str(experiments), str(think)], cwd=tree,
                         env=env, capture_output=True, text=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("SECONDS ")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"the lab in {tree} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return json.loads(line[len("SECONDS "):])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reference", required=True, help="the commit to compare with (e.g. main~3)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--experiments", type=int, default=3, help="experiments per lab after the baseline")
    parser.add_argument("--think", type=float, default=5.0, help="seconds the agent takes per proposal")
    args = parser.parse_args()
    if os.environ.get("AUTORESEARCH_CACHE"):
        os.environ["AUTORESEARCH_CACHE"] = str(Path(os.environ["AUTORESEARCH_CACHE"]).expanduser().resolve())
    commit = subprocess.run(["git", "rev-parse", "--short", args.reference], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference"
        subprocess.run(["git", "worktree", "add", "--detach", str(reference), commit], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            seconds = {"reference": [], "this tree": []}
            for _ in range(args.rounds):
                seconds["reference"] += measure(reference, args.experiments, args.think)
                seconds["this tree"] += measure(ROOT, args.experiments, args.think)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(reference)], cwd=ROOT, capture_output=True)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    print(f"{args.rounds} rounds of {args.experiments} experiments after the baseline, agent thinking "
          f"{args.think:.0f} s; seconds from proposal to verdict")
    print("| tree | median | min | max |\n| --- | --- | --- | --- |")
    for name, values in seconds.items():
        label = f"reference {commit}" if name == "reference" else name
        print(f"| {label} | {med[name]:.2f} | {min(values):.2f} | {max(values):.2f} |")
    print(f"ratio this tree / reference: {med['this tree'] / med['reference']:.3f} "
          f"({med['this tree'] - med['reference']:+.2f} s per experiment)")


if __name__ == "__main__":
    main()
