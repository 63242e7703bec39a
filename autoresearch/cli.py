"""The `autoresearch` command: prepare, init, run, experiment, noise, status, demo, report."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from . import harness, judge, ledger, measurements, state, workspace
from .workspace import LabError

DEMO_BUDGET = 20     # seconds per run in the demo: a baseline at 3 seeds and a dozen experiments in ~10 min
DEMO_MINUTES = 8.5   # the demo starts no experiment after this
DEMO_PREFIX = "demo-"  # a demo run's tag: demo-<date>-<time>


def find_run(root: Path, tag: str | None) -> Path:
    runs = root / "runs"
    if tag:
        workdir = runs / workspace.valid_tag(tag)
        if not (workdir / ".lab" / "state.json").exists():
            raise LabError(f"no run tagged {tag!r}: start one with `autoresearch init --tag {tag}`")
        return workdir
    found = sorted(runs.glob("*/.lab/state.json"), key=lambda p: p.stat().st_mtime) if runs.exists() else []
    if not found:
        raise LabError("no run yet: start one with `autoresearch init` (or try `autoresearch demo`)")
    return found[-1].parent.parent


def cmd_prepare(rest) -> int:
    root = workspace.repo_root()
    return subprocess.run([sys.executable, str(root / "prepare.py"), *rest], cwd=root).returncode


def cmd_init(args) -> int:
    from .scheduler import init_run
    root = workspace.repo_root()
    tag = args.tag or time.strftime("run-%Y%m%d-%H%M%S")
    dirty = [p for code, p in workspace.changed_paths(root) if not p.startswith("runs/")]
    workdir = init_run(root, tag)
    print(f"run {tag}: branch autoresearch/{tag}, worktree {workdir.relative_to(root)}")
    if dirty:
        print(f"note: your uncommitted changes ({', '.join(dirty[:3])}{'...' if len(dirty) > 3 else ''}) are not "
              f"part of it; the run starts from your last commit")
    print(f"next: autoresearch run --tag {tag} --agent search")
    return 0


def policy_from(args) -> judge.Policy:
    try:
        return judge.Policy(name=args.policy, lam=args.lam, margin=args.margin, confidence=args.confidence,
                            max_runs=args.max_runs, baseline_runs=args.baseline_runs,
                            control_every=args.control_every, prune=not args.no_prune, seed=args.seed)
    except ValueError as e:
        raise LabError(str(e)) from None


def describe_policy(policy: judge.Policy) -> str:
    if policy.single:
        return "policy single: one run per experiment, kept if it beats the best's run"
    return (f"policy noise: kept when {policy.confidence:.0%} sure, up to {policy.max_runs} runs, "
            f"early abort {'on' if policy.prune else 'off'}")


def cmd_run(args) -> int:
    from .agents import make_agent
    from .scheduler import Scheduler
    workdir = find_run(workspace.repo_root(), args.tag)
    try:
        agent = make_agent(args.agent, seed=args.seed, model=args.model)
    except ValueError as e:
        raise LabError(str(e)) from None
    lab = Scheduler(workdir, policy_from(args), allowance=args.allowance, workers=args.workers,
                    ray_address=args.ray_address)
    print(f"run {lab.state['tag']} in {workdir} | agent {agent.name} | profile {lab.manifest['profile']} | "
          f"budget {lab.budget}s per run | {describe_policy(lab.policy)} | Ctrl-C stops cleanly")
    lab.run(agent, max_experiments=args.max_experiments, max_hours=args.max_hours, max_cost=args.max_cost)
    print_status(workdir)
    return 0


def result_line(row) -> str:
    """One line per experiment for a coding agent: the verdict, the mean and how sure it is."""
    where = f"commit {row['commit']}" if row["commit"] != "none" else "not committed"
    if not row["val_bpb"]:
        return f"{row['status']}: {row['reason']} | {where} | {row['description']}"
    runs = measurements.number(row.get("runs"), int) or 1
    text = f"{row['status']}: val_bpb {row['val_bpb']} ({'mean of %d runs' % runs if runs > 1 else '1 run'})"
    diff, low, high = (measurements.number(row.get(k)) for k in ("diff", "diff_low", "diff_high"))
    score = measurements.number(row.get("score"))
    if diff is not None and score is not None and row.get("role") != "baseline":
        text += f" | {diff:+.6f} vs best {score - diff:.6f}"  # diff = score - the best's mean at the same seeds
        if low is not None:
            text += f" [{low:+.4f}, {high:+.4f}]"
            if row["status"] != ledger.KEEP and low < 0 < high:
                text += ": within the noise"
    return f"{text} | +{row['lines_added'] or 0}/-{row['lines_removed'] or 0} lines | {where} | {row['description']}"


def cmd_experiment(args) -> int:
    """Take the working train.py of the run's worktree through guard, commit, runs, judge and ledger."""
    import io
    from . import guard
    from .agents import Proposal
    from .agents.replay import OneProposal
    from .scheduler import Display, Scheduler
    if not args.message or not args.message.strip():
        raise LabError('describe the change: autoresearch experiment -m "what I tried"')
    workdir = find_run(workspace.repo_root(), args.tag)
    if state.is_running(workdir):
        raise LabError(f"a loop is running on {workdir}: stop it before running experiments by hand")
    st = state.load(workdir)
    train = workdir / workspace.TRAIN
    text = train.read_bytes().decode("utf-8", "replace") if train.is_file() else ""  # the guard says if it is not
    rejection = guard.check_proposal(workdir, guard.protection(workdir, st))  # before the lab cleans the tree
    lab = Scheduler(workdir, policy_from(args), display=Display(stream=io.StringIO()))
    before = len(measurements.verdicts(lab.rows()))
    proposal = Proposal(description=" ".join(args.message.split()), train_py=text, rejection=rejection)
    lab.run(OneProposal(proposal, "external"))
    for row in measurements.verdicts(lab.rows())[before:]:
        print(result_line(row))
    if lab.in_flight:
        print("stopped before the experiment finished; run the same command again to finish it")
    return 0


def cmd_noise(args) -> int:
    """Measure the best commit at more seeds: a sharper noise floor for every later verdict."""
    from .scheduler import Scheduler
    workdir = find_run(workspace.repo_root(), args.tag)
    lab = Scheduler(workdir, policy_from(args), allowance=args.allowance)
    print(f"run {lab.state['tag']}: the best at {args.repeats} more seeds, {lab.budget}s each")
    lab.measure_noise(args.repeats)
    print_status(workdir)
    return 0


def status_of(workdir: Path) -> dict:
    st = state.load(workdir)
    rows = ledger.read_rows(workdir / "results.tsv")
    ended = measurements.verdicts(rows)
    best = next((r for r in reversed(ended) if r["status"] == ledger.KEEP), None)
    counts = {}
    for r in ended:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    summary, noise = measurements.best(rows, st["best_commit"]), measurements.noise(rows)
    pid = state.is_running(workdir)
    in_flight = []
    for exp in st.get("experiments", []):
        mine = measurements.rows_of(rows, exp["number"])
        in_flight.append(dict(number=exp["number"], phase=exp["phase"], description=exp.get("description", ""),
                              commit=(exp.get("commit") or "")[:7], in_flight=state.running(exp),
                              runs=[{k: r[k] for k in ("commit", "role", "seed", "run_bpb")} for r in mine]))
    return dict(tag=st["tag"], branch=st["branch"], workdir=str(workdir), results=str(workdir / "results.tsv"),
                profile=st.get("profile"), experiments=len(ended), runs=len(rows), kept=counts.get(ledger.KEEP, 0),
                statuses=counts, best_val_bpb=summary.mean, best_runs=summary.runs, best_commit=st["best_commit"][:7],
                best_description=best["description"] if best else None, era=summary.era,
                noise=dict(sigma=noise.sigma, df=noise.df, sigma_diff=noise.sigma_diff, df_diff=noise.df_diff),
                running=pid is not None, pid=pid, in_flight=in_flight,
                last=[{k: r[k] for k in ("commit", "val_bpb", "status", "runs", "description")} for r in ended[-5:]])


def print_status(workdir: Path) -> None:
    s = status_of(workdir)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(s["statuses"].items())) or "none yet"
    best = (f"{s['best_val_bpb']:.6f} at {s['best_commit']} (mean of {s['best_runs']} run"
            f"{'s' if s['best_runs'] != 1 else ''})" if s["best_val_bpb"] is not None else "none yet")
    n = s["noise"]
    print(f"run {s['tag']} ({s['branch']}, {s['workdir']})")
    print(f"experiments {s['experiments']} ({s['runs']} runs): {counts}")
    print(f"best val_bpb {best}" + (f" - {s['best_description']}" if s["best_description"] else ""))
    print(f"noise {judge.Noise(n['sigma'], n['df'], n['sigma_diff'], n['df_diff']).describe()}"
          + (f" | era {s['era']}: a drift was seen, earlier runs are set aside" if s["era"] > 1 else ""))
    for exp in s["in_flight"]:
        where = "".join(f", {run['role']} s{run['seed']} on worker {run['worker']}"
                        for run in exp["in_flight"] if run.get("worker"))
        runs = len(exp["runs"])
        print(f"in flight: #{exp['number']} ({exp['phase']}, {runs} run{'s' if runs != 1 else ''} so far{where}) "
              f"{exp['description']}")
    print(f"loop {'running (pid %s)' % s['pid'] if s['running'] else 'not running'} | results {s['results']}")
    for r in s["last"]:
        runs = f"x{r['runs']}" if r["runs"] and r["runs"] != "1" else ""
        print(f"  {r['commit']:<7} {r['status']:<8} {r['val_bpb'] or '-':<9} {runs:<3} {r['description']}")


def cmd_status(args) -> int:
    workdir = find_run(workspace.repo_root(), args.tag)
    if args.json:
        print(json.dumps(status_of(workdir), indent=1))
    else:
        print_status(workdir)
    return 0


def demo_cache(root: Path) -> Path | None:
    """The demo's prepared cache: the default one if it is tiny with the demo's budget, else a sibling
    `-demo` one, prepared here the first time. None if preparing failed."""
    cache = harness.cache_dir()
    for candidate in (cache, cache.with_name(cache.name + "-demo")):
        try:
            manifest = harness.read_manifest(candidate)
        except LabError:
            manifest = None
        if manifest and manifest["profile"] == "tiny" and manifest["constants"]["TIME_BUDGET"] == DEMO_BUDGET:
            return candidate
        if manifest is None and candidate != cache:
            print(f"preparing the python source with the tiny profile ({DEMO_BUDGET}s per run) in {candidate} ...")
            code = subprocess.run([sys.executable, str(root / "prepare.py"), "--source", "python", "--profile",
                                   "tiny", "--time-budget", str(DEMO_BUDGET), "--cache", str(candidate)],
                                  cwd=root).returncode
            return candidate if code == 0 else None
    raise LabError(f"{cache.with_name(cache.name + '-demo')} holds another cache: move it away or set "
                   f"AUTORESEARCH_CACHE to another folder")


def cmd_demo(args) -> int:
    from .agents import make_agent
    from .scheduler import Scheduler, init_run
    root = workspace.repo_root()
    cache = demo_cache(root)
    if cache is None:
        return 1
    tag = DEMO_PREFIX + time.strftime("%Y%m%d-%H%M%S")
    workdir = init_run(root, tag, cache=cache)
    lab = Scheduler(workdir)
    print(f"demo run {tag}: the baseline at {lab.policy.baseline_runs} seeds, then experiments by the offline "
          f"search agent, {lab.budget}s per run, until {args.minutes:g} minutes have passed (at most "
          f"{args.experiments}; none is started after that).\n"
          f"Each experiment runs once, and again at more seeds (paired with the best's runs at the same seeds) "
          f"only while it looks better: it is kept when the lab is {lab.policy.confidence:.0%} sure.")
    lab.run(make_agent("search", seed=lab.policy.seed), max_experiments=args.experiments + 1,
            max_hours=args.minutes / 60)
    print()
    print_demo_summary(workdir, state.load(workdir).get("experiments") or [])
    print_status(workdir)
    print(f"\ncontinue it:  uv run autoresearch run --tag {tag} --agent search")
    print(f"its history:  git log --oneline autoresearch/{tag}")
    return 0


def print_demo_summary(workdir: Path, in_flight=()) -> None:
    """What the demo found, for a first-time reader; in_flight: the experiments the time ran out on."""
    rows = ledger.read_rows(workdir / "results.tsv")
    ended = measurements.verdicts(rows)
    noise = measurements.noise(rows)
    base = next((r for r in ended if r.get("role") == "baseline" and r["val_bpb"]), None)
    if base is None:
        print("the baseline did not finish")
        return
    print(f"noise floor: one run's val_bpb moves by {noise.describe()} from seed to seed and with the load")
    print(f"baseline val_bpb {float(base['val_bpb']):.6f} (mean of {base['runs'] or 1} runs)")
    keeps = [r for r in ended if r["status"] == ledger.KEEP and r is not base]
    for r in keeps:
        low, high = measurements.number(r.get("diff_low")), measurements.number(r.get("diff_high"))
        confidence = measurements.number(r.get("confidence"))
        sure = f", between {-high:.4f} and {-low:.4f} lower" + (f" at {confidence:.0%}" if confidence else "") \
            if low is not None else ""
        print(f"kept #{r['experiment']}: val_bpb {float(r['val_bpb']):.6f} over {r['runs'] or 1} runs, "
              f"{-float(r['diff']):.4f} lower than the best it was tried on{sure}: {r['description']}")
    if not keeps:
        print("no experiment was shown better than the baseline beyond the noise this time")
    for exp in in_flight:
        runs = len(measurements.rows_of(rows, exp["number"]))
        print(f"#{exp['number']} ({exp.get('description', '')}) was still being measured ({runs} run"
              f"{'s' if runs != 1 else ''} so far): continuing the run finishes it")
    print("what it means: val_bpb is how many bits the model needs per byte of text it never trained on, so lower "
          "is better, and a keep beat the best by more than the noise floor explains, seed by seed, on this machine "
          "at its load. Numbers from another machine or budget are not comparable with these: compare each run's "
          "gain over its own baseline (`autoresearch report --compare`).")


def cmd_report(args) -> int:
    """Write one offline HTML page about a run's results.tsv (or any results.tsv given with --results),
    or, with --compare, one page comparing several runs."""
    from .report import write_comparison, write_report
    if args.compare:
        print(write_comparison(compared(args.compare), Path(args.output)).resolve())
        return 0
    repository = None
    if args.results:
        results = Path(args.results)
        if not results.is_file():
            raise LabError(f"no results file at {results}")
        title = None
    else:
        workdir = find_run(workspace.repo_root(), args.tag)
        results, title, repository = workdir / "results.tsv", f"autoresearch run {workdir.name}", workdir
    print(write_report(results, Path(args.output), lam=args.lam, title=title, repository=repository).resolve())
    return 0


def compared(items: list[str]) -> dict[str, Path]:
    """--compare's runs by label: a results.tsv file (labelled by its folder, e.g. a participant's), else
    a run's tag in this checkout (its worktree is named by the tag)."""
    from . import analysis
    paths = []
    for item in items:
        path = Path(item).expanduser()
        if not path.is_file() and (path.suffix == ".tsv" or os.sep in item):
            raise LabError(f"no results file at {path}: give a results.tsv that exists, or a run's tag")
        paths.append(path if path.is_file() else find_run(workspace.repo_root(), item) / "results.tsv")
    return analysis.labelled(paths)


def build_parser():
    p = argparse.ArgumentParser(prog="autoresearch", description="An enforced, crash-safe LLM-training research loop.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare", help="prepare data (takes prepare.py's flags)", add_help=False)
    q = sub.add_parser("init", help="create a run: branch autoresearch/TAG in its own worktree runs/TAG")
    q.add_argument("--tag")
    q = sub.add_parser("run", help="run experiments on a run's branch")
    q.add_argument("--tag", help="which run (default: the most recent)")
    q.add_argument("--agent", default="search", help="search (offline), claude (ANTHROPIC_API_KEY) or replay:FILE")
    q.add_argument("--model", help="with --agent claude: the model (default AUTORESEARCH_MODEL or a current one)")
    q.add_argument("--max-cost", type=float, help="with --agent claude: stop once this many USD are spent")
    q.add_argument("--max-experiments", type=int, help="stop after this many experiments")
    q.add_argument("--max-hours", type=float, help="start no experiment after this many hours")
    q.add_argument("--workers", default="1", help="runs in flight at once, each on its own worker (a GPU, or a share of "
                   "the cores) through Ray; `auto`: one per GPU (default 1: no Ray)")
    q.add_argument("--ray-address", help="join this Ray cluster (default RAY_ADDRESS, else a local Ray of the lab's own)")
    policy_args(q)
    q = sub.add_parser("experiment", help="for coding agents: run the worktree's edited train.py as one experiment")
    q.add_argument("-m", "--message", required=True, help="one line: what you changed")
    q.add_argument("--tag", help="which run (default: the most recent)")
    policy_args(q)
    q = sub.add_parser("noise", help="run the best commit at more seeds: a sharper noise floor")
    q.add_argument("--tag", help="which run (default: the most recent)")
    q.add_argument("--repeats", type=int, default=3, help="how many more seeds (default 3)")
    policy_args(q)
    q = sub.add_parser("status", help="where a run stands")
    q.add_argument("--tag")
    q.add_argument("--json", action="store_true")
    q = sub.add_parser("demo", help="offline: prepare if needed, then a baseline and a few search experiments")
    q.add_argument("--experiments", type=int, default=12, help="experiments after the baseline at most (default 12)")
    q.add_argument("--minutes", type=float, default=DEMO_MINUTES,
                   help=f"start no experiment after this many minutes (default {DEMO_MINUTES})")
    q = sub.add_parser("report", help="write a self-contained HTML report of a run's results (opens offline)")
    q.add_argument("--tag", help="which run (default: the most recent)")
    q.add_argument("--results", help="report this results.tsv instead of a run's")
    q.add_argument("--compare", nargs="+", metavar="TAG_OR_TSV",
                   help="one page comparing these runs (tags, or results.tsv files from other machines)")
    q.add_argument("-o", "--output", default="report.html", help="where to write it (default: report.html)")
    q.add_argument("--lam", type=float, default=judge.DEFAULT_LAMBDA,
                   help="complexity penalty drawn, bpb per net added line")
    return p


def policy_args(q) -> None:
    """How experiments are judged: the options of run, experiment and noise."""
    d = judge.Policy()
    q.add_argument("--policy", choices=judge.POLICIES, default=d.name,
                   help="noise (default): paired runs at the lab's seeds until the verdict is sure; single: one run "
                        "each, kept if it beats the best's run (the original project's rule)")
    q.add_argument("--confidence", type=float, default=d.confidence,
                   help=f"how sure a keep must be that the change is better by the margin (default {d.confidence})")
    q.add_argument("--max-runs", type=int, default=d.max_runs,
                   help=f"runs of a candidate at most before it is discarded as unproven (default {d.max_runs})")
    q.add_argument("--margin", type=float, default=d.margin, help="how much better than the best a change must be "
                                                                 "(bpb, default 0)")
    q.add_argument("--lam", type=float, default=d.lam, help="complexity penalty, bpb per net added line")
    q.add_argument("--baseline-runs", type=int, default=d.baseline_runs,
                   help=f"seeds the baseline is run at before the first proposal (default {d.baseline_runs})")
    q.add_argument("--control-every", type=int, default=d.control_every,
                   help=f"a control run of the best N experiments after the last one, 0 never "
                        f"(default {d.control_every})")
    q.add_argument("--no-prune", action="store_true", help="never stop a clearly worse candidate early")
    q.add_argument("--seed", type=int, default=d.seed, help=f"s1 of the lab's seed schedule, and the agent's seed "
                                                            f"(default {d.seed})")
    q.add_argument("--allowance", type=float, help="seconds allowed on top of the budget before a run is killed")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["prepare"]:
            return cmd_prepare(argv[1:])
        args = build_parser().parse_args(argv)
        commands = {"init": cmd_init, "run": cmd_run, "experiment": cmd_experiment, "noise": cmd_noise,
                    "status": cmd_status, "demo": cmd_demo, "report": cmd_report}
        code = commands[args.command](args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not as Python exits
        return code
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # what reads the output stopped (`| head`): nothing is wrong, say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # else Python complains at exit
        return 0
    except OSError as e:  # a full disk, a read-only worktree: every write is atomic or sealed on the next run
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where}: free space or fix the permissions, then run the same command "
              f"again (it resumes where it stopped)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
