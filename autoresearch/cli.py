"""The `autoresearch` command: prepare, init, run, status, demo."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from . import harness, ledger, state, workspace
from .workspace import LabError


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
    from .loop import init_run
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


def cmd_run(args) -> int:
    from .agents import make_agent
    from .loop import Lab, Policy
    workdir = find_run(workspace.repo_root(), args.tag)
    try:
        agent = make_agent(args.agent, seed=args.seed, model=args.model)
    except ValueError as e:
        raise LabError(str(e)) from None
    lab = Lab(workdir, Policy(lam=args.lam, margin=args.margin), seed=args.seed, allowance=args.allowance)
    print(f"run {lab.state['tag']} in {workdir} | agent {agent.name} | profile {lab.manifest['profile']} | "
          f"budget {lab.budget}s per experiment | Ctrl-C stops cleanly")
    lab.run(agent, max_experiments=args.max_experiments, max_hours=args.max_hours, max_cost=args.max_cost)
    print_status(workdir)
    return 0


class OneShot:
    """The external agent's edit, as the one proposal of an `autoresearch experiment` call."""
    name = "external"

    def __init__(self, text, description, rejection=None):
        from .agents import Proposal
        self.proposal = Proposal(description=description, train_py=text, rejection=rejection)

    def propose(self, context):
        proposal, self.proposal = self.proposal, None
        return proposal


def result_line(row, best_before) -> str:
    where = f"commit {row['commit']}" if row["commit"] != "none" else "not committed"
    if row["val_bpb"]:
        delta = f" ({float(row['val_bpb']) - best_before:+.6f} vs best {best_before:.6f})" if best_before else ""
        return (f"{row['status']}: val_bpb {row['val_bpb']}{delta} | +{row['lines_added']}/-{row['lines_removed']} "
                f"lines | {where} | {row['description']}")
    return f"{row['status']}: {row['reason']} | {where} | {row['description']}"


def cmd_experiment(args) -> int:
    """Take the working train.py of the run's worktree through guard, commit, run, judge and ledger."""
    import io
    from . import guard
    from .loop import Display, Lab, Policy
    if not args.message or not args.message.strip():
        raise LabError('describe the change: autoresearch experiment -m "what I tried"')
    workdir = find_run(workspace.repo_root(), args.tag)
    if state.is_running(workdir):
        raise LabError(f"a loop is running on {workdir}: stop it before running experiments by hand")
    st = state.load(workdir)
    text = (workdir / workspace.TRAIN).read_text() if (workdir / workspace.TRAIN).is_file() else ""
    rejection = guard.check_proposal(workdir, st["protected"])  # before the lab cleans the tree
    lab = Lab(workdir, Policy(lam=args.lam, margin=args.margin), seed=args.seed,
              display=Display(stream=io.StringIO()))
    before = len(lab.rows())
    best_before = st.get("best_val_bpb")
    lab.run(OneShot(text, " ".join(args.message.split()), rejection))
    for row in lab.rows()[before:]:
        print(result_line(row, best_before))
        if row["status"] == "keep" and row["val_bpb"]:
            best_before = float(row["val_bpb"])
    if lab.state.get("current"):
        print("stopped before the experiment finished; run the same command again to finish it")
    return 0


def status_of(workdir: Path) -> dict:
    st = state.load(workdir)
    rows = ledger.read_rows(workdir / "results.tsv")
    best = next((r for r in reversed(rows) if r["status"] == "keep"), None)
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    pid = state.is_running(workdir)
    return dict(tag=st["tag"], branch=st["branch"], workdir=str(workdir), results=str(workdir / "results.tsv"),
                profile=st.get("profile"), experiments=len(rows), kept=counts.get("keep", 0), statuses=counts,
                best_val_bpb=st.get("best_val_bpb"), best_commit=st["best_commit"][:7],
                best_description=best["description"] if best else None,
                running=pid is not None, pid=pid, in_flight=st.get("current"),
                last=[{k: r[k] for k in ("commit", "val_bpb", "status", "description")} for r in rows[-5:]])


def print_status(workdir: Path) -> None:
    s = status_of(workdir)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(s["statuses"].items())) or "none yet"
    best = f"{s['best_val_bpb']:.6f} at {s['best_commit']}" if s["best_val_bpb"] is not None else "none yet"
    print(f"run {s['tag']} ({s['branch']}, {s['workdir']})")
    print(f"experiments {s['experiments']}: {counts}")
    print(f"best val_bpb {best}" + (f" - {s['best_description']}" if s["best_description"] else ""))
    print(f"loop {'running (pid %s)' % s['pid'] if s['running'] else 'not running'} | results {s['results']}")
    for r in s["last"]:
        print(f"  {r['commit']:<7} {r['status']:<8} {r['val_bpb'] or '-':<9} {r['description']}")


def cmd_status(args) -> int:
    workdir = find_run(workspace.repo_root(), args.tag)
    if args.json:
        print(json.dumps(status_of(workdir), indent=1))
    else:
        print_status(workdir)
    return 0


def cmd_demo(args) -> int:
    from .agents import make_agent
    from .loop import Lab, init_run
    root = workspace.repo_root()
    cache = harness.cache_dir()
    try:
        manifest = harness.read_manifest(cache)
    except LabError:
        manifest = None
    if manifest is None or manifest["profile"] != "tiny":
        cache = cache if manifest is None else cache.with_name(cache.name + "-demo")
        print(f"preparing the python source with the tiny profile in {cache} ...")
        code = subprocess.run([sys.executable, str(root / "prepare.py"), "--source", "python", "--profile", "tiny",
                               "--cache", str(cache)], cwd=root).returncode
        if code != 0:
            return code
    tag = time.strftime("demo-%Y%m%d-%H%M%S")
    workdir = init_run(root, tag, cache=cache)
    lab = Lab(workdir, seed=42)
    print(f"demo run {tag}: a baseline, then {args.experiments - 1} experiments by the offline search agent, "
          f"{lab.budget}s each")
    lab.run(make_agent("search", seed=42), max_experiments=args.experiments)
    s = status_of(workdir)
    rows = ledger.read_rows(workdir / "results.tsv")
    base = next((r for r in rows if r["description"] == "baseline" and r["val_bpb"]), None)
    print()
    if base and s["best_val_bpb"] is not None:
        gain = float(base["val_bpb"]) - s["best_val_bpb"]
        if gain > 0:
            print(f"baseline val_bpb {float(base['val_bpb']):.6f} -> best {s['best_val_bpb']:.6f} ({gain:.6f} lower): "
                  f"{s['best_description']}")
        else:
            print(f"baseline val_bpb {float(base['val_bpb']):.6f}: no experiment beat it this time")
    print_status(workdir)
    print(f"\ncontinue it:  uv run autoresearch run --tag {tag} --agent search")
    print(f"its history:  git log --oneline autoresearch/{tag}")
    return 0


def cmd_report(args) -> int:
    """Write one offline HTML page about a run's results.tsv (or any results.tsv given with --results)."""
    from .report import write_report
    if args.results:
        results = Path(args.results)
        if not results.is_file():
            raise LabError(f"no results file at {results}")
        title = None
    else:
        workdir = find_run(workspace.repo_root(), args.tag)
        results, title = workdir / "results.tsv", f"autoresearch run {workdir.name}"
    print(write_report(results, Path(args.output), lam=args.lam, title=title))
    return 0


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
    q.add_argument("--seed", type=int, default=42, help="seed for train.py and the agent")
    q.add_argument("--lam", type=float, default=0.001 / 20, help="complexity penalty, bpb per net added line")
    q.add_argument("--margin", type=float, default=0.0, help="how much a result must beat the best to be kept")
    q.add_argument("--allowance", type=float, help="seconds allowed on top of the budget before a run is killed")
    q = sub.add_parser("experiment", help="for coding agents: run the worktree's edited train.py as one experiment")
    q.add_argument("-m", "--message", required=True, help="one line: what you changed")
    q.add_argument("--tag", help="which run (default: the most recent)")
    q.add_argument("--seed", type=int, default=42)
    q.add_argument("--lam", type=float, default=0.001 / 20)
    q.add_argument("--margin", type=float, default=0.0)
    q = sub.add_parser("status", help="where a run stands")
    q.add_argument("--tag")
    q.add_argument("--json", action="store_true")
    q = sub.add_parser("demo", help="offline: prepare if needed, then a baseline and a few search experiments")
    q.add_argument("--experiments", type=int, default=5)
    q = sub.add_parser("report", help="write a self-contained HTML report of a run's results (opens offline)")
    q.add_argument("--tag", help="which run (default: the most recent)")
    q.add_argument("--results", help="report this results.tsv instead of a run's")
    q.add_argument("-o", "--output", default="report.html", help="where to write it (default: report.html)")
    q.add_argument("--lam", type=float, default=0.001 / 20, help="complexity penalty drawn, bpb per net added line")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["prepare"]:
            return cmd_prepare(argv[1:])
        args = build_parser().parse_args(argv)
        commands = {"init": cmd_init, "run": cmd_run, "experiment": cmd_experiment, "status": cmd_status,
                    "demo": cmd_demo, "report": cmd_report}
        return commands[args.command](args)
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
