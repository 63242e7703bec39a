"""The Recorder: one ledger row per run (and the verdict on the row that ends an experiment), and
the lines a person watching the loop reads.

Every row carries where it was measured (device, profile, data and tokenizer hashes, budget), so a
ledger is never silently mixed with numbers from elsewhere.
"""
from __future__ import annotations

import sys
import time

from . import ledger, runner
from .judge import Noise, Policy, Verdict
from .measurements import number
from .workspace import LabError


def short(commit: str | None) -> str:
    return commit[:7] if commit else "none"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class Display:
    """One line per run and per verdict; a live status line while a run trains, on a terminal."""

    def __init__(self, stream=None, budget=0):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.budget = budget

    def say(self, text):
        if self.live:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def progress(self, label, p):
        if self.live:
            spent = runner.reached(p, self.budget) * self.budget
            self.stream.write(f"\r\033[K   {label} {spent:5.0f}s / {self.budget}s | step {p['step']} | "
                              f"loss {p['loss']:.4f} | {p['tokens_per_s']:,.0f} tok/s")
            self.stream.flush()


def tokens_per_s(summary: dict) -> float | None:
    """Steady training throughput from the summary block (or its tokens over its training time)."""
    speed = number(summary.get("tokens_per_s"))
    if speed is None:
        tokens, seconds = number(summary.get("total_tokens_M")), number(summary.get("training_seconds"))
        speed = tokens * 1e6 / seconds if tokens and seconds else None
    return speed


def interval(verdict: Verdict) -> str:
    c = verdict.comparison
    if c.diff is None:
        return ""
    if c.low is None:
        return f" | Δ {c.diff:+.4f} bpb"
    return f" | Δ {c.diff:+.4f} bpb [{c.low:+.4f}, {c.high:+.4f}]"


class Recorder:
    def __init__(self, results, manifest: dict, policy: Policy, display: Display):
        self.results, self.manifest, self.policy, self.display = results, manifest, policy, display
        self.device, self.sandbox = None, None

    def fingerprint(self) -> dict:
        m = self.manifest
        return dict(device=self.device, sandbox=self.sandbox, profile=m["profile"], data_hash=m["data_hash"][:12],
                    tokenizer_hash=m["tokenizer_hash"][:12], time_budget=str(m["constants"]["TIME_BUDGET"]),
                    policy=self.policy.name)

    def check(self) -> None:
        """That the ledger takes this loop's rows: written by this version, here (device, data, budget)."""
        columns = ledger.header(self.results)
        if columns and not set(ledger.RUN_COLUMNS) <= set(columns):
            raise LabError(f"{self.results} was written by an older version of the lab (one row per experiment): "
                           f"start a new run with `autoresearch init --tag NEW`")
        why = ledger.mismatch(ledger.read_rows(self.results), self.fingerprint())
        if why:
            raise LabError(f"{self.results} was recorded elsewhere ({why}): its numbers are not comparable; "
                           f"start a new run with `autoresearch init --tag NEW`")

    def append(self, **row) -> None:
        ledger.append(self.results, {**self.fingerprint(), **row})

    def experiment_columns(self, exp: dict) -> dict:
        return dict(experiment=exp["number"], description=exp.get("description", ""), parent=short(exp["parent"]),
                    agent=exp.get("agent", ""))

    def run(self, exp: dict, job, result, era: int, noise: Noise, status: str, verdict: Verdict | None,
            reason: str, started: str, lab_seconds: float) -> dict:
        """The row of one finished run; the experiment's verdict rides on it when it ends it."""
        s = result.summary
        peak = number(s.get("peak_vram_mb"))
        candidate = job.commit == exp["commit"] and job.role != "repeat"
        added, removed = exp.get("lines", (0, 0))
        row = dict(self.experiment_columns(exp), commit=short(job.commit), role=job.role, seed=job.seed,
                   run_bpb=result.val_bpb, val_bpb=result.val_bpb, memory_gb=peak / 1024 if peak is not None else None,
                   status=status, era=era, training_seconds=s.get("training_seconds"),
                   total_seconds=s.get("total_seconds"), num_steps=s.get("num_steps"),
                   total_tokens_M=s.get("total_tokens_M"), tokens_per_s=tokens_per_s(s),
                   mfu_percent=s.get("mfu_percent"), peak_vram_mb=s.get("peak_vram_mb"),
                   started=started, finished=now(), reason=reason, lab_seconds=lab_seconds,
                   run_seconds=result.seconds, worker=result.worker or None,
                   noise=noise.sigma)
        if candidate:
            row.update(lines_added=added, lines_removed=removed)
        if verdict is not None:
            row.update(self.verdict_columns(exp, verdict))
        elif status in ledger.VERDICTS:  # a candidate that failed: its verdict, with no number to judge
            row.update(val_bpb=None, **exp.get("usage", {}))
        self.append(**row)
        return row

    def verdict_columns(self, exp: dict, verdict: Verdict) -> dict:
        c = verdict.comparison
        added, removed = exp.get("lines", (0, 0))
        score = verdict.mean + self.policy.lam * (added - removed) if verdict.mean is not None else None
        return dict(status=verdict.status, val_bpb=verdict.mean, runs=verdict.runs, diff=c.diff, diff_low=c.low,
                    diff_high=c.high, confidence=None if self.policy.single else self.policy.confidence, score=score, lines_added=added, lines_removed=removed,
                    reason=verdict.reason, **exp.get("usage", {}))

    def verdict_only(self, exp: dict, verdict: Verdict, era: int, noise: Noise) -> dict:
        """A verdict that no run of the candidate carries (it ended on a run of the best)."""
        row = dict(self.experiment_columns(exp), commit=short(exp["commit"]), role="verdict", era=era,
                   started=now(), finished=now(), noise=noise.sigma, **self.verdict_columns(exp, verdict))
        self.append(**row)
        return row

    def rejected(self, exp: dict, reason: str, lab_seconds: float) -> None:
        self.append(**self.experiment_columns(exp), commit="none", role="candidate", status=ledger.REJECTED,
                    started=exp["started"], finished=exp["started"], reason=reason, lab_seconds=lab_seconds,
                    **exp.get("usage", {}))
        self.display.say(f"   #{exp['number']} rejected: {exp['description']}: {reason}")

    # --- what a person reads --------------------------------------------------------------------

    def say_run(self, job, result, row: dict, note: str = "") -> None:
        if result.val_bpb is None:
            status = {ledger.RUN: "failed: ", ledger.STOPPED: ""}.get(row["status"], f"{row['status']}: ")
            text = f"{status}{result.reason}"
        else:
            steps, speed = row.get("num_steps"), row.get("tokens_per_s")
            load = ", ".join(x for x in (f"{steps} steps" if steps else "",
                                         f"{speed:,.0f} tok/s" if speed else "") if x)
            text = f"val_bpb {result.val_bpb:.6f}" + (f" | {load}" if load else "") + f" | {result.seconds:.0f}s"
        # each line names its experiment: with several workers, another's header may have come between
        self.display.say(f"   #{job.experiment} {job.role:<9} s{job.seed} {short(job.commit)}  {text}{note}")

    def say_verdict(self, exp: dict, row: dict, verdict: Verdict | None, noise: Noise) -> None:
        status = row["status"]
        if verdict is None or verdict.mean is None:
            self.display.say(f"   #{exp['number']} => {status:<8} {row.get('reason') or ''}")
            return
        added, removed = exp.get("lines", (0, 0))
        runs = f"mean of {verdict.runs} runs" if verdict.runs > 1 else "1 run"
        c = verdict.comparison
        sure = ""
        if c.z is not None and status == ledger.KEEP:
            sure = f" | {self.policy.confidence:.0%} sure it is better" if c.n else ""
        elif c.low is not None and c.low < 0 < c.high:
            sure = " | within the noise"
        self.display.say(f"   #{exp['number']} => {status:<8} val_bpb {verdict.mean:.6f} ({runs}){interval(verdict)}"
                         f"{sure} | +{added}/-{removed} lines")
