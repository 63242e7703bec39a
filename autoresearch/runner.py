"""Runs train.py once: a subprocess in its own session, a scrubbed environment, output to a log,
and a timeout that kills the whole process group. Under the lab train.py ends by handing its model
off (prepare.hand_off); the lab's evaluator (evaluator.py) scores it, not this module.
The Python that runs it may have been started ahead (`Prestarted`), importing torch while the agent
was still at work.
"""
from __future__ import annotations

import ast
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import ledger
from .sandbox import Sandbox, command

# `step 00042 |  35.2% | loss 3.412345 | lr 1.00 | dt 320ms | 1,640,000 tok/s | mfu 45.8% | epoch 0 | 194s left`
PROGRESS = re.compile(r"^step (?P<step>\d+) \| +(?P<percent>[\d.]+)% \| loss (?P<loss>[-\w.+]+) \|.*?"
                      r"(?P<tok_s>[\d,]+) tok/s(?:.*\| (?P<left>\d+)s left)?")
# environment variables that never reach train.py: credentials of any kind
SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE", re.I)
# what differs from one run to the next of a loop: a Python started ahead gets them when it is handed the run
PER_RUN = ("AUTORESEARCH_SEED",)
# a run's log keeps its first LOG_CAP bytes and, past them, its last 200 lines: a train.py printing
# without end cannot fill the disk
LOG_CAP = 10_000_000
# a run's statuses besides the ledger's (ledger.CRASH, TIMEOUT, PRUNED): it ended well; the user stopped it
OK, INTERRUPTED = "ok", "interrupted"
SECRET_PREFIXES = ("ANTHROPIC_", "OPENAI_", "AWS_", "AZURE_", "GOOGLE_", "GCP_", "HF_", "HUGGING", "GITHUB_",
                   "GH_", "WANDB_", "CLAUDE")


def parse_progress(line: str) -> dict | None:
    m = PROGRESS.match(line)
    if not m:
        return None
    try:
        loss = float(m["loss"])
    except ValueError:
        loss = math.nan
    return dict(step=int(m["step"]), progress=float(m["percent"]) / 100, loss=loss,
                tokens_per_s=float(m["tok_s"].replace(",", "")),
                left=int(m["left"]) if m["left"] else None)  # seconds of budget left after the step


def reached(p: dict, budget: float | None) -> float:
    """How far through the budget a run is once the step of progress line p has ended. The line's
    percent is where that step began, and its loss is of the model trained that far, which stays
    the model until the step's update ends; its `left` says where the step ended, to the second (so
    counted here as half a second less far). The two differ by the step's length: where steps are
    long against the budget (a much larger model), the run has spent that much more with that loss.
    Without `left` or a budget, the line's percent."""
    if p.get("left") is None or not budget:
        return p["progress"]
    return min(1.0, max(p["progress"], 1.0 - (p["left"] + 0.5) / budget))


def progress_points(log: Path) -> list[dict]:
    """The progress lines of one train.py log, parsed (finite losses only)."""
    try:
        text = Path(log).read_text(errors="replace")
    except OSError:
        return []
    points = []
    for line in text.splitlines():
        p = parse_progress(line)
        if p and math.isfinite(p["loss"]):
            points.append(p)
    return points


def parse_summary(text: str) -> dict[str, str]:
    """The `key: value` lines after the last `---` line."""
    lines = text.splitlines()
    if "---" not in lines:
        return {}
    start = len(lines) - lines[::-1].index("---")
    return {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[start:] if ":" in ln)}


def scrubbed_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not SECRET.search(k) and not k.upper().startswith(SECRET_PREFIXES)}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class RunResult:
    status: str                   # ok, crash, timeout, pruned or interrupted; then the evaluator's
    seconds: float
    val_bpb: float | None = None
    record: dict = field(default_factory=dict)   # what the lab's evaluator computed
    summary: dict = field(default_factory=dict)  # train.py's printed block (informational only)
    reason: str = ""
    last_progress: dict | None = None
    worker: str = ""              # where it ran, when runs go to several workers (node/index)


def failure_reason(tail: list[str], returncode: int) -> str:
    for line in reversed(tail):
        if line.startswith("FAIL:") or re.match(r"^\w*(Error|Exception|Interrupt)\b", line):
            return line[:300]
    lines = [ln for ln in tail if ln.strip()]
    return (lines[-1][:300] if lines else "") or f"train.py exited with code {returncode}"


# What a Python started ahead runs: the imports every train.py makes, the CUDA context where train.py
# will run on CUDA, and where it compiles (by default on CUDA, or when AUTORESEARCH_COMPILE=1 asks) what
# the first torch.compile loads and computes once per process; then, once the lab sends the
# experiment's environment as one line of json, train.py itself, as `python train.py` would.
PRESTART = """
import sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")]  # nothing from the worktree before train.py's turn
import builtins, json, os, types
import numpy, tiktoken, torch
cuda = os.environ.get("AUTORESEARCH_DEVICE") not in ("cpu", "mps") and torch.cuda.is_available()
if cuda:
    torch.cuda.init()
if os.environ.get("AUTORESEARCH_COMPILE", "1" if cuda else "0") != "0":
    import torch._dynamo, torch._inductor.compile_fx, torch.nn.attention.flex_attention
    try:  # the keys of the compile cache: hashes of this torch and Triton, and the device's name
        from torch._inductor.codecache import CacheBase, torch_key
        CacheBase.get_system(), torch_key()
    except Exception:
        pass  # another torch: its first compile computes them
if os.environ.get("AUTORESEARCH_HANDOFF"):  # the hand-off's first torch.export imports and traces much
    import torch.export
    try:
        torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), strict=False).run_decompositions()
    except Exception:
        pass  # train.py's own export says what is wrong
line = sys.stdin.readline()
if not line:
    sys.exit(0)  # the lab went away first
os.environ.clear()
os.environ.update(json.loads(line))
path = os.path.abspath("train.py")
boot, main = sys.modules["__main__"], types.ModuleType("__main__")  # train.py gets a __main__ of its own
main.__dict__.update(__file__=path, __builtins__=builtins, __spec__=None)
sys.modules["__main__"], sys.argv = main, ["train.py"]
sys.path.insert(0, os.path.dirname(path))
with open(path, "rb") as f:
    code = compile(f.read(), path, "exec")
exec(code, main.__dict__)
"""


def sets_environment(source: str) -> bool:
    """Whether train.py writes environment variables (os.environ[...] = ..., .update, .setdefault,
    putenv, ...). torch reads some of them when imported, which a Python started ahead has done."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False  # it fails alike either way

    def environ(node):
        return (isinstance(node, ast.Attribute) and node.attr == "environ") or \
            (isinstance(node, ast.Name) and node.id == "environ")

    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("putenv", "unsetenv") or node.func.attr in \
                    ("update", "setdefault", "pop", "popitem", "clear", "__setitem__") and environ(node.func.value):
                return True
            continue
        else:
            continue
        if any(environ(t) or isinstance(t, ast.Subscript) and environ(t.value) for t in targets):
            return True
    return False


class Prestarted:
    """A Python started ahead of an experiment, in its worktree and environment: it imports torch (and
    the compiler where train.py will compile) while the agent works (or, for the first experiment of a
    loop, while the lab names the device), a few seconds less per experiment, then runs train.py when
    `run_training` hands it over. A train.py that sets environment variables
    gets a fresh Python instead, so that torch sees them as it is imported."""

    def __init__(self, workdir: Path, env: dict[str, str], sandbox: Sandbox | None = None):
        self.workdir, self.env, self.sandbox = Path(workdir).resolve(), scrubbed_env(env), sandbox
        self.proc = subprocess.Popen(command(sandbox, [sys.executable, "-c", PRESTART]), cwd=self.workdir,
                                     env=self.env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True, errors="replace")

    def take(self, workdir: Path, env: dict[str, str], sandbox: Sandbox | None = None) \
            -> tuple[subprocess.Popen | None, str]:
        """The process, now running train.py with `env`, and a note for the log; else (None, why not)
        and it is closed."""
        def same(e):
            return {k: v for k, v in e.items() if k not in PER_RUN}

        try:
            source = (self.workdir / "train.py").read_text(errors="replace")
        except OSError:
            source = None
        if Path(workdir).resolve() != self.workdir or same(env) != same(self.env) or sandbox != self.sandbox:
            why = "the worktree, the environment or the sandbox changed"
        elif source is None:
            why = "train.py cannot be read"
        elif sets_environment(source):
            why = "train.py sets environment variables, which torch may read as it is imported"
        elif self.proc.poll() is not None:
            why = "the Python started ahead has exited"
        else:
            try:
                self.proc.stdin.write(json.dumps(env) + "\n")
                self.proc.stdin.close()
                return self.proc, "started ahead: torch was imported before train.py was handed over"
            except (OSError, ValueError):
                why = "the Python started ahead did not take the experiment"
        self.close()
        return None, "started fresh: " + why

    def close(self):
        """Stop it, unless it is running an experiment (then run_training owns it)."""
        if not self.proc.stdin.closed:
            stop(self.proc)


def run_training(workdir: Path, log_path: Path, env: dict[str, str], timeout: float, on_start=None,
                 on_progress=None, should_stop=None, prestarted: Prestarted | None = None,
                 sandbox: Sandbox | None = None) -> RunResult:
    """Run train.py in workdir, in the Python `prestarted` if one is given and fits, else a fresh one.
    on_start(pgid) lets the caller note the process group; on_progress(progress) may return
    a reason to stop the run early, which then ends with status "pruned" and that reason. `sandbox`, if
    given, is where train.py runs (see sandbox.py)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log_path, "w") as log:
        env = scrubbed_env(env)
        proc, note = prestarted.take(workdir, env, sandbox) if prestarted else (None, "")
        if note:
            log.write(f"# python {note}\n")
        if proc is None:
            proc = subprocess.Popen(command(sandbox, [sys.executable, "train.py"]), cwd=workdir, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                    errors="replace")
        if on_start:
            on_start(proc.pid)
        tail: list[str] = []
        last: list[dict] = []
        abort: list[str] = []
        dropped, unwritable = [0], []

        def pump():
            for line in proc.stdout:  # read to the end, whatever happens to the log
                if not unwritable and log.tell() + len(line) <= LOG_CAP:
                    try:
                        log.write(line)
                        log.flush()
                    except OSError as e:  # a full disk: the run goes on, its log stops here
                        unwritable.append(e)
                else:
                    dropped[0] += len(line)
                line = line.rstrip("\n")
                tail.append(line)
                del tail[:-200]
                progress = parse_progress(line)
                if progress:
                    last[:] = [progress]
                    why = on_progress(progress) if on_progress and not abort else None
                    if why:
                        abort[:] = [why]

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        status = None
        while proc.poll() is None:
            if time.time() - t0 > timeout:
                status = ledger.TIMEOUT
            elif should_stop and should_stop():
                status = INTERRUPTED
            elif abort:
                status = ledger.PRUNED
            if status:
                kill_group(proc.pid, proc)
                break
            time.sleep(0.1)
        proc.wait()
        reader.join(timeout=5)
        if dropped[0] and not unwritable:
            log.write(f"\n# log capped at {LOG_CAP:,} bytes: {dropped[0]:,} more not kept; its last lines:\n")
            log.write("".join(line + "\n" for line in tail))
    seconds = time.time() - t0
    summary = parse_summary("\n".join(tail))
    result = RunResult(status=status or OK, seconds=seconds, summary=summary,
                       last_progress=last[0] if last else None)
    if status == ledger.TIMEOUT:
        result.reason = f"no result after {timeout:.0f}s: killed"
        return result
    if status == INTERRUPTED:
        result.reason = "stopped by the user"
        return result
    if status == ledger.PRUNED:
        result.reason = abort[0]
        return result
    if proc.returncode != 0:
        result.status, result.reason = ledger.CRASH, failure_reason(tail, proc.returncode)
    return result


def stop(proc: subprocess.Popen) -> None:
    """A child started in its own session, with pipes: its group killed if it runs, reaped, its pipes closed."""
    if proc.poll() is None:
        kill_group(proc.pid, proc)
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream is not None:
                stream.close()
        except (OSError, ValueError):
            pass


def kill_group(pgid: int, proc: subprocess.Popen | None = None, grace: float = 3.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left. `proc`, if it is our child, is
    reaped as it goes so that its zombie does not keep the group looking alive."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.time() + grace
        while time.time() < deadline:
            if proc is not None:
                proc.poll()
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.05)
