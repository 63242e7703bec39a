"""Runs train.py once: a subprocess in its own session, a scrubbed environment, output to a log,
a timeout that kills the whole process group, and the metric read from the harness's record.
"""
from __future__ import annotations

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

# `step 00042 |  35.2% | loss 3.412345 | lr 1.00 | dt 320ms | 1,640,000 tok/s | mfu 45.8% | epoch 0 | 194s left`
PROGRESS = re.compile(r"^step (?P<step>\d+) \| +(?P<percent>[\d.]+)% \| loss (?P<loss>[-\w.+]+) \|.*?"
                      r"(?P<tok_s>[\d,]+) tok/s")
# environment variables that never reach train.py: credentials of any kind
SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE", re.I)
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
                tokens_per_s=float(m["tok_s"].replace(",", "")))


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
    status: str                   # ok, crash, timeout or interrupted
    seconds: float
    val_bpb: float | None = None
    record: dict = field(default_factory=dict)   # what evaluate_bpb wrote
    summary: dict = field(default_factory=dict)  # train.py's printed block (informational only)
    reason: str = ""
    last_progress: dict | None = None


def failure_reason(tail: list[str], returncode: int) -> str:
    for line in reversed(tail):
        if line.startswith("FAIL:") or re.match(r"^\w*(Error|Exception|Interrupt)\b", line):
            return line[:300]
    lines = [ln for ln in tail if ln.strip()]
    return (lines[-1][:300] if lines else "") or f"train.py exited with code {returncode}"


def run_training(workdir: Path, log_path: Path, result_path: Path, env: dict[str, str], timeout: float,
                 expect: dict, on_start=None, on_progress=None, should_stop=None) -> RunResult:
    """Run train.py in workdir. `expect` holds the manifest's data_hash and EVAL_TOKENS: a record that
    does not match them is not believed. on_start(pgid) lets the caller note the process group."""
    result_path.unlink(missing_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log_path, "w") as log:
        env = {**env, "AUTORESEARCH_RESULT": str(result_path)}
        proc = subprocess.Popen([sys.executable, "train.py"], cwd=workdir, env=scrubbed_env(env), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                errors="replace")
        if on_start:
            on_start(proc.pid)
        tail: list[str] = []
        last: list[dict] = []

        def pump():
            for line in proc.stdout:
                log.write(line)
                log.flush()
                line = line.rstrip("\n")
                tail.append(line)
                del tail[:-200]
                progress = parse_progress(line)
                if progress:
                    last[:] = [progress]
                    if on_progress:
                        on_progress(progress)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        status = None
        while proc.poll() is None:
            if time.time() - t0 > timeout:
                status = "timeout"
            elif should_stop and should_stop():
                status = "interrupted"
            if status:
                kill_group(proc.pid, proc)
                break
            time.sleep(0.1)
        proc.wait()
        reader.join(timeout=5)
    seconds = time.time() - t0
    summary = parse_summary("\n".join(tail))
    result = RunResult(status=status or "ok", seconds=seconds, summary=summary,
                       last_progress=last[0] if last else None)
    if status == "timeout":
        result.reason = f"no result after {timeout:.0f}s: killed"
        return result
    if status == "interrupted":
        result.reason = "stopped by the user"
        return result
    if proc.returncode != 0:
        result.status, result.reason = "crash", failure_reason(tail, proc.returncode)
        return result
    try:
        record = json.loads(result_path.read_text())
        value = float(record["val_bpb"])
    except (OSError, ValueError, KeyError, TypeError):
        result.status = "crash"
        result.reason = "evaluate_bpb recorded no result (train.py must call it; printed numbers are not believed)"
        return result
    if not math.isfinite(value) or record.get("data_hash") != expect.get("data_hash") \
            or record.get("eval_tokens") != expect.get("eval_tokens"):
        result.status, result.reason = "crash", "the recorded result does not match the prepared cache"
        return result
    result.val_bpb, result.record = value, record
    return result


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
