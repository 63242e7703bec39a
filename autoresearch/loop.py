"""The experiment loop: propose -> guard -> commit -> run -> judge -> keep or reset -> one ledger row.

Crash safety comes from ordering. The state file says which phase the experiment in flight is in
before each step that changes git or the ledger, so a loop killed anywhere restarts like this:

- proposing:   the proposal never ran; the tree is reset to the best commit, nothing is recorded.
- committing:  if the commit was made, it is run now; else as above.
- running:     if the ledger already holds the row, only the branch is put right; else the commit is
               run again (twice interrupted: recorded once as a crash).
- interrupted: (SIGINT/SIGTERM) the commit is run again.

The branch tip is the best commit whenever no experiment is in flight.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import guard, harness, ledger, runner, state, workspace
from .agents import AgentUnavailable, Context, Proposal
from .workspace import LabError

DEFAULT_LAMBDA = 0.001 / 20  # bpb per net added line: 0.001 bpb is not worth 20 lines
DEFAULT_SEED = 42
USAGE = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd")


@dataclass
class Policy:
    lam: float = DEFAULT_LAMBDA   # complexity penalty per net added line of train.py
    margin: float = 0.0           # how much better than the best a result must be to be kept


def judge(best_val_bpb: float | None, val_bpb: float, added: int, removed: int, policy: Policy) -> tuple[str, float]:
    """(keep|discard, penalized score). The score is val_bpb plus the penalty of this change's net
    lines against the commit it was tried on; it must beat the best val_bpb by the margin."""
    score = val_bpb + policy.lam * (added - removed)
    if best_val_bpb is None:
        return "keep", score
    return ("keep" if score < best_val_bpb - policy.margin else "discard"), score


def fault_point(workdir: Path, name: str) -> None:
    """Fault injection for the crash-safety tests: with AUTORESEARCH_FAULT=name the loop marks the
    point in .lab/ and waits there to be killed."""
    if os.environ.get("AUTORESEARCH_FAULT") == name:
        (Path(workdir) / ".lab" / f"fault-{name}").touch()
        time.sleep(600)


def short(commit: str | None) -> str:
    return commit[:7] if commit else "none"


def init_run(root: Path, tag: str, cache=None) -> Path:
    """Create the run's branch and worktree and its state; nothing runs yet."""
    manifest = harness.read_manifest(cache)
    workdir = workspace.create_worktree(root, tag)
    base = workspace.head(workdir)
    state.save(workdir, dict(
        tag=tag, branch=f"autoresearch/{tag}", root=str(root), workdir=str(workdir),
        cache=str(harness.cache_dir(cache)), profile=manifest["profile"], base_commit=base,
        best_commit=base, best_val_bpb=None, protected=workspace.protected_hashes(workdir),
        current=None, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
    ))
    return workdir


class Display:
    """One line per finished experiment; a live status line while one runs, when on a terminal."""

    def __init__(self, stream=None, budget=0):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.budget = budget

    def say(self, text):
        if self.live:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def progress(self, number, p):
        if self.live:
            self.stream.write(f"\r\033[K   #{number} {p['progress'] * self.budget:5.0f}s / {self.budget}s | step "
                              f"{p['step']} | loss {p['loss']:.4f} | {p['tokens_per_s']:,.0f} tok/s")
            self.stream.flush()


class Lab:
    def __init__(self, workdir: Path, policy: Policy | None = None, seed: int = DEFAULT_SEED,
                 allowance: float | None = None, display: Display | None = None, pause: float = 300.0):
        self.workdir = Path(workdir)
        self.state = state.load(self.workdir)
        self.policy = policy or Policy()
        self.seed = seed
        self.results = self.workdir / "results.tsv"
        self.manifest = harness.read_manifest(self.state["cache"])
        self.budget = self.manifest["constants"]["TIME_BUDGET"]
        # a generous start-up allowance: compilation, data loading, evaluation
        self.timeout = self.budget + (allowance if allowance is not None else max(180.0, self.budget))
        self.display = display or Display(budget=self.budget)
        self.stopping = False
        self.pause = pause  # seconds to wait when the agent's service is down, before asking again
        self.env = {"AUTORESEARCH_CACHE": self.state["cache"], "AUTORESEARCH_SEED": str(seed),
                    "TORCHINDUCTOR_CACHE_DIR": str(harness.compile_cache_dir())}
        self.env.update(harness.bytecode_env("torch"))  # else each experiment compiles torch's source again
        self.device = None
        # the next experiment's Python, started while the agent works (AUTORESEARCH_PRESTART=0: never)
        self.prestart = os.environ.get("AUTORESEARCH_PRESTART", "1") != "0"
        self.prestarted: runner.Prestarted | None = None

    # --- helpers -------------------------------------------------------------------------------

    def save(self):
        state.save(self.workdir, self.state)

    def rows(self):
        return ledger.read_rows(self.results)

    def fingerprint(self):
        m = self.manifest
        return dict(device=self.device, profile=m["profile"], data_hash=m["data_hash"][:12],
                    tokenizer_hash=m["tokenizer_hash"][:12], time_budget=str(m["constants"]["TIME_BUDGET"]))

    def record(self, **row):
        ledger.append(self.results, {**self.fingerprint(), "seed": self.seed, **row})

    def context(self, rows) -> Context:
        best = next((r for r in reversed(rows) if r["status"] == "keep"), None)
        last_crash = ""
        if rows and rows[-1]["status"] == "crash":
            log = self.log_path(len(rows), rows[-1]["commit"])
            if log.exists():
                last_crash = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        program = self.workdir / "program.md"
        return Context(train_py=(self.workdir / workspace.TRAIN).read_text(),
                       program_md=program.read_text() if program.exists() else "", history=rows, best=best,
                       workdir=self.workdir, profile=self.manifest["profile"], seed=self.seed, last_crash=last_crash,
                       max_seq_len=self.manifest["constants"]["MAX_SEQ_LEN"])

    def log_path(self, number, commit):
        return self.workdir / "logs" / f"{number:04d}-{short(commit)}.log"

    # --- recovery ------------------------------------------------------------------------------

    def recover(self):
        """Put git, the ledger and the state back in agreement after whatever stopped the last loop."""
        st = self.state
        if st.get("child_pgid"):
            runner.kill_group(st["child_pgid"])  # a train.py orphaned by a killed loop
            st["child_pgid"] = None
        cur = st.get("current")
        if cur is None:
            workspace.reset_to(self.workdir, st["best_commit"])
        elif cur["phase"] == "proposing":
            workspace.reset_to(self.workdir, cur["parent"])
            st["current"] = None
        elif cur["phase"] == "committing":
            tip = workspace.head(self.workdir)
            made = tip != cur["parent"] and workspace.git(self.workdir, "rev-parse", "HEAD^") == cur["parent"]
            if made:
                cur.update(phase="running", commit=tip, attempts=0)
                workspace.reset_to(self.workdir, tip)
            else:
                workspace.reset_to(self.workdir, cur["parent"])
                st["current"] = None
        else:  # running or interrupted
            row = next((r for r in self.rows() if r["commit"] == short(cur["commit"])
                        and r["started"] == cur["started"]), None)
            if row is not None:
                self.finish_branch(cur, row["status"], float(row["val_bpb"]) if row["val_bpb"] else None)
            elif cur["phase"] == "running" and cur.get("attempts", 0) >= 2:
                self.write_row(cur, runner.RunResult(status="crash", seconds=0.0,
                                                     reason="the loop was killed twice while this ran"), time.time())
            else:
                cur["phase"] = "running"
                workspace.reset_to(self.workdir, cur["commit"])
        self.save()

    def finish_branch(self, cur, status, val_bpb):
        if status == "keep":
            self.state["best_commit"], self.state["best_val_bpb"] = cur["commit"], val_bpb
            workspace.reset_to(self.workdir, cur["commit"])
        else:
            workspace.reset_to(self.workdir, cur["parent"])
        self.state["current"] = None

    # --- one experiment ------------------------------------------------------------------------

    def propose(self, agent, rows) -> bool:
        """Ask the agent, apply and guard its proposal, commit it. False when the agent is done."""
        st = self.state
        parent = st["best_commit"]
        st["current"] = dict(phase="proposing", parent=parent)
        self.save()
        t0 = time.time()
        proposal = agent.propose(self.context(rows))
        agent_seconds = time.time() - t0
        usage = {k: v for k, v in (getattr(agent, "last_usage", None) or {}).items() if k in USAGE}
        if proposal is None:
            st["current"] = None
            self.save()
            return False
        t1 = time.time()
        description = " ".join(proposal.description.split())[:300] or "(no description)"
        parent_text = workspace.file_at(self.workdir, parent)
        reason = proposal.rejection or self.apply(proposal)
        fault_point(self.workdir, "proposed")
        reason = reason or guard.check_proposal(self.workdir, st["protected"], parent_text)
        started = time.strftime("%Y-%m-%dT%H:%M:%S")
        if reason:
            workspace.reset_to(self.workdir, parent)
            st["current"] = None
            self.record(commit="none", status="rejected", description=description, parent=short(parent),
                        agent=agent.name, started=started, finished=started, reason=reason,
                        lab_seconds=time.time() - t1, **usage)
            self.save()
            self.display.say(f"   rejected  {description}: {reason}")
            return True
        st["current"] = dict(phase="committing", parent=parent, description=description, agent=agent.name,
                             started=started, agent_seconds=agent_seconds, attempts=0, usage=usage)
        self.save()
        commit = workspace.commit_train(self.workdir, description)
        fault_point(self.workdir, "committed")
        st["current"].update(phase="running", commit=commit, prep_seconds=time.time() - t1)
        self.save()
        return True

    def apply(self, proposal: Proposal) -> str | None:
        train = self.workdir / workspace.TRAIN
        if proposal.train_py is not None:
            train.write_text(proposal.train_py)
            return None
        if proposal.diff is not None:
            patch = self.workdir / ".lab" / "proposal.diff"
            patch.write_text(proposal.diff if proposal.diff.endswith("\n") else proposal.diff + "\n")
            try:
                workspace.git(self.workdir, "apply", "--whitespace=nowarn", str(patch))
            except LabError as e:
                return "the diff does not apply: " + str(e).split(": ", 1)[-1][:200]
            return None
        return None  # an agent that edited the worktree itself

    def run_current(self, rows):
        st, cur = self.state, self.state["current"]
        number = len(rows) + 1
        cur["attempts"] = cur.get("attempts", 0) + 1
        cur["started"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.save()
        self.display.say(f"── #{number} {cur['agent']}: {cur['description']}")

        def on_start(pgid):
            st["child_pgid"] = pgid
            self.save()

        prestarted, self.prestarted = self.prestarted, None
        result = runner.run_training(
            self.workdir, self.log_path(number, cur["commit"]), self.workdir / ".lab" / "result.json", self.env,
            self.timeout, expect=dict(data_hash=self.manifest["data_hash"],
                                      eval_tokens=self.manifest["constants"]["EVAL_TOKENS"]),
            on_start=on_start, on_progress=lambda p: self.display.progress(number, p),
            should_stop=lambda: self.stopping, prestarted=prestarted)
        st["child_pgid"] = None
        if result.status == "interrupted":
            cur["attempts"] -= 1
            self.interrupt_current(number)
            return
        finished_training = time.time()
        reason = guard.check_protected(self.workdir, st["protected"])
        if reason:  # train.py touched the harness while it ran: the result cannot be trusted
            result.status, result.reason, result.val_bpb = "rejected", "while running: " + reason, None
        self.write_row(cur, result, finished_training)

    def interrupt_current(self, number):
        """Stopped by a signal: the branch goes back to the best commit, and the experiment is
        remembered so that the next `autoresearch run` runs it again."""
        self.state["current"]["phase"] = "interrupted"
        workspace.reset_to(self.workdir, self.state["current"]["parent"])
        self.save()
        self.display.say(f"   stopped; #{number} will run again on the next `autoresearch run`")

    def write_row(self, cur, result: runner.RunResult, finished_training: float):
        st = self.state
        added, removed = workspace.line_changes(self.workdir, cur["parent"], cur["commit"])
        s = result.summary
        status, score = result.status, None
        if status == "ok":
            status, score = judge(st["best_val_bpb"], result.val_bpb, added, removed, self.policy)
        peak = _number(s.get("peak_vram_mb"))
        row = dict(commit=short(cur["commit"]), val_bpb=result.val_bpb,
                   memory_gb=peak / 1024 if peak is not None else None, status=status,
                   description=cur["description"], parent=short(cur["parent"]), lines_added=added,
                   lines_removed=removed, score=score, training_seconds=s.get("training_seconds"),
                   total_seconds=s.get("total_seconds"), num_steps=s.get("num_steps"),
                   total_tokens_M=s.get("total_tokens_M"), mfu_percent=s.get("mfu_percent"),
                   peak_vram_mb=s.get("peak_vram_mb"), agent=cur["agent"], started=cur["started"],
                   finished=time.strftime("%Y-%m-%dT%H:%M:%S"), reason=result.reason, **cur.get("usage", {}))
        # the lab's own time for this experiment: guard and commit before, checks and judging after
        row["lab_seconds"] = cur.get("prep_seconds", 0.0) + time.time() - finished_training
        self.record(**row)
        fault_point(self.workdir, "recorded")
        best_before = st["best_val_bpb"]
        self.finish_branch(cur, status, result.val_bpb)
        self.save()
        if result.val_bpb is not None:
            delta = f" ({result.val_bpb - best_before:+.6f})" if best_before is not None else ""
            self.display.say(f"   {status:<8} val_bpb {result.val_bpb:.6f}{delta} | +{added}/-{removed} lines | "
                             f"{result.seconds:.0f}s")
        else:
            self.display.say(f"   {status:<8} {result.reason}")

    # --- the loop ------------------------------------------------------------------------------

    def check_environment(self):
        self.device = harness.probe_device(self.workdir, runner.scrubbed_env(self.env))
        if "PYTHONPYCACHEPREFIX" in self.env:
            self.display.say(f"note: torch's bytecode is not cached where this Python looks: experiments keep it in "
                             f"{self.env['PYTHONPYCACHEPREFIX']} (else each would compile torch's source again)")
        why = ledger.mismatch(self.rows(), self.fingerprint())
        if why:
            raise LabError(f"{self.results} was recorded elsewhere ({why}): its numbers are not comparable; "
                           f"start a new run with `autoresearch init --tag NEW`")

    def start_ahead(self):
        """The next experiment's Python, unless one is waiting already or AUTORESEARCH_PRESTART=0."""
        if self.prestart and self.prestarted is None:
            self.prestarted = runner.Prestarted(self.workdir, self.env)

    def spent(self) -> float:
        return sum(_number(r.get("cost_usd")) or 0.0 for r in self.rows())

    def wait(self, seconds: float):
        deadline = time.time() + seconds
        while not self.stopping and time.time() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.time())))

    def run(self, agent, max_experiments: int | None = None, max_hours: float | None = None,
            max_cost: float | None = None) -> int:
        """Run experiments until the agent is done, a limit is reached or a signal arrives.
        Returns the number of experiments recorded by this call."""
        lock = state.RunLock(self.workdir)
        if not lock.acquire(wait=1.0):
            raise LabError(f"a loop is already running on {self.workdir} (pid {state.is_running(self.workdir)})")
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def stop(signum, frame):
            if self.stopping:  # a second Ctrl-C while stopping: let the default handler act
                signal.signal(signum, previous[signum])
            self.stopping = True

        for s in previous:
            signal.signal(s, stop)
        try:
            self.start_ahead()  # its imports overlap the device probe's
            self.check_environment()
            self.recover()
            start, recorded = time.time(), 0
            while not self.stopping:
                if max_experiments is not None and recorded >= max_experiments:
                    break
                if max_hours is not None and time.time() - start > max_hours * 3600:
                    break
                if max_cost is not None and self.spent() >= max_cost:
                    self.display.say(f"spent ${self.spent():.2f} of the ${max_cost:.2f} allowed: stopping")
                    break
                rows = self.rows()
                cur = self.state.get("current")
                if cur is None and not rows:  # the first experiment: train.py as it is
                    base = self.state["best_commit"]
                    self.state["current"] = dict(phase="running", parent=base, commit=base, description="baseline",
                                                 agent="baseline", attempts=0)
                    self.save()
                elif cur is None:
                    self.start_ahead()  # while the agent works
                    try:
                        proposed = self.propose(agent, rows)
                    except AgentUnavailable as e:
                        workspace.reset_to(self.workdir, self.state["best_commit"])
                        self.state["current"] = None
                        self.save()
                        self.display.say(f"   the agent is unavailable ({e}); pausing {self.pause:.0f}s")
                        self.wait(self.pause)
                        continue
                    if not proposed:
                        self.display.say(f"the agent {agent.name} has nothing more to propose")
                        break
                    if self.state["current"] is None:  # rejected: recorded already
                        recorded += 1
                        continue
                if self.stopping:
                    self.interrupt_current(len(rows) + 1)
                    break
                self.run_current(rows)
                if self.state.get("current") is None:
                    recorded += 1
            return recorded
        finally:
            if self.prestarted is not None:
                self.prestarted.close()
                self.prestarted = None
            if self.state.get("current") and self.state["current"]["phase"] in ("proposing",):
                workspace.reset_to(self.workdir, self.state["current"]["parent"])
                self.state["current"] = None
                self.save()
            for s, handler in previous.items():
                signal.signal(s, handler)
            lock.release()


def _number(value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
