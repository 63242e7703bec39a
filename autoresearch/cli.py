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


def cmd_prepare(args, rest) -> int:
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
        agent = make_agent(args.agent, seed=args.seed)
    except ValueError as e:
        raise LabError(str(e)) from None
    lab = Lab(workdir, Policy(lam=args.lam, margin=args.margin), seed=args.seed, allowance=args.allowance)
    print(f"run {lab.state['tag']} in {workdir} | agent {agent.name} | profile {lab.manifest['profile']} | "
          f"budget {lab.budget}s per experiment | Ctrl-C stops cleanly")
    lab.run(agent, max_experiments=args.max_experiments, max_hours=args.max_hours)
    print_status(workdir)
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
        print(f"baseline val_bpb {float(base['val_bpb']):.6f} -> best {s['best_val_bpb']:.6f} ({gain:+.6f} better)"
              + (f": {s['best_description']}" if s["best_commit"] != rows[0]["commit"] else ""))
    print_status(workdir)
    print(f"\ncontinue it:  uv run autoresearch run --tag {tag} --agent search")
    print(f"its history:  git log --oneline autoresearch/{tag}")
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="autoresearch", description="An enforced, crash-safe LLM-training research loop.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare", help="prepare data (takes prepare.py's flags)", add_help=False)
    q = sub.add_parser("init", help="create a run: branch autoresearch/TAG in its own worktree runs/TAG")
    q.add_argument("--tag")
    q = sub.add_parser("run", help="run experiments on a run's branch")
    q.add_argument("--tag", help="which run (default: the most recent)")
    q.add_argument("--agent", default="search", help="search (offline) or replay:FILE")
    q.add_argument("--max-experiments", type=int, help="stop after this many experiments")
    q.add_argument("--max-hours", type=float, help="start no experiment after this many hours")
    q.add_argument("--seed", type=int, default=42, help="seed for train.py and the agent")
    q.add_argument("--lam", type=float, default=0.001 / 20, help="complexity penalty, bpb per net added line")
    q.add_argument("--margin", type=float, default=0.0, help="how much a result must beat the best to be kept")
    q.add_argument("--allowance", type=float, help="seconds allowed on top of the budget before a run is killed")
    q = sub.add_parser("status", help="where a run stands")
    q.add_argument("--tag")
    q.add_argument("--json", action="store_true")
    q = sub.add_parser("demo", help="offline: prepare if needed, then a baseline and a few search experiments")
    q.add_argument("--experiments", type=int, default=5)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["prepare"]:
            return cmd_prepare(None, argv[1:])
        args = build_parser().parse_args(argv)
        return {"init": cmd_init, "run": cmd_run, "status": cmd_status, "demo": cmd_demo}[args.command](args)
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
