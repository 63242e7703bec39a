"""The Scheduler: the crash-safe state machine over the experiments in flight.

An experiment is one proposal and every run it takes to judge it. The scheduler asks the agent for a
proposal, has it applied, guarded and committed, then asks the judge what to run next (the candidate
at a seed, the best at a seed, a control) until the judge gives a verdict; the Executor runs each
job and the Recorder writes one row per run. The judge is a pure function of the ledger's rows, so
after a crash the same question gets the same answer.

Crash safety comes from ordering. The state file names each experiment in flight and its phase
before each step that changes git or the ledger, so a loop killed anywhere restarts like this:

- proposing:   the proposal never ran; the tree is reset to the best commit, nothing is recorded.
- committing:  if the commit was made, its measuring goes on; else as above.
- measuring:   a run recorded in the ledger is never run again; the run in flight is run again
               (killed twice: recorded once as a failure); a verdict already in the ledger only
               moves the branch.
- interrupted: (SIGINT/SIGTERM) as measuring.

A candidate's commit lives off the branch while it is measured (a ref, refs/autoresearch/<tag>/<n>,
keeps it), so the branch tip is the best commit at every moment but the few between a commit and its
ref; a keep moves the branch to the candidate. The Loop (loop.py) keeps up to `executor.slots`
runs in flight at once, each in a thread of this process that waits on the executor; only this
thread writes the ledger, the state and git. An experiment has several runs in flight only where
the judge needs each whatever the others give (the baseline's seeds), and proposals start beside
the baseline (their first run at s1; what follows waits for its verdict); an experiment whose next
run is a run another has in flight waits for it. A candidate the judge would keep whose parent is
no longer the best (the best moved while it ran) is replayed on the best and measured again there
before it can be kept.
"""
from __future__ import annotations

import os
import queue
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from . import guard, harness, judge, ledger, logs, measurements, proposals, runner, sandbox, state, stats, workspace
from .agents import AgentUnavailable
from .executor import Executor, Job, make_executor, require_harness_package
from .judge import Measure, Policy, Verdict
from .loop import Loop
from .recorder import Display, Recorder, now, short, tokens_per_s
from .workspace import LabError


def fault_point(workdir: Path, name: str, *details: str) -> None:
    """Fault injection for the crash-safety tests: with AUTORESEARCH_FAULT=name (or name-detail, e.g.
    recorded-control, recorded-pruned) the loop marks the point in .lab/ and waits there to be killed."""
    fault = os.environ.get("AUTORESEARCH_FAULT")
    if fault and fault in (name, *(f"{name}-{d}" for d in details)):
        (Path(workdir) / ".lab" / f"fault-{fault}").touch()
        time.sleep(600)


def init_run(root: Path, tag: str, cache=None) -> Path:
    """Create the run's branch and worktree and its state; nothing runs yet."""
    manifest = harness.read_manifest(cache)
    workdir = workspace.create_worktree(root, tag)
    base = workspace.head(workdir)
    state.save(workdir, dict(
        tag=tag, branch=f"autoresearch/{tag}", root=str(root), workdir=str(workdir),
        cache=str(harness.cache_dir(cache)), profile=manifest["profile"], base_commit=base,
        best_commit=base, best_val_bpb=None, protected=workspace.protected_hashes(workdir),
        experiments=[], created=now(),
    ))
    return workdir


def measure(run: dict) -> Measure:
    """What the judge asked for, from a run in an experiment's state."""
    return Measure(run["target"], run["seed"], run["role"])


def pending(exp: dict, but: dict | None = None) -> tuple[Measure, ...]:
    """What the judge asked for that is in flight for `exp` now (`but` that run)."""
    return tuple(measure(r) for r in state.running(exp) if r is not but)


class Stopped(BaseException):
    """Raised in the agent's call by a signal: the proposal is dropped and the loop stops. Not an
    Exception, as KeyboardInterrupt is not: an SDK's `except Exception` (retry, wrap) lets it pass."""


class Scheduler:
    def __init__(self, workdir: Path, policy: Policy | None = None, executor: Executor | None = None,
                 display: Display | None = None, allowance: float | None = None, pause: float = 300.0,
                 workers: int | str = 1, ray_address: str | None = None):
        self.workdir = Path(workdir)
        self.state = state.load(self.workdir)
        if "experiments" not in self.state:
            raise LabError(f"{self.workdir} was made by an older version of the lab: start a new run with "
                           f"`autoresearch init --tag NEW` (its results still read in reports and notebooks)")
        self.policy = policy or Policy()
        self.results = self.workdir / "results.tsv"
        self.manifest = harness.read_manifest(self.state["cache"])
        self.budget = self.manifest["constants"]["TIME_BUDGET"]
        self.protected = guard.protection(self.workdir, self.state)  # from git; the state must agree
        require_harness_package(self.workdir, self.protected)  # before the lock: refused at once
        # made under the run's lock (session): making one rewrites the run's .lab/harness and handoff, which
        # a second command on a running loop's run must not touch before it is refused
        self.executor = executor
        self.make_executor = lambda: make_executor(self.workdir, self.state, self.protected, allowance, workers,
                                                   ray_address)
        self.display = display or Display(budget=self.budget)
        self.recorder = Recorder(self.results, self.manifest, self.policy, self.display)
        self.stopping = self.asking = False
        self.pause = pause  # seconds to wait when the agent's service is down, before asking again
        self.started: queue.SimpleQueue = queue.SimpleQueue()  # (run, pgid, worker) from the run threads
        for exp in self.in_flight:
            state.runs_of(exp)  # a state from before experiments had several runs
        self.lock = threading.Lock()

    # --- helpers -------------------------------------------------------------------------------

    def save(self):
        with self.lock:
            state.save(self.workdir, self.state)

    def rows(self):
        return ledger.read_rows(self.results)

    @property
    def slots(self) -> int:
        return getattr(self.executor, "slots", 1)

    @property
    def in_flight(self) -> list[dict]:
        return self.state["experiments"]

    def next_number(self, rows) -> int:
        numbers = [measurements.experiment_of(r, i) for i, r in enumerate(rows)] + [e["number"] for e in self.in_flight]
        return max(numbers, default=0) + 1

    def view(self, exp) -> judge.Experiment:
        added, removed = exp.get("lines", (0, 0))
        return judge.Experiment(exp["number"], short(exp["commit"]), short(exp["parent"]), added - removed)

    @property
    def best(self) -> str:
        return self.state["best_commit"]

    def drop(self, exp):
        workspace.reset_to(self.workdir, self.best)
        self.in_flight.remove(exp)
        self.save()

    def spent(self) -> float:
        return sum(measurements.number(r.get("cost_usd")) or 0.0 for r in self.rows())

    def wait(self, seconds: float):
        deadline = time.time() + seconds
        while not self.stopping and time.time() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.time())))

    # --- start and recovery ----------------------------------------------------------------------

    def check_environment(self):
        self.recorder.device = self.executor.probe()
        self.recorder.sandbox = self.executor.sandbox
        for note in getattr(self.executor, "notes", []):
            self.display.say(f"note: {note}")
        if self.executor.sandbox == sandbox.NONE:
            self.display.say(f"WARNING: {sandbox.why_not()}; every row records sandbox=none")
        env = getattr(self.executor, "env", {})
        if "PYTHONPYCACHEPREFIX" in env:
            self.display.say(f"note: torch's bytecode is not cached where this Python looks: experiments keep it in "
                             f"{env['PYTHONPYCACHEPREFIX']} (else each would compile torch's source again)")
        self.recorder.check()

    def recover(self):
        """Put git, the ledger and the state back in agreement after whatever stopped the last loop."""
        st = self.state
        for pgid in state.child_groups(st):
            runner.kill_group(pgid)  # a train.py orphaned by a killed loop
        st["child_pgid"] = None
        workspace.attach(self.workdir, st["branch"])
        rows = self.rows()
        for exp in list(self.in_flight):
            if exp["phase"] == "proposing":
                self.drop(exp)
            elif exp["phase"] == "committing":
                tip = workspace.head(self.workdir)
                if tip != exp["parent"] and workspace.parent_of(self.workdir, tip) == exp["parent"]:
                    self.measuring(exp, tip)
                else:
                    self.drop(exp)
            else:
                workspace.keep_commit(self.workdir, st["tag"], exp["number"], exp["commit"])
                self.resume(exp, rows)
        workspace.reset_to(self.workdir, self.best)
        self.save()

    def resume(self, exp, rows):
        mine = measurements.rows_of(rows, exp["number"])
        verdict = next((r for r in mine if r["status"] in ledger.VERDICTS), None)
        if verdict is not None:  # recorded; only the branch was not moved yet
            self.finish(exp, verdict["status"], measurements.number(verdict["val_bpb"]))
            return
        exp["phase"] = "measuring"
        runs = state.runs_of(exp)
        for run in runs:  # none runs now: each is run again when the judge asks for it again
            run.update(queued=True)
            run.pop("pgid", None)
        for run in list(runs):
            if any(r["commit"] == short(run["commit"]) and r["seed"] == str(run["seed"]) and
                   r["started"] == run["started"] for r in mine):
                runs.remove(run)
            elif run.get("attempts", 0) >= 2:
                result = runner.RunResult(status=ledger.CRASH, seconds=0.0,
                                          reason="the loop was killed twice while this ran")
                if self.record(exp, run, self.job(exp, run), measure(run), result, time.time()):
                    return

    # --- one experiment ------------------------------------------------------------------------

    def propose(self, agent, rows) -> str:
        """Ask the agent, apply and guard its proposal, commit it. Returns "done" (nothing more to
        propose), "stopped" (a signal came while the agent worked), "rejected" (recorded) or "measuring"."""
        parent = self.best
        exp = dict(number=self.next_number(rows), phase="proposing", parent=parent, commit=parent, runs=[])
        self.in_flight.append(exp)
        self.save()
        t0 = time.time()
        context = proposals.context(self.workdir, rows, self.manifest, self.policy.seed, parent)
        context.in_flight = [dict(number=e["number"], description=e.get("description", ""), agent=e.get("agent", ""),
                                  status="running") for e in self.in_flight if e is not exp]
        self.asking = True  # a signal now stops the agent at once (it may be waiting on the network)
        try:
            proposal = agent.propose(context)
            self.asking = False
        except Stopped:
            self.asking = False
            self.drop(exp)
            return "stopped"
        except BaseException:  # the flag goes down whatever stops the agent
            self.asking = False
            raise
        if proposal is None:
            self.drop(exp)
            return "done"
        t1 = time.time()
        exp.update(description=proposals.describe(proposal), agent=agent.name, started=now(),
                   agent_seconds=t1 - t0, usage=dict(proposal.usage))
        reason = proposals.check(self.workdir, proposal, self.protected, parent)
        fault_point(self.workdir, "proposed")
        if reason:
            workspace.reset_to(self.workdir, parent)
            self.recorder.rejected(exp, reason, time.time() - t1)
            self.in_flight.remove(exp)
            self.save()
            return "rejected"
        exp["phase"] = "committing"
        self.save()
        commit = workspace.commit_train(self.workdir, exp["description"])
        fault_point(self.workdir, "committed")
        exp["prep_seconds"] = time.time() - t1
        self.measuring(exp, commit)
        return "measuring"

    def measuring(self, exp, commit):
        """The experiment's commit recorded and kept by a ref; the branch back at the best."""
        exp.update(phase="measuring", commit=commit,
                   lines=list(workspace.line_changes(self.workdir, exp["parent"], commit)))
        self.save()
        workspace.keep_commit(self.workdir, self.state["tag"], exp["number"], commit)
        workspace.reset_to(self.workdir, self.best)

    def begin(self, description: str, agent: str, kind: str = "baseline", repeats: int = 0):
        """An experiment with no proposal: the baseline (the best commit as it is) or a noise measurement."""
        best = self.best
        exp = dict(number=self.next_number(self.rows()), phase="measuring", parent=best, commit=best,
                   description=description, agent=agent, started=now(), kind=kind, repeats=repeats, runs=[],
                   lines=[0, 0])
        self.in_flight.append(exp)
        self.save()
        return exp

    def job(self, exp, run) -> Job:
        return Job(experiment=exp["number"], commit=run["commit"], seed=run["seed"], role=run["role"],
                   log=logs.log_path(self.workdir, exp["number"], run["commit"], run["seed"]))

    def decide(self, exp, rows, run: judge.Run | None = None, pending: tuple[Measure, ...] = ()) \
            -> Measure | Verdict | None:
        """The judge's next step for `exp` from the ledger's rows (and a run not recorded yet), its
        runs in flight `pending`; None: wait (for those, or for the baseline's verdict), or, for a
        noise measurement with none in flight, it is complete."""
        runs, view = measurements.runs(rows) + ([run] if run else []), self.view(exp)
        if exp.get("kind") == "noise":  # the best at new seeds, `repeats` times, one after another
            if pending or sum(1 for r in runs if r.experiment == exp["number"]) >= exp["repeats"]:
                return None
            return Measure("best", judge.new_seed(runs, view, self.policy), "repeat")
        experiments = [e for e in measurements.experiments(rows) if e.number != view.number] + [view]
        return judge.decide(runs, view, judge.estimate_noise(runs, experiments), self.policy, pending,
                            baseline_pending=self.awaits_baseline(exp))

    def awaits_baseline(self, exp) -> bool:
        """Whether `exp` was proposed on the baseline while the baseline is still being measured."""
        base = self.baseline_in_flight
        return base is not None and base is not exp and base["commit"] == exp["parent"]

    @property
    def baseline_in_flight(self) -> dict | None:
        return next((e for e in self.in_flight if e.get("kind") == "baseline"), None)

    def step(self, exp) -> bool:
        """One run of the experiment (or its verdict), here and now. True when the experiment has ended."""
        planned = self.next_run(exp)
        if not isinstance(planned, tuple):
            return bool(planned)
        run, job, decision = planned
        return self.ran(exp, run, job, decision, self.executor.run(job, **self.callbacks(exp, run, job)))

    def next_run(self, exp, busy: frozenset = frozenset()) -> tuple[dict, Job, Measure] | bool | None:
        """The experiment's next run as (run, job, decision), the run noted in its state; True when
        the judge ended it instead (recorded), False when it goes on without a run (replayed on the
        best), None when it waits: for its own runs in flight, or for a run that is in flight for
        another experiment (`busy`: (commit, seed) pairs)."""
        rows = self.rows()
        waits_on = pending(exp)
        decision = self.decide(exp, rows, pending=waits_on)
        if decision is None and (waits_on or exp.get("kind") != "noise"):
            return None
        if decision is None:  # a noise measurement that is complete
            self.display.say(f"   noise: {measurements.noise(self.rows()).describe()}")
            self.finish(exp, None, None)
            return True
        if isinstance(decision, Verdict):
            if self.stale(exp, decision):
                return self.replay(exp)
            era = judge.current_era(measurements.runs(rows))
            row = self.recorder.verdict_only(exp, decision, era, measurements.noise(rows))
            self.recorder.say_verdict(exp, row, decision, measurements.noise(rows))
            fault_point(self.workdir, "recorded", "verdict")
            self.finish(exp, decision.status, decision.mean)
            return True
        commit = exp["commit"] if decision.target == "candidate" else exp["parent"]
        if (commit, decision.seed) in busy:
            return None
        runs = state.runs_of(exp)
        previous = next((r for r in runs if r.get("queued") and (r["commit"], r["seed"]) == (commit, decision.seed)),
                        None)  # left by a loop that stopped while it ran: its attempts count on
        if previous is not None:
            runs.remove(previous)
        run = dict(target=decision.target, commit=commit, seed=decision.seed, role=decision.role,
                   attempts=(previous or {}).get("attempts", 0) + 1, started=now())
        runs.append(run)
        self.save()
        return run, self.job(exp, run), decision

    def callbacks(self, exp, run, job) -> dict:
        def on_start(pgid, worker=None):
            self.started.put((run, pgid, worker))
            if threading.current_thread() is threading.main_thread():
                self.note_started()
        return dict(on_start=on_start, on_progress=self.watcher(exp, run, job, self.rows()),
                    should_stop=lambda: self.stopping or run.get("cancelled", False))

    def note_started(self):
        """What the run threads reported at their starts (process group, worker), into the state."""
        changed = False
        while not self.started.empty():
            run, pgid, worker = self.started.get()
            run.update(pgid=pgid, **({"worker": worker} if worker else {}))
            changed = True
        if changed:
            self.save()

    def ran(self, exp, run, job, decision: Measure, result) -> bool:
        """A finished run recorded (True when it ended the experiment); interrupted: kept for next time;
        one whose experiment ended while it ran (another of its runs failed) is dropped."""
        self.note_started()
        run.pop("pgid", None)
        if not any(e is exp for e in self.in_flight):
            self.display.say(f"   #{exp['number']} {job.role} s{job.seed} stopped: its experiment ended while it ran")
            return False
        if result.status == runner.INTERRUPTED:
            self.interrupt(exp, run)
            return False
        return self.record(exp, run, job, decision, result, time.time())

    def stale(self, exp, verdict) -> bool:
        return verdict is not None and verdict.status == ledger.KEEP and exp["parent"] != self.best

    def replay(self, exp) -> bool:
        """A candidate better than the best it was tried on, which is no longer the best: its change
        applied to the best and measured again there, as a new commit of the same experiment; discarded
        with the reason when it no longer applies. False (it goes on), or True (it ended)."""
        old = short(exp["parent"])
        why = workspace.replay(self.workdir, exp["parent"], exp["commit"], self.best)
        if why is not None:
            verdict = Verdict(ledger.DISCARD, reason=f"better than {old}, but its change no longer applies on "
                                                     f"the new best {short(self.best)}: {why}")
            rows = self.rows()
            row = self.recorder.verdict_only(exp, verdict, judge.current_era(measurements.runs(rows)),
                                             measurements.noise(rows))
            self.recorder.say_verdict(exp, row, verdict, measurements.noise(rows))
            self.finish(exp, ledger.DISCARD, None)
            return True
        commit = workspace.commit_train(self.workdir, exp["description"])
        exp["parent"] = self.best
        self.measuring(exp, commit)
        self.display.say(f"   #{exp['number']} was better than {old}, which is no longer the best: its change, "
                         f"replayed on {short(self.best)} as {short(commit)}, is measured again there")
        return False

    def watcher(self, exp, run, job, rows):
        """The progress callback of a run: the live line, and early abort for a candidate's first run."""
        label = f"#{exp['number']} {job.role} s{job.seed}"
        points, speeds, reference, spread, best_speeds = [], [], {}, [], []
        if job.role == "candidate" and self.policy.prune and not self.policy.single \
                and not self.awaits_baseline(exp):  # no curve of the best to hold it to yet
            era = judge.current_era(measurements.runs(rows))
            reference, spread, best_speeds = logs.era_curves(self.workdir, rows, exp["parent"], era)

        def on_progress(p):
            self.display.progress(label, p)
            if not reference:
                return None
            points.append((p["progress"], p["loss"]))
            speeds.append(p["tokens_per_s"])
            now = runner.reached(p, self.budget)  # the model of this loss has trained until now
            args = (points + [(now, p["loss"])] if now > p["progress"] else points, reference, spread,
                    job.seed, self.policy, stats.median(speeds), judge.speeds_until(best_speeds, now))
            why = judge.prune(*args)
            if why is None and (why := judge.too_slow(*args)):
                run["stopped"] = True  # recorded as a stop, not a verdict: a control comes first
            return why
        return on_progress

    def record(self, exp, run: dict, job, decision: Measure, result, finished: float) -> bool:
        """The finished run's row, with the verdict when it ends the experiment."""
        rows = self.rows()
        why = judge.overrun(result.seconds, rows, self.budget, self.policy) \
            if result.status == runner.OK and job.role != "baseline" else None
        if why:  # its number stays in the log and the reason; it counts for nothing
            result.status, result.reason, result.val_bpb = ledger.OVERRUN, f"{why}; it scored {result.val_bpb:.6f}", None
        runs, noise = measurements.runs(rows), measurements.noise(rows)
        era = judge.current_era(runs)
        measured = judge.Run(exp["number"], short(job.commit), job.seed, job.role, era, result.val_bpb,
                             tokens_per_s(result.summary))
        verdict, status, reason, note = None, ledger.RUN, result.reason, ""
        if decision.target == "candidate" and exp.get("kind") != "noise":
            if result.status == ledger.PRUNED and run.get("stopped"):
                status = ledger.STOPPED
            elif result.status != runner.OK:
                status = result.status
            else:
                after = self.decide(exp, rows, measured, pending(exp, but=run))
                if isinstance(after, Verdict) and not self.stale(exp, after):
                    verdict, status = after, after.status
        elif result.status != runner.OK:
            reason = f"{result.status}: {result.reason}"
        elif exp.get("kind") != "baseline":
            why = judge.drift(measured, runs, noise)
            if why:
                era += 1
                reason = f"drift: {why}; measurements before this are set aside and the best is measured again"
                note = f"\n   drift seen: {why}: the best is measured again before anything is compared with it"
        row = self.recorder.run(exp, job, result, era, noise, status, verdict, reason, started=run["started"],
                                lab_seconds=time.time() - finished + exp.pop("prep_seconds", 0.0))
        state.runs_of(exp).remove(run)
        self.recorder.say_run(job, result, row, note)
        fault_point(self.workdir, "recorded", job.role, status)
        if status in ledger.VERDICTS:
            self.recorder.say_verdict(exp, row, verdict, noise)
            self.finish(exp, status, verdict.mean if verdict else None)
            return True
        if result.status == ledger.REJECTED:
            workspace.reset_to(self.workdir, workspace.head(self.workdir))  # put back what the run touched
        self.save()
        return False

    def finish(self, exp, status, val_bpb):
        st = self.state
        if status == ledger.KEEP:  # its parent is the best (else it was replayed): the branch moves on
            st["best_commit"], st["best_val_bpb"] = exp["commit"], val_bpb
        for run in state.running(exp):  # a baseline seed failed while the others ran: they are not needed
            run["cancelled"] = True
        workspace.reset_to(self.workdir, self.best)
        self.in_flight.remove(exp)
        self.save()

    def interrupt(self, exp, run):
        """Stopped by a signal: the branch goes back to the best commit, and the experiment is
        remembered so that the next `autoresearch run` goes on with it."""
        exp["phase"] = "interrupted"
        run.update(attempts=run["attempts"] - 1, queued=True)
        workspace.attach(self.workdir, self.state["branch"])
        workspace.reset_to(self.workdir, self.best)
        self.save()
        self.display.say(f"   stopped; #{exp['number']}'s unfinished {run['role']} run at s{run['seed']} will run "
                         f"again on the next `autoresearch run`")

    # --- the loop ------------------------------------------------------------------------------

    @contextmanager
    def session(self):
        """The run's lock, clean stops on SIGINT/SIGTERM, the executor's lifetime and recovery."""
        lock = state.RunLock(self.workdir)
        if not lock.acquire(wait=1.0):
            raise LabError(f"a loop is already running on {self.workdir} (pid {state.is_running(self.workdir)})")
        try:
            self.executor = self.executor or self.make_executor()
            if self.slots > 1:
                self.display.say(f"   {self.slots} workers on Ray")
        except BaseException:
            lock.release()
            raise
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def stop(signum, frame):
            if self.stopping:  # a second Ctrl-C while stopping: let the default handler act
                signal.signal(signum, previous[signum])
            self.stopping = True
            if self.asking:
                raise Stopped()

        for s in previous:
            signal.signal(s, stop)
        try:
            self.executor.start_ahead()  # its imports overlap the device probe's
            self.check_environment()
            self.recover()
            yield
        finally:
            self.executor.close()
            for exp in list(self.in_flight):
                if exp["phase"] == "proposing":
                    self.drop(exp)
            for s, handler in previous.items():
                signal.signal(s, handler)
            lock.release()

    def next_experiment(self, agent) -> str:
        """Put the next experiment in flight: the baseline first, else the agent's proposal.
        Returns "measuring", "rejected", "done", "stopped" or "unavailable"."""
        rows = self.rows()
        if not measurements.verdicts(rows) and self.baseline_in_flight is None:
            self.begin("baseline", "baseline")
            return "measuring"
        if agent is None:
            return "done"
        self.executor.start_ahead()  # while the agent works
        try:
            return self.propose(agent, rows)
        except AgentUnavailable as e:
            for exp in [x for x in self.in_flight if x["phase"] == "proposing"]:
                self.drop(exp)
            self.display.say(f"   the agent is unavailable ({e}); pausing {self.pause:.0f}s")
            self.wait(self.pause)
            return "unavailable"

    def run(self, agent, max_experiments: int | None = None, max_hours: float | None = None,
            max_cost: float | None = None) -> int:
        """Run experiments until the agent is done, a limit is reached or a signal arrives, with up to
        `executor.slots` runs in flight (the Loop). Returns the number of experiments ended."""
        # the executor is made as the session takes the run's lock: the pool is sized after it
        with self.session(), ThreadPoolExecutor(self.slots, thread_name_prefix="run") as pool:
            return Loop(self, pool, agent, max_experiments, max_hours, max_cost).run()

    def announce(self, exp, note=""):
        self.display.say(f"── #{exp['number']} {exp.get('agent', '')}: {exp.get('description', '')}{note}")

    def interrupt_waiting(self, exp):
        exp["phase"] = "interrupted"
        workspace.reset_to(self.workdir, self.best)
        self.save()

    def measure_noise(self, repeats: int) -> int:
        """`autoresearch noise`: the best at `repeats` new seeds (after the baseline, if it has not run)."""
        with self.session():
            while not self.stopping and self.in_flight:
                if self.step(self.in_flight[0]):
                    pass
            if not self.stopping and not measurements.verdicts(self.rows()):
                self.announce(self.begin("baseline", "baseline"))
                while not self.stopping and self.in_flight:
                    self.step(self.in_flight[0])
            if not self.stopping:
                exp = self.begin(f"noise: the best at {repeats} more seeds", "noise", kind="noise", repeats=repeats)
                self.announce(exp)
                while not self.stopping and exp in self.in_flight:
                    self.step(exp)
            return repeats
