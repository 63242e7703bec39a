"""The loop in the background, for the launch notebook (and anything else that is not a terminal).

`start_loop` starts `autoresearch run` as a detached process in its own session: a notebook kernel
that is interrupted or restarted (marimo kills its process group) does not take the loop with it.
Everything else here reads files only - the run's lock and pid file, state.json, results.tsv and
the logs - so a fresh kernel finds a running loop again, and so does any other process.

    pid = start_loop(root, "mar5", agent="search", max_experiments=10)
    live(root, "mar5")        # the experiment in flight, its loss curve, the best run's, the rows
    stop_loop(root, "mar5")   # SIGTERM: the loop stops train.py and records the state; SIGKILL after a timeout
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from . import ledger, runner, state, workspace
from .runner import progress_points, reached
from .measurements import number
from .workspace import LabError

PACKAGE_PARENT = Path(__file__).resolve().parents[1]  # where `import autoresearch` is found
_children: dict[int, subprocess.Popen] = {}  # loops started by this process, reaped as they end


def run_dir(root, tag) -> Path:
    return Path(root) / "runs" / workspace.valid_tag(tag)


def _existing_run(root, tag) -> Path:
    workdir = run_dir(root, tag)
    if not (workdir / ".lab" / "state.json").exists():
        raise LabError(f"no run tagged {tag!r}: start one with `autoresearch init --tag {tag}`")
    return workdir


def log_file(root, tag) -> Path:
    """Where the background loop's own output goes (appended across starts)."""
    return run_dir(root, tag) / ".lab" / "loop.log"


def pid_file(root, tag) -> Path:
    return run_dir(root, tag) / ".lab" / "loop.pid"


def _reap() -> None:
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[pid]


def _is_loop_process(pid: int) -> bool:
    """Whether pid is alive and is a loop started by start_loop (a session leader running the cli).
    Guards against a stale pid file whose pid was reused by another process."""
    _reap()
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
        if os.getsid(pid) != pid:
            return False
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path(f"/proc/{pid}")
    if proc.exists():  # Linux: look closer
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False  # a zombie, not yet reaped by its parent
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, IndexError):
            return False
        # empty for an instant while the process is being exec'd
        return not cmdline or b"autoresearch.cli" in cmdline
    return True


def _pid_from_file(root, tag) -> int | None:
    try:
        pid = int(pid_file(root, tag).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_loop_process(pid) else None


def loop_pid(root, tag) -> int | None:
    """The pid of the loop running on this run, or None. Read from the run's lock (and, while a
    freshly started loop has not taken the lock yet, its pid file), never from memory, so it works
    in a kernel that did not start the loop."""
    workdir = run_dir(root, tag)
    if not (workdir / ".lab").exists():
        return None
    _reap()
    pid = state.is_running(workdir)
    if pid is not None:
        return pid if pid > 0 else (_pid_from_file(root, tag) or pid)
    return _pid_from_file(root, tag)


def start_loop(root, tag, agent: str = "search", max_experiments: int | None = None,
               max_hours: float | None = None, extra_args=()) -> int:
    """Start `autoresearch run --tag TAG --agent AGENT ...` detached (own session, stdin closed,
    output appended to runs/TAG/.lab/loop.log); returns its pid. Refused if a loop runs on the tag."""
    root = Path(root).resolve()
    workdir = _existing_run(root, tag)
    running = loop_pid(root, tag)
    if running is not None:
        raise LabError(f"a loop is already running on {workdir} (pid {running}): stop it first")
    args = [sys.executable, "-m", "autoresearch.cli", "run", "--tag", tag, "--agent", agent]
    if max_experiments is not None:
        args += ["--max-experiments", str(int(max_experiments))]
    if max_hours is not None:
        args += ["--max-hours", str(float(max_hours))]
    args += [str(a) for a in extra_args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_PARENT), *filter(None, [env.get("PYTHONPATH")])])
    log = log_file(root, tag)
    with open(log, "a") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start: {' '.join(args[1:])}\n")
        out.flush()
        proc = subprocess.Popen(args, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    _children[proc.pid] = proc
    tmp = pid_file(root, tag).with_suffix(".tmp")
    tmp.write_text(f"{proc.pid}\n")
    os.replace(tmp, pid_file(root, tag))
    return proc.pid


def stop_loop(root, tag, timeout: float = 30) -> bool:
    """Stop the loop: SIGTERM (it stops train.py and records where it was), wait until its lock is
    free, SIGKILL after `timeout` seconds (its train.py's group is then killed too). Returns False
    when no loop was running, True once the one that was has stopped."""
    workdir = run_dir(root, tag)
    pid = loop_pid(root, tag)
    if pid is None:
        return False
    if pid <= 0:
        raise LabError(f"a loop holds {workdir / '.lab' / 'lock'} but its pid is unknown: stop it by hand")

    def stopped():
        _reap()
        return state.is_running(workdir) is None and not _is_loop_process(pid)

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.time() + timeout
    while time.time() < deadline:
        if stopped():
            return True
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.time() + 10
    while time.time() < deadline and not stopped():
        time.sleep(0.1)
    try:  # a train.py orphaned by the killed loop (the next `run` would also kill it)
        for pgid in state.child_groups(state.load(workdir)):
            runner.kill_group(pgid)
    except (OSError, ValueError, LabError):
        pass
    return stopped()


# --- the live view -------------------------------------------------------------------------------

def _frame(results: Path):
    try:
        from . import analysis
        return analysis.load(results)
    except (ImportError, AttributeError):
        return ledger.read_frame(results)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def live(root, tag) -> dict:
    """Everything a live view shows, read from the run's files only:

    tag, workdir, pid (the loop's, or None), running (bool), current (the experiment in flight:
    number, description, agent, started, phase, commit, run (the run in flight: role, seed, commit,
    or None), runs (its rows so far) - or None), current_points (the run in flight's progress: dicts
    of step, progress 0..1, loss, tokens_per_s), best (the last kept verdict row, with its number, or
    None), best_points (a run of the best), best_val_bpb (its mean over its runs, those since the last
    drift of the machine's speed where there was one: what the next candidate is compared with),
    best_measure (that mean's measurements.Best: runs, era), experiments and kept (verdicts so far),
    noise (judge.Noise), rows (a polars frame of results.tsv: a row per run), device (of the last row,
    or ''), time_budget, loop_log (the tail of the loop's output)."""
    from . import logs, measurements
    workdir = _existing_run(root, tag)
    st = state.load(workdir)
    results = workdir / "results.tsv"
    rows = ledger.read_rows(results)
    in_flight = st.get("experiments") or []
    current, current_points = None, []
    if in_flight:
        exp = in_flight[0]
        run = next(iter(state.running(exp)), None)
        mine = measurements.rows_of(rows, exp["number"])
        current = dict(number=exp["number"], description=exp.get("description", ""), agent=exp.get("agent", ""),
                       started=exp.get("started", ""), phase=exp.get("phase", ""),
                       commit=(exp.get("commit") or "")[:7], runs=mine,
                       run=dict(role=run["role"], seed=run["seed"], commit=run["commit"][:7]) if run else None)
        if run and exp.get("phase") == "measuring":
            current_points = progress_points(logs.log_path(workdir, exp["number"], run["commit"], run["seed"]))
    runs_in_flight = []  # one per worker busy (several with --workers N)
    for exp, run in ((e, r) for e in in_flight for r in state.running(e)):
        if exp.get("phase") == "measuring":
            points = progress_points(logs.log_path(workdir, exp["number"], run["commit"], run["seed"]))
            runs_in_flight.append(dict(worker=run.get("worker") or "local", experiment=exp["number"],
                                       description=exp.get("description", ""), role=run["role"], seed=run["seed"],
                                       commit=run["commit"][:7],
                                       progress=points[-1]["progress"] if points else None))
    ended = measurements.verdicts(rows)
    best, best_points = None, []
    keeps = [r for r in ended if r["status"] == ledger.KEEP]
    if keeps:
        best = dict(keeps[-1], number=measurements.experiment_of(keeps[-1], rows.index(keeps[-1])))
        runs_of_best = [(i, r) for i, r in enumerate(rows) if r["commit"] == best["commit"] and
                        measurements.run_value(r) is not None]
        if runs_of_best:
            best_points = progress_points(logs.row_log(workdir, runs_of_best[-1][1], runs_of_best[-1][0]))
    measure = measurements.best(rows, st["best_commit"]) if rows else None
    pid = loop_pid(root, tag)
    return dict(tag=st.get("tag", tag), workdir=str(workdir), pid=pid, running=pid is not None, current=current,
                runs_in_flight=runs_in_flight,
                current_points=current_points, best=best, best_points=best_points,
                best_val_bpb=measure.mean if measure else None, best_measure=measure,
                experiments=len(ended), kept=len(keeps),
                noise=measurements.noise(rows), rows=_frame(results),
                device=rows[-1].get("device", "") if rows else "",
                time_budget=rows[-1].get("time_budget", "") if rows else "",
                loop_log=_tail(log_file(root, tag)))


def phase(info: dict, max_runs: int | None = None) -> str:
    """What the loop is doing now, in words, from `live`'s info: stopped (with what runs again on the
    next start), waiting for the agent, starting a run, training (k % of the budget), evaluating,
    or judging (a confirmation k of at most max_runs, a control of the best)."""
    cur = info["current"]
    if not info["running"]:
        if cur:
            return (f"stopped: #{cur['number']} ({textwrap.shorten(cur['description'], 60, placeholder=' …')}) runs again from where it was on the next "
                    f"start")
        return "stopped"
    if cur is None:
        return "between experiments"
    if cur["phase"] == "proposing":
        return f"the agent ({cur['agent']}) is proposing #{cur['number']}"
    if cur["phase"] == "committing":
        return f"committing #{cur['number']}"
    run = cur["run"]
    if run is None:
        return f"judging #{cur['number']}"
    what = {"baseline": f"the baseline at seed {run['seed']}", "candidate": f"the candidate at seed {run['seed']}",
            "control": f"a control run of the best at seed {run['seed']}"}.get(run["role"])
    if what is None and run["commit"] != cur["commit"]:
        what = f"the best at seed {run['seed']}, to pair with the candidate"
    if what is None:
        done = sum(1 for r in cur["runs"] if (r.get("commit") or "")[:7] == cur["commit"] and r.get("role") != "verdict")
        limit = f" of at most {max_runs}" if max_runs else ""
        what = f"confirmation {done + 1}{limit} at seed {run['seed']}"
    points = info["current_points"]
    if not points:
        return f"starting {what}"
    last = points[-1]  # its progress is the budget's share spent before that step, "left" what is after it
    if last["progress"] >= 0.99 or last.get("left") == 0:
        return f"evaluating {what} (its model is handed off and the lab's evaluator scores it)"
    return f"training {what} ({reached(last, number(info.get('time_budget'))):.0%} of the budget)"


def curves_chart(info: dict, width: int = 520, height: int = 260):
    """Loss against the share of the time budget: the experiment in flight beside the best run."""
    import altair as alt
    values = []
    for name, key, meta in (("running", "current_points", info.get("current")),
                            ("best", "best_points", info.get("best"))):
        label = f"#{meta['number']} {meta.get('description', '')}"[:80] if meta else ""
        values += [dict(run=name, label=label, progress=p["progress"], loss=p["loss"], step=p["step"])
                   for p in info.get(key) or []]
    color = alt.Color("run:N", title=None, scale=alt.Scale(domain=["running", "best"],
                                                           range=["#e4572e", "#2e86ab"]))
    return alt.Chart(alt.Data(values=values)).mark_line(point=True).encode(
        x=alt.X("progress:Q", title="share of the time budget", scale=alt.Scale(domain=[0, 1]),
                axis=alt.Axis(format="%")),
        y=alt.Y("loss:Q", title="training loss", scale=alt.Scale(zero=False)),
        color=color,
        tooltip=["run:N", "label:N", "step:Q", alt.Tooltip("progress:Q", format=".1%"),
                 alt.Tooltip("loss:Q", format=".4f")],
    ).properties(width=width, height=height, title="loss: running vs best")
