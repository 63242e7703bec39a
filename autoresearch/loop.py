"""The Loop: one `autoresearch run`, driving the Scheduler with up to `slots` runs in flight.

The Scheduler is the state machine (what an experiment runs next, what a finished run records); the
Loop keeps the executor's slots busy with the experiments' next runs, puts a new experiment in
flight (the baseline first, then the agent's proposals, beside the baseline's seeds too) while a
slot is free and the limits allow, and stops at a limit, at a signal, or when the agent has nothing
more and nothing is in flight. The pool's threads only wait on the executor; this thread alone
calls the Scheduler, so only it writes the ledger, the state and git.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait as wait_for

from . import measurements
from .executor import Job
from .judge import Measure


def countdown(elapsed: float, ended: int, max_experiments: int | None, max_hours: float | None,
              others: int = 0) -> str:
    """" (experiment k of n, about m min left)" for a loop given a number of experiments, k counting
    the `others` in flight beside this one (several workers): the time left from the pace so far.
    Where the hours allowed end first, n is the number the pace lets start before then ("of about
    n"). Empty without a number."""
    if max_experiments is None:
        return ""
    number, total, left = ended + others + 1, f"{max_experiments}", None
    if ended:
        pace = elapsed / ended
        left = pace * (max_experiments - ended)
        allowed = None if max_hours is None else max(0.0, max_hours * 3600 - elapsed)
        if allowed is not None and allowed < left:
            left = allowed
            total = f"about {min(max_experiments, max(number, ended + math.ceil(allowed / pace)))}"
    text = f" (experiment {number} of {total}"
    return text + (f", about {max(1, round(left / 60))} min left)" if left is not None else ")")


class Loop:
    def __init__(self, lab, pool, agent, max_experiments: int | None = None, max_hours: float | None = None,
                 max_cost: float | None = None):
        self.lab, self.pool, self.agent, self.slots = lab, pool, agent, lab.slots
        self.max_experiments, self.max_hours, self.max_cost = max_experiments, max_hours, max_cost
        self.start, self.ended, self.done = time.time(), 0, agent is None
        self.running: dict[Future, tuple[dict, dict, Job, Measure]] = {}  # -> (experiment, run, job, decision)
        self.waiting: set[int] = set()  # experiments whose next run waits for something to end
        self.baseline_judged = False

    def run(self) -> int:
        """Until the agent is done, a limit is reached or a signal arrives. Returns the number of
        experiments ended (a verdict recorded)."""
        lab = self.lab
        for exp in lab.in_flight:  # resumed
            lab.announce(exp, " (resumed)")
        while True:
            lab.note_started()
            for future in [f for f in self.running if f.done()]:
                self.ended += lab.ran(*self.running.pop(future), future.result())
                self.waiting.clear()  # what the waiting experiments wait for may have come
            if lab.stopping or self.limit_reached():
                if not self.running:
                    self.wind_down()
                    break
            else:
                settled = self.fill_slots()
                if settled and self.room_for_experiment():
                    self.next_experiment()
                    continue
                if settled and not self.running and not lab.in_flight:
                    break
            if self.running:
                wait_for(list(self.running), timeout=0.2, return_when=FIRST_COMPLETED)
        return self.ended

    def fill_slots(self) -> bool:
        """The experiments' next runs submitted while a slot is free. False when an experiment's state
        moved on without a run (a verdict, a replay), so that the loop looks again before proposing."""
        lab = self.lab
        busy = {(job.commit, job.seed) for _, _, job, _ in self.running.values()}
        for exp in list(lab.in_flight):
            while len(self.running) < self.slots and exp["number"] not in self.waiting:
                planned = lab.next_run(exp, frozenset(busy))
                if planned is None:  # until a run in flight ends
                    self.waiting.add(exp["number"])
                elif not isinstance(planned, tuple):
                    self.ended += planned is True
                    self.waiting.clear()  # an experiment waiting for this one's verdict goes on
                    return False
                else:
                    run, job, _ = planned
                    future = self.pool.submit(lab.executor.run, job, **lab.callbacks(exp, run, job))
                    self.running[future] = (exp, *planned)
                    busy.add((job.commit, job.seed))
        return True

    def room_for_experiment(self) -> bool:
        """Whether to put another experiment in flight now: the baseline first (agent or not), then the
        agent's proposals, beside the baseline's seeds too, while it has more, a slot is free and
        max_experiments allows."""
        lab = self.lab
        if len(lab.in_flight) >= self.slots or len(self.running) >= self.slots or (self.done and lab.in_flight):
            return False
        if self.max_experiments is not None and self.ended + len(lab.in_flight) >= self.max_experiments:
            return False
        if not self.baseline_judged:  # once the baseline's verdict is in, it stays
            self.baseline_judged = bool(measurements.verdicts(lab.rows()))
        return not self.done if self.baseline_judged or lab.baseline_in_flight else not lab.in_flight

    def next_experiment(self):
        lab, agent = self.lab, self.agent
        outcome = lab.next_experiment(agent)
        if outcome == "done":
            self.done = True
            if agent is not None:
                lab.display.say(f"the agent {agent.name} has nothing more to propose")
        self.ended += outcome == "rejected"
        if outcome == "measuring":
            lab.announce(lab.in_flight[-1], countdown(time.time() - self.start, self.ended, self.max_experiments,
                                                       self.max_hours, len(lab.in_flight) - 1))

    def limit_reached(self) -> bool:
        return (self.max_hours is not None and time.time() - self.start > self.max_hours * 3600
                or self.max_cost is not None and self.lab.spent() >= self.max_cost
                or self.max_experiments is not None and self.ended >= self.max_experiments)

    def wind_down(self):
        """Nothing runs any more: a stop leaves the waiting experiments interrupted; a spent budget says so."""
        lab = self.lab
        if lab.stopping:
            for exp in lab.in_flight:
                lab.interrupt_waiting(exp)
        elif self.max_cost is not None and lab.spent() >= self.max_cost:
            lab.display.say(f"spent ${lab.spent():.2f} of the ${self.max_cost:.2f} allowed: stopping")
