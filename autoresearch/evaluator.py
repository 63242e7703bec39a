"""The lab's side of the evaluator: one process (evaluation.py) started once per loop and kept warm,
in a sandbox of its own, that turns each run's hand-off into the val_bpb the lab records.

It starts as the first run does (its imports and the packing of the validation rows are then
paid once), and again after it died or hung. `score` hands it one program and waits for its answer.
"""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import ledger
from .runner import OK, scrubbed_env, stop
from .sandbox import Sandbox, command

# the evaluator's Python: nothing from the directory it starts in is importable, then evaluation.py
LAUNCH = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
          "import runpy; runpy.run_module('autoresearch.evaluation', run_name='__main__')")


@dataclass
class Scored:
    status: str                 # runner.OK, ledger.CRASH or ledger.REJECTED
    val_bpb: float | None = None
    record: dict = field(default_factory=dict)
    reason: str = ""


class Evaluator:
    def __init__(self, folder: Path, hashes: dict[str, str] | None, env: dict[str, str],
                 jail: Sandbox | None = None, log: Path | None = None):
        """folder holds the harness (prepare.py, harness/) it runs, each file only if it has its sha256
        in hashes (None: unchecked)."""
        self.argv = [sys.executable, "-c", LAUNCH, str(folder), json.dumps(hashes) if hashes is not None else ""]
        self.env = scrubbed_env({**env, "TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1"})
        self.jail, self.log_path = jail, log
        self.proc: subprocess.Popen | None = None
        self.is_ready = False
        self.info: dict = {}  # what it said when ready: rows, vocabulary, the device's name
        self.lines: queue.Queue = queue.Queue()
        self.tail: list[str] = []

    def start(self) -> None:
        """The process, started if it is not running."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self.close()
        self.lines, self.is_ready = queue.Queue(), False
        self.proc = subprocess.Popen(command(self.jail, self.argv), cwd="/", env=self.env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True, errors="replace")
        threading.Thread(target=self.pump, args=(self.proc, self.lines), daemon=True).start()

    @staticmethod
    def pump(proc: subprocess.Popen, lines: queue.Queue) -> None:
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)  # it exited

    def ready(self, timeout: float) -> None:
        """Started, and past its imports and the packing of the rows (or exited: `score` says why)."""
        self.start()
        deadline = time.time() + timeout
        while not self.is_ready:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.time()))
            except queue.Empty:
                return
            if line is None:
                self.lines.put(None)  # for score to see
                return
            self.note(line)

    def score(self, program: Path, timeout: float) -> Scored:
        """The hand-off `program` scored: ok with its val_bpb, rejected or crash with the reason. An
        evaluator that exits while it scores (killed from outside, or the model's doing) is started
        again and given the hand-off once more: only a second exit is the run's crash."""
        exited = None
        for _ in range(2):
            scored = self.score_once(program, timeout)
            if scored is not None:
                return scored
            why, self.proc = self.exit_reason(), None
            exited = f"{exited}, and again when started anew" if exited else f"the evaluator exited ({why[:200]})"
        return Scored(ledger.CRASH, reason=exited)

    def exit_reason(self) -> str:
        """Why the process ended: a signal (bwrap passes its child's on as 128 + N), else what it said last."""
        code = self.proc.returncode
        if code is not None and (code < 0 or code > 128):
            return f"killed by signal {-code if code < 0 else code - 128}"
        said = [line for line in self.tail if not line.startswith("READY ")]
        return said[-1] if said else f"exit code {code}"

    def score_once(self, program: Path, timeout: float) -> Scored | None:
        """One try; None if the evaluator exited before it answered."""
        self.start()
        try:
            self.proc.stdin.write(json.dumps({"program": str(program)}) + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass  # it died: what it said is read below
        deadline = time.time() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.time()))
            except queue.Empty:
                self.close()
                return Scored(ledger.CRASH, reason=f"the evaluator gave no result in {timeout:.0f}s: killed")
            if line is None:
                self.proc.wait()
                return None
            if line.startswith("RESULT "):
                break
            self.note(line)
        try:
            record = json.loads(line[len("RESULT "):])
        except ValueError:
            return Scored(ledger.CRASH, reason="the evaluator's answer cannot be read")
        status = record.get("status") if record.get("status") in (OK, ledger.REJECTED) else ledger.CRASH
        if status != OK:
            return Scored(status, reason=str(record.get("reason", "")))
        return Scored(OK, float(record["val_bpb"]), record)

    def note(self, line: str) -> None:
        """What the evaluator says besides its results: kept in its log, the last lines for reasons."""
        if line.startswith("READY "):
            self.is_ready = True
            try:
                self.info = json.loads(line[len("READY "):])
            except ValueError:
                pass
        self.tail = (self.tail + [line])[-20:]
        if self.log_path:
            try:
                with open(self.log_path, "a") as log:
                    log.write(line + "\n")
            except OSError:
                pass

    def close(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
