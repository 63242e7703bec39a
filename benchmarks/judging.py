"""Verdicts, measured: the original rule (one run, kept if it beats the best's run) beside the lab's
noise-aware judge, on one mix of proposals replayed through the real lab path side by side: the two
policies take turns, experiment by experiment, so the machine's load falls on both alike.

The mix is made from train.py itself, on the tiny profile with a short budget:
- the base is train.py with the output head's learning rate sabotaged (a tenth of it); the *good*
  proposal puts it back, and is first shown, at --check-seeds seeds, to beat the base by at least
  2 sigma (other sabotages tried interact: once one is undone, undoing the next helps no more);
- a *null* proposal rewords a comment: the model is the same and the line count too;
- a *bad* proposal breaks something that matters (the logit cap squashed, a far too high rate, ...).
Each episode is a fresh pair of branches from the base, with the good proposal at another place
among four nulls and four bads. Per policy it prints the nulls, goods and
bads kept, the runs per proposal, the wall time, what early abort saved of the time spent on bad
proposals (each pruned run, with the control run a stop for slowness asks for, against that
proposal's first runs that were not pruned: a deep model's run costs far more than the median run)
and the goods it pruned, and each final best re-measured at fresh seeds.

    uv run benchmarks/judging.py [--budget 10] [--episodes 3] [--check-seeds 5] [--final-seeds 2] [--busy 1]

About 30 minutes on a 2-core machine with the defaults; not part of the tests. --busy N switches N
busy processes on and off every few experiments, as a shared machine's load comes and goes.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from autoresearch import harness, ledger, measurements  # noqa: E402
from autoresearch.agents import Proposal  # noqa: E402
from autoresearch.judge import Policy  # noqa: E402
from autoresearch.recorder import Display  # noqa: E402
from autoresearch.scheduler import Scheduler, init_run  # noqa: E402
from lab_helpers import make_repo  # noqa: E402

# (what train.py has, what the base has instead): each good proposal puts one back
SABOTAGES = [("UNEMBEDDING_LR = 0.004 ", "UNEMBEDDING_LR = 0.0004 ")]
NULLS = [
    ("# Muon, for the transformer's 2-d matrices", "# Muon: the transformer's 2-d matrices"),
    ("# AdamW, token and value embeddings", "# AdamW: token and value embeddings"),
    ("# AdamW, lm_head", "# AdamW: the output head"),
    ("# AdamW, the per-layer residual and x0 mixing scalars", "# AdamW: the residual and x0 mixing scalars"),
    ("# Muon's weight decay, decayed to zero over the run", "# Muon's weight decay, down to zero by the end"),
    ("# fraction of the budget spent ramping the learning rate up", "# share of the budget with the rate ramping up"),
    ("# fraction of the budget spent ramping it down at the end", "# share of the budget with the rate ramping down"),
    ("# learning rate at the end, as a fraction of the peak", "# the final learning rate, as a share of the peak"),
    ("# logits are squashed into (-SOFTCAP, SOFTCAP)", "# logits squashed into (-SOFTCAP, SOFTCAP)"),
    ("# Run control", "# Control of the run"),
    ("# attention head size", "# size of an attention head"),
    ("# per layer: S = half-context window, L = full", "# each layer: S = half-context window, L = full"),
]
BADS = [
    ("SOFTCAP = 15.0 ", "SOFTCAP = 1.5 "),
    ("EMBEDDING_LR = 0.6 ", "EMBEDDING_LR = 6.0 "),
    ("SCALAR_LR = 0.5 ", "SCALAR_LR = 50.0 "),
    ('else 6 if PROFILE == "small" else 2 ', 'else 6 if PROFILE == "small" else 8 '),
]


def sabotaged(text: str) -> str:
    for good, bad in SABOTAGES:
        assert good in text, f"train.py changed: {good!r} is not in it; update SABOTAGES"
        text = text.replace(good, bad, 1)
    return text


def mix(episode: int, goods) -> list[tuple[str, tuple[str, str]]]:
    """An episode's proposals, (kind, (old, new)): four nulls and four bads in turn, the goods among them."""
    nulls = (NULLS * 2)[4 * episode % len(NULLS):][:4]
    moves = [m for pair in zip([("null", n) for n in nulls], [("bad", b) for b in BADS]) for m in pair]
    for i, (good, bad) in enumerate(goods):
        moves.insert((1 + 3 * episode + 4 * i) % (len(moves) + 1), ("good", (bad, good)))
    return moves


class MixAgent:
    """The mix, one move at a time, applied to the current best train.py; remembers each kind."""

    def __init__(self, moves, name):
        self.moves, self.name, self.kinds = list(moves), name, []

    def propose(self, context):
        while self.moves:
            kind, (old, new) = self.moves.pop(0)
            if old in context.train_py:
                self.kinds.append(kind)
                return Proposal(description=f"{kind}: {old.strip()} -> {new.strip()}",
                                train_py=context.train_py.replace(old, new, 1))
        return None


def measure(text: str, cache: Path, seeds, tmp: Path) -> list[float]:
    """train.py as given, run alone at each seed: its val_bpb."""
    folder = Path(tempfile.mkdtemp(dir=tmp))
    harness.copy_harness(ROOT, folder)
    (folder / "train.py").write_text(text)
    values = []
    for seed in seeds:
        env = dict(os.environ, AUTORESEARCH_CACHE=str(cache), AUTORESEARCH_DEVICE="cpu", AUTORESEARCH_SEED=str(seed),
                   **harness.bytecode_env("torch"))
        out = subprocess.run([sys.executable, "train.py"], cwd=folder, env=env, capture_output=True, text=True)
        value = next((ln.split()[1] for ln in out.stdout.splitlines() if ln.startswith("val_bpb:")), None)
        assert value is not None, out.stdout[-2000:] + out.stderr[-2000:]
        values.append(float(value))
    return values


def check_goods(base: str, cache: Path, seeds, tmp: Path):
    """Each good proposal against the base at the same seeds. Returns one run's sigma on the base and
    the goods that beat it by at least 2 sigma (the others are left out of the mix)."""
    base_values = measure(base, cache, seeds, tmp)
    sigma = statistics.stdev(base_values)
    print(f"the goods, shown beforehand at {len(seeds)} seeds: base {statistics.mean(base_values):.4f}, "
          f"one run's sigma {sigma:.4f}")
    print("| good | mean | better by | in sigmas |\n| --- | --- | --- | --- |")
    known = []
    for good, bad in SABOTAGES:
        values = measure(base.replace(bad, good, 1), cache, seeds, tmp)
        gain = statistics.mean(base_values) - statistics.mean(values)
        print(f"| {bad.strip()} -> {good.strip()} | {statistics.mean(values):.4f} | {gain:.4f} | {gain / sigma:.1f}"
              f"{'' if gain >= 2 * sigma else ' (under 2 sigma: left out)'} |")
        if gain >= 2 * sigma:
            known.append((good, bad))
    return sigma, known


class Load:
    """N busy processes, switched on and off: a shared machine's load coming and going."""

    def __init__(self, n: int):
        self.n, self.procs = n, []

    def toggle(self):
        if self.procs:
            self.stop()
        elif self.n:
            self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]

    def stop(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.procs = []


def timed_runs(lab: Scheduler, seconds: dict):
    """Record each run's wall seconds by (experiment, seed, role), on the executor the lab makes under
    its lock."""
    make = lab.make_executor

    def made():
        executor = make()
        run = executor.run

        def timed(job, **kwargs):
            t0 = time.time()
            try:
                return run(job, **kwargs)
            finally:
                seconds[(job.experiment, job.seed, job.role)] = time.time() - t0
        executor.run = timed
        return executor
    lab.make_executor = made


def one_experiment(lab: Scheduler, agent) -> bool:
    """The lab's next experiment, to its verdict; False when the agent has nothing more."""
    if lab.next_experiment(agent) == "done":
        return False
    while lab.in_flight:
        lab.step(lab.in_flight[0])
    return True


def episode(repo: Path, number: int, goods, tally: dict, load: Load):
    """Both policies on fresh branches, taking turns, then their results added to the tally."""
    labs = []
    for name, policy in (("single", Policy(name="single")), ("noise", Policy())):
        lab = Scheduler(init_run(repo, f"{name}-{number}"), policy, display=Display(stream=io.StringIO()))
        seconds = {}
        timed_runs(lab, seconds)
        labs.append((name, lab, MixAgent(mix(number, goods), name), seconds, [0.0]))
    with labs[0][1].session(), labs[1][1].session():
        going, turn = [True, True], 0
        while any(going):  # the baselines first, then one proposal each in turn
            for i, (name, lab, agent, seconds, wall) in enumerate(labs):
                if going[i]:
                    t0 = time.time()
                    going[i] = one_experiment(lab, agent)
                    wall[0] += time.time() - t0
            turn += 1
            if turn % 3 == 0:
                load.toggle()
    load.stop()
    for name, lab, agent, seconds, wall in labs:
        add(tally.setdefault(name, dict(kinds={"null": [], "good": [], "bad": []}, wall=0.0, best=[])),
            lab, agent, seconds, wall[0])


def add(t: dict, lab: Scheduler, agent: MixAgent, seconds: dict, wall: float):
    """Each proposal's verdict and the seconds its runs took. Control runs of the best are the lab's,
    not the proposal's, and are left out, except where a run of the proposal stopped for its slowness
    asked for one: that one is the proposal's (`cost` counts it with the candidate's runs)."""
    rows = lab.rows()
    ended = [r for r in measurements.verdicts(rows) if r["agent"] == agent.name]
    t["wall"] += wall
    for kind, row in zip(agent.kinds, ended):
        n = int(row["experiment"])
        stopped = any(r["status"] == ledger.STOPPED for r in measurements.rows_of(rows, n))
        spent = {k: v for k, v in seconds.items() if k[0] == n and (k[2] != "control" or stopped)}
        t["kinds"][kind].append(dict(status=row["status"], runs=len(spent), seconds=sum(spent.values()),
                                     candidate=sum(v for k, v in spent.items() if k[2] == "candidate"),
                                     cost=sum(v for k, v in spent.items() if k[2] in ("candidate", "control")),
                                     what=row["description"].split(": ", 1)[-1].split(" -> ")[-1]))
    t["best"].append((lab.workdir, lab.state["best_commit"]))


def unpruned_seconds(tally: dict) -> dict[str, float]:
    """What a proposal's first run takes when nothing stops it: the median over its runs that were not
    pruned, in either policy (the original rule never prunes, so every bad has some)."""
    seen = {}
    for t in tally.values():
        for items in t["kinds"].values():
            for i in items:
                if i["status"] != "pruned":
                    seen.setdefault(i["what"], []).append(i["candidate"])
    return {what: statistics.median(v) for what, v in seen.items()}


def report(tally: dict, sigma: float, cache: Path, tmp: Path, final_seeds: int, base: str):
    fresh = range(5000, 5000 + final_seeds)
    base_value = statistics.mean(measure(base, cache, fresh, tmp))
    print(f"\none run's sigma on the base: {sigma:.4f}; the base at the fresh seeds: {base_value:.4f}")
    print("| policy | nulls kept | goods kept | bads kept | runs per proposal | wall s | early abort saved on bads "
          "| goods pruned | final bests at fresh seeds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    full = unpruned_seconds(tally)
    for name, t in tally.items():
        k = t["kinds"]

        def kept(kind):
            return f"{sum(i['status'] == 'keep' for i in k[kind])}/{len(k[kind])}"
        proposals = sum(len(v) for v in k.values())
        runs = sum(i["runs"] for v in k.values() for i in v)
        pruned = [i for i in k["bad"] if i["status"] == "pruned"]
        spent = sum(i["seconds"] for i in k["bad"])
        saved = sum(max(0.0, full.get(i["what"], 0.0) - i["cost"]) for i in pruned)
        share = saved / (spent + saved) if spent + saved else 0.0
        finals = []
        for workdir, commit in t["best"]:
            text = subprocess.run(["git", "show", f"{commit}:train.py"], cwd=workdir, capture_output=True,
                                  text=True).stdout
            finals.append(statistics.mean(measure(text, cache, fresh, tmp)))
        print(f"| {name} | {kept('null')} | {kept('good')} | {kept('bad')} | {runs / max(proposals, 1):.2f} | "
              f"{t['wall']:.0f} | {share:.0%} ({saved:.0f} s) | {sum(i['status'] == 'pruned' for i in k['good'])}/"
              f"{len(k['good'])} | {', '.join(f'{v:.4f}' for v in finals)} |")
    for name, t in tally.items():
        per = {}
        for item in t["kinds"]["bad"]:
            per.setdefault(item["what"], []).append(item)
        print(f"{name}, each bad: " + "; ".join(
            f"{what}: {sum(i['status'] == 'pruned' for i in items)}/{len(items)} pruned, "
            f"{sum(i['runs'] for i in items)} runs, {sum(i['seconds'] for i in items):.0f} s "
            f"(a first run not pruned: {full.get(what, float('nan')):.0f} s)"
            for what, items in per.items()))


def tiny_cache(tmp: Path, budget: int) -> Path:
    """A tiny-profile cache with this budget, prepared under tmp from the offline python source."""
    cache = tmp / "cache"
    subprocess.run([sys.executable, str(ROOT / "prepare.py"), "--source", "python", "--profile", "tiny",
                    "--time-budget", str(budget), "--cache", str(cache)], check=True, capture_output=True)
    return cache


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=int, default=10, help="seconds of training per run (default 10)")
    parser.add_argument("--episodes", type=int, default=3, help="fresh pairs of branches (default 3)")
    parser.add_argument("--check-seeds", type=int, default=5, help="seeds the goods are shown at (default 5)")
    parser.add_argument("--final-seeds", type=int, default=2, help="fresh seeds per final best (default 2)")
    parser.add_argument("--busy", type=int, default=0, help="busy processes to switch on and off (default 0)")
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tiny_cache(tmp, args.budget)
        base = sabotaged((ROOT / "train.py").read_text())
        sigma, goods = check_goods(base, cache, range(1000, 1000 + args.check_seeds), tmp)
        os.environ.update(AUTORESEARCH_CACHE=str(cache), AUTORESEARCH_DEVICE="cpu")
        repo = make_repo(tmp / "repo", base)
        tally, load = {}, Load(args.busy)
        for number in range(args.episodes):
            episode(repo, number, goods, tally, load)
            print(f"episode {number + 1} of {args.episodes} done ({time.time() - started:.0f} s)", flush=True)
        report(tally, sigma, cache, tmp, args.final_seeds, base)
    print(f"\n{time.time() - started:.0f} s in all, {args.busy} busy processes switched on and off; load average "
          f"now {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
