"""Claude as the researcher, through the anthropic SDK.

Each proposal is a fresh, bounded conversation. The system prompt is program.md plus the rules the
lab enforces; the first message holds the current train.py and a compact history (never raw logs,
except the tail of the last crash). Claude works on a copy of train.py in memory through tools
(view a file, str_replace, insert, rewrite) and finishes with propose(description); the lab's guard
then checks the result like any other proposal. A bad tool call goes back to Claude as a tool error.

Overnight robustness: rate limits, overload, 5xx and connection errors are retried with backoff
(honouring retry-after); after `retries` failures in a row the agent raises AgentUnavailable and the
loop pauses, then tries again. Usage and an estimated cost travel on each Proposal.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

from .base import AgentUnavailable, Context, Proposal
from ..workspace import LabError

DEFAULT_MODEL = "claude-sonnet-5-5"
MAX_TURNS = 30                # tool-use rounds per proposal
MAX_FILE_CHARS = 120_000      # the largest train.py Claude may write
VIEWABLE = ("train.py", "prepare.py", "program.md", "README.md")
# USD per million tokens (input, output); cache writes cost 1.25x input, cache reads 0.1x input.
# An estimate by model family, for budgeting runs; check current prices for exact accounting.
PRICES = {"opus": (5.0, 25.0), "sonnet": (3.0, 15.0), "haiku": (1.0, 5.0)}

RULES = """
# Rules the lab enforces (in code, not on trust)
- You change train.py only, through the tools: edit_train (exact str_replace), insert_train,
  write_train. Any other file is read-only; view_file shows train.py, prepare.py, program.md, README.md.
- When your edit is ready, call propose(description) with one line saying what you changed and why.
  The lab then commits it, trains for the fixed budget and keeps it only if val_bpb improves by more
  than the complexity penalty of the lines you added. Do not ask for confirmation; do not stop.
- The proposal is rejected unchanged if it does not compile, touches another file, or is identical
  to the current train.py. You cannot run code; reason from the history you are given.
"""

TOOLS = [
    {"name": "view_file", "description": "Show a file of the project (train.py shows your working copy).",
     "input_schema": {"type": "object", "properties": {"path": {"type": "string", "enum": list(VIEWABLE)}},
                      "required": ["path"]}},
    {"name": "edit_train", "description": "Replace the one exact occurrence of old_str in train.py by new_str.",
     "input_schema": {"type": "object", "properties": {"old_str": {"type": "string"}, "new_str": {"type": "string"}},
                      "required": ["old_str", "new_str"]}},
    {"name": "insert_train", "description": "Insert text after line number `line` of train.py (0 = at the top).",
     "input_schema": {"type": "object", "properties": {"line": {"type": "integer"}, "text": {"type": "string"}},
                      "required": ["line", "text"]}},
    {"name": "write_train", "description": "Replace the whole of train.py.",
     "input_schema": {"type": "object", "properties": {"content": {"type": "string"}}, "required": ["content"]}},
    {"name": "propose", "description": "Finish: submit the current train.py as the next experiment.",
     "input_schema": {"type": "object", "properties": {"description": {"type": "string"}},
                      "required": ["description"]}},
]


class ToolError(Exception):
    pass


def price(model: str) -> tuple[float, float]:
    return next((p for family, p in PRICES.items() if family in model), PRICES["sonnet"])


def history_summary(context: Context, limit: int = 25) -> str:
    """A compact view of the ledger: the noise, the best so far, then the most recent experiments,
    each with its mean over its runs and its difference to the best it was tried on."""
    rows = context.history
    lines = [f"{len(rows)} experiments so far."]
    noise = context.noise
    if noise.sigma is not None:
        paired = f", and the difference of two runs at the same seed by ±{noise.sigma_diff:.4f}" \
            if noise.sigma_diff is not None else ""
        lines.append(f"Noise: one run's val_bpb moves by ±{noise.sigma:.4f} from seed to seed and with the machine's "
                     f"load{paired}. A promising change is run again at more seeds and kept only when the lab is sure "
                     f"it is better; a difference inside the noise is not a result.")
    if context.best:
        mean = f"{context.best_mean:.6f} (mean of {context.best_runs} runs)" if context.best_mean is not None \
            else context.best["val_bpb"]
        lines.append(f"Best so far: val_bpb {mean}: {context.best['description']}; the train.py below is that commit.")
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    if counts:
        lines.append("Outcomes: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    lines.append("Recent experiments (status, mean val_bpb and runs, difference to the best with its interval, "
                 "lines +/-, description, reason if any):")
    for r in rows[-limit:]:
        reason = f" -- {r['reason']}" if r.get("reason") else ""
        runs = f" x{r['runs']}" if r.get("runs") else ""
        diff = ""
        if r.get("diff") and r.get("role") != "baseline":
            diff = f" Δ{float(r['diff']):+.4f}"
            if r.get("diff_low"):
                low, high = float(r["diff_low"]), float(r["diff_high"])
                diff += f" [{low:+.4f}, {high:+.4f}]" + (" within the noise" if low < 0 < high else "")
        lines.append(f"- {r['status']} {r['val_bpb'] or '-'}{runs}{diff} +{r.get('lines_added') or 0}/-"
                     f"{r.get('lines_removed') or 0} {r['description']}{reason}")
    return "\n".join(lines)


class ClaudeAgent:
    name = "claude"

    def __init__(self, model=None, api_key=None, http_client=None, retries=6, backoff=2.0, max_backoff=60.0,
                 max_turns=MAX_TURNS, max_tokens=8000, sleep=time.sleep):
        import anthropic
        self.anthropic = anthropic
        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise LabError("--agent claude needs ANTHROPIC_API_KEY in the environment")
        self.model = model or os.environ.get("AUTORESEARCH_MODEL") or DEFAULT_MODEL
        # the SDK's own retries are off: this class retries, so that it can pause the loop instead of dying
        self.client = anthropic.Anthropic(api_key=key, max_retries=0, http_client=http_client, timeout=600.0)
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.max_turns, self.max_tokens, self.sleep = max_turns, max_tokens, sleep

    # --- the API, with retries ---------------------------------------------------------------

    def call(self, **kwargs):
        a = self.anthropic
        last = None
        for attempt in range(self.retries):
            try:
                response = self.client.messages.create(**kwargs)
                if isinstance(getattr(response, "content", None), list):
                    return response
                last, wait = "a malformed response", None
            except a.APIStatusError as e:
                if e.status_code in (400, 401, 403, 404, 413, 422):
                    raise LabError(f"the Anthropic API refused the request ({e.status_code}): {e.message}") from None
                last, wait = f"HTTP {e.status_code}", _retry_after(e)
            except (a.APIConnectionError, a.APIResponseValidationError, ValueError) as e:  # ValueError: not JSON
                last, wait = type(e).__name__, None
            if attempt < self.retries - 1:
                self.sleep(wait if wait is not None else min(self.max_backoff, self.backoff * 2**attempt))
        raise AgentUnavailable(f"{self.retries} failed calls in a row, last: {last}")

    # --- one proposal ------------------------------------------------------------------------

    def propose(self, context: Context) -> Proposal | None:
        work = {"train": context.train_py}
        usage = dict(input_tokens=0, output_tokens=0, cache_read_tokens=0, cache_write_tokens=0, calls=0)
        system = [{"type": "text", "text": context.program_md + "\n" + RULES, "cache_control": {"type": "ephemeral"}}]
        intro = (f"Profile: {context.profile}.\n\n{history_summary(context)}\n\n"
                 + (f"The last experiment crashed; the end of its log:\n```\n{context.last_crash}\n```\n\n"
                    if context.last_crash else "")
                 + ("Being measured now on other workers (on the same best; do not propose these again):\n"
                    + "".join(f"- #{e['number']} {e['description']}\n" for e in context.in_flight) + "\n"
                    if context.in_flight else "")
                 + "Propose the next experiment: edit train.py with the tools, then call propose.")
        messages = [{"role": "user", "content": [
            {"type": "text", "text": f"The current train.py:\n```python\n{context.train_py}```",
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": intro}]}]
        last_text = ""
        for turn in range(self.max_turns):
            response = self.call(model=self.model, max_tokens=self.max_tokens, system=system, tools=TOOLS,
                                 messages=messages)
            self.count(usage, response)
            content = list(getattr(response, "content", None) or [])
            garbled = [_make_valid(block) for block in content]  # before they are sent back in the next call
            messages.append({"role": "assistant", "content": content or [{"type": "text", "text": "(empty)"}]})
            results, description = [], None
            for block, bad in zip(content, garbled):
                kind = getattr(block, "type", None)
                if kind == "text":
                    last_text = block.text.strip() or last_text
                elif kind == "tool_use":
                    try:
                        if bad:
                            raise ToolError("the tool input is not valid text (a lone surrogate): send it again")
                        out = self.use_tool(block.name, block.input, work, context)
                    except ToolError as e:
                        results.append({"type": "tool_result", "tool_use_id": block.id, "content": str(e),
                                        "is_error": True})
                        continue
                    if block.name == "propose":
                        description = out
                        out = "submitted"
                    results.append({"type": "tool_result", "tool_use_id": block.id, "content": out})
            if description is not None:
                return Proposal(description=description, train_py=work["train"], usage=_spent(usage))
            if results:
                messages.append({"role": "user", "content": results})
            else:
                messages.append({"role": "user", "content": "Use the tools to edit train.py, then call propose."})
        summary = " ".join(last_text.split())[:200] or "no description"
        return Proposal(description=f"(turn limit) {summary}", train_py=work["train"], usage=_spent(usage))

    def use_tool(self, name, args, work, context):
        if not isinstance(args, dict):
            raise ToolError("tool input must be an object")
        text = work["train"]
        try:
            if name == "view_file":
                path = args["path"]
                if path not in VIEWABLE:
                    raise ToolError(f"{path!r} cannot be viewed: choose one of {', '.join(VIEWABLE)}")
                if path == "train.py":
                    return text
                file = Path(context.workdir or ".") / path
                return file.read_text() if file.exists() else f"{path} does not exist"
            if name == "edit_train":
                old, new = _string(args, "old_str"), _string(args, "new_str")
                count = text.count(old) if old else 0
                if count != 1:
                    raise ToolError(f"old_str must match exactly once in train.py; it matches {count} times")
                work["train"] = _bounded(text.replace(old, new, 1))
                return "edited"
            if name == "insert_train":
                line, new = args["line"], _string(args, "text")
                lines = text.splitlines(keepends=True)
                if not isinstance(line, int) or not 0 <= line <= len(lines):
                    raise ToolError(f"line must be an integer from 0 to {len(lines)}")
                work["train"] = _bounded("".join(lines[:line]) + new + ("" if new.endswith("\n") else "\n")
                                         + "".join(lines[line:]))
                return "inserted"
            if name == "write_train":
                work["train"] = _bounded(_string(args, "content"))
                return "written"
            if name == "propose":
                description = " ".join(_string(args, "description").split())
                if not description:
                    raise ToolError("describe the change in one line")
                return description
        except KeyError as e:
            raise ToolError(f"missing argument {e}") from None
        raise ToolError(f"unknown tool {name!r}; only train.py can be changed, through edit_train, insert_train "
                        f"or write_train")

    def count(self, usage, response):
        u = getattr(response, "usage", None)
        usage["calls"] += 1
        if u is None:
            return
        for key, field in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                           ("cache_read_tokens", "cache_read_input_tokens"),
                           ("cache_write_tokens", "cache_creation_input_tokens")):
            usage[key] += _count(getattr(u, field, 0))  # a cost never decreases
        p_in, p_out = price(self.model)
        usage["cost_usd"] = (usage["input_tokens"] * p_in + usage["output_tokens"] * p_out
                             + usage["cache_write_tokens"] * p_in * 1.25 + usage["cache_read_tokens"] * p_in * 0.1) / 1e6


def _spent(usage: dict) -> dict:
    """What the ledger records of a proposal's calls: tokens by kind and the estimated cost."""
    return {k: v for k, v in usage.items() if k != "calls"}


def _string(args, key):
    value = args[key]
    if not isinstance(value, str):
        raise ToolError(f"{key} must be a string")
    return value


def _bounded(text):
    if len(text) > MAX_FILE_CHARS:
        raise ToolError(f"train.py would be {len(text):,} characters; the limit is {MAX_FILE_CHARS:,}")
    return text


def _retry_after(error):
    """The server's retry-after in seconds (at most 600); None when missing, negative or not a number."""
    try:
        wait = float(error.response.headers.get("retry-after"))
    except (TypeError, ValueError, AttributeError):
        return None
    return min(600.0, wait) if math.isfinite(wait) and wait >= 0 else None


def _count(value) -> int:
    """A token count as the API reported it, never negative."""
    return value if isinstance(value, int) and value > 0 else 0


def _valid(value):
    """value with every string made valid UTF-8 (a lone surrogate becomes '?')."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_valid(k): _valid(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_valid(v) for v in value]
    return value


def _make_valid(block) -> bool:
    """Make a response block's text and tool input valid UTF-8 in place; whether it was not."""
    bad = False
    for attr in ("text", "input"):
        value = getattr(block, attr, None)
        valid = _valid(value)
        if valid != value:
            setattr(block, attr, valid)
            bad = True
    return bad
