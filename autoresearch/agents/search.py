"""An offline agent: a seeded random search over train.py's hyperparameter block.

It needs no network and no model, so the lab loop can run (and be tested) anywhere. Each proposal
changes one (occasionally two) hyperparameters, rewriting only those lines as plain literals.
The description ends in `[s:HASH]`, a short hash of the whole resulting setting, so that the ledger
alone tells the agent what has been tried: it stays stateless, like every agent (see base.py).
"""
from __future__ import annotations

import ast
import hashlib
import operator
import random
import re
from collections import Counter

from .. import ledger
from .base import Context, Proposal

PROTECTED = {"SEED", "UNTIMED_STEPS", "FINAL_EVAL_BATCH_SIZE"}  # not hyperparameters to tune
SEQ_LEN = {"tiny": 256, "small": 1024, "h100": 2048}  # default MAX_SEQ_LEN per profile (not in train.py)
LR_NAMES = ("MATRIX_LR", "EMBEDDING_LR", "UNEMBEDDING_LR", "SCALAR_LR")
CHOICES = {
    "WARMUP_RATIO": (0.0, 0.02, 0.05, 0.1),
    "WARMDOWN_RATIO": (0.2, 0.3, 0.5, 0.7, 0.9),
    "FINAL_LR_FRAC": (0.0, 0.05, 0.1),
    "ASPECT_RATIO": (32, 48, 64, 96, 128),
    "HEAD_DIM": (32, 64, 128),
    "WINDOW_PATTERN": ("L", "SL", "SSL", "SSSL"),
    "SOFTCAP": (10.0, 15.0, 20.0, 30.0),
    "ADAM_BETAS": ((0.8, 0.95), (0.9, 0.95), (0.8, 0.99), (0.9, 0.99)),
}
GOOD, BAD = {ledger.KEEP}, set(ledger.VERDICTS) - {ledger.KEEP}  # other statuses count for nothing
PAIR_PROBABILITY = 0.2
PAIR_TRIES = 200

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNOPS = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_CMPOPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge}


class Unsupported(Exception):
    """An expression the safe evaluator does not handle; its line is left alone."""


def evaluate(node, names):
    """The value of a small expression (literals, arithmetic, comparisons, `a if c else b`, known
    names). Never `eval`: train.py is written by agents, and reading it must not run it."""
    try:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
            return node.value
        if isinstance(node, (ast.Tuple, ast.List)):
            return tuple(evaluate(e, names) for e in node.elts)
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise Unsupported(node.id)
            return names[node.id]
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNOPS:
            return _UNOPS[type(node.op)](evaluate(node.operand, names))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = evaluate(node.left, names), evaluate(node.right, names)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise Unsupported("huge power")
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.Compare):
            left = evaluate(node.left, names)
            for op, comparator in zip(node.ops, node.comparators):
                if type(op) not in _CMPOPS:
                    raise Unsupported(type(op).__name__)
                right = evaluate(comparator, names)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return evaluate(node.body if evaluate(node.test, names) else node.orelse, names)
        if isinstance(node, ast.BoolOp):
            values = (evaluate(v, names) for v in node.values)
            return all(values) if isinstance(node.op, ast.And) else any(values)
    except (ArithmeticError, TypeError, ValueError) as e:
        raise Unsupported(str(e)) from e
    raise Unsupported(type(node).__name__)


def parse_block(text, profile):
    """(values, slots) of the hyperparameter block, or None without one. values: name -> evaluated
    value, in file order; slots: name -> (line index, bytes before the value, bytes after it) for the
    lines we may rewrite: single-line `NAME = expr` that evaluated and are not protected."""
    lines = text.splitlines(keepends=True)
    header = next((i for i, line in enumerate(lines) if re.match(r"#\s*Hyperparameters", line)), None)
    if header is None:
        return None
    start = header + 1
    while start < len(lines) and lines[start].startswith("# ---"):
        start += 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("# ---")), len(lines))
    try:
        tree = ast.parse("".join(lines[start:end]))
    except SyntaxError:
        return None
    values, slots, shadowed = {}, {}, set()
    for stmt in tree.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else []
        if len(targets) != 1 or not isinstance(targets[0], ast.Name):
            # anything assigned in an `if`, a loop, a tuple unpacking... is not ours to read or touch
            shadowed |= {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            continue
        name = targets[0].id
        values.pop(name, None)
        slots.pop(name, None)
        try:
            values[name] = evaluate(stmt.value, {"PROFILE": profile, **values})
        except Unsupported:
            continue
        if name not in PROTECTED and stmt.value.lineno == stmt.value.end_lineno:
            index = start + stmt.value.lineno - 1
            raw = lines[index].encode()  # ast's column offsets count UTF-8 bytes
            slots[name] = (index, raw[:stmt.value.col_offset], raw[stmt.value.end_col_offset:])
    for name in shadowed:
        values.pop(name, None)
        slots.pop(name, None)
    return values, slots


def literal(value):
    """Python source for a value, as it should read in train.py and in the description."""
    if isinstance(value, str) and '"' not in value and "\\" not in value:
        return f'"{value}"'
    if isinstance(value, tuple):
        return "(" + ", ".join(literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def setting_hash(values):
    """8 hex digits naming the whole setting, so any two proposals with the same values collide."""
    return hashlib.sha1(repr(sorted(values.items())).encode()).hexdigest()[:8]


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def direction(old, new):
    """'+' or '-' for numbers; for anything else the new value itself."""
    if is_number(old) and is_number(new):
        return "+" if new > old else "-" if new < old else "="
    return literal(new)


def round4(x):
    """4 significant digits: 0.04 * 1.4 reads 0.056 in the file, not 0.05599999999999999."""
    return float(f"{x:.4g}")


def candidate_moves(values, slots, seq):
    """Every single move from the current values, as dicts name -> new value. A halved batch may
    carry a halved DEVICE_BATCH_SIZE with it, since train.py asserts divisibility by it."""
    moves, numbers = [], {k: v for k, v in values.items() if k in slots and is_number(v)}
    for name in LR_NAMES:
        if name in numbers:
            moves += [{name: round4(numbers[name] * f)} for f in (0.5, 0.7, 1.4, 2.0)]
    if "WEIGHT_DECAY" in numbers:  # from zero, ×2 cannot move it: offer a small decay instead
        wd = numbers["WEIGHT_DECAY"]
        moves += [{"WEIGHT_DECAY": round4(wd * f)} for f in (0.5, 2.0)]
        moves.append({"WEIGHT_DECAY": 0.0 if wd else 0.1})
    if isinstance(numbers.get("DEPTH"), int):
        moves += [{"DEPTH": numbers["DEPTH"] + step} for step in (1, -1)]  # DEPTH 0 is caught by violations()
    for name, choices in CHOICES.items():
        if name in slots and all(type(c) is type(values[name]) or (is_number(values[name]) and is_number(c))
                                 for c in choices):
            moves += [{name: c} for c in choices]
    total, rows = numbers.get("TOTAL_BATCH_SIZE"), values.get("DEVICE_BATCH_SIZE")
    if isinstance(total, int) and total > 1 and total & (total - 1) == 0 and seq:
        moves.append({"TOTAL_BATCH_SIZE": total * 2})
        if isinstance(rows, int) and total // 2 // rows < seq:
            if "DEVICE_BATCH_SIZE" in slots and rows >= 2:
                moves.append({"TOTAL_BATCH_SIZE": total // 2, "DEVICE_BATCH_SIZE": rows // 2})
        else:
            moves.append({"TOTAL_BATCH_SIZE": total // 2})
    return [m for m in moves if any(values[k] != v for k, v in m.items())]  # drop the no-ops


def violations(values, seq):
    """The constraints train.py needs that a setting breaks. A move may not add to them (the
    current file might already break one, and then it is not ours to judge)."""
    broken = set()
    total, rows = values.get("TOTAL_BATCH_SIZE"), values.get("DEVICE_BATCH_SIZE")
    if is_number(total) and is_number(rows) and seq and (rows < 1 or total % (rows * seq)):
        broken.add("batch")
    depth, aspect, head = values.get("DEPTH"), values.get("ASPECT_RATIO"), values.get("HEAD_DIM")
    if is_number(depth) and depth < 1:
        broken.add("depth")
    elif all(is_number(v) and v > 0 for v in (depth, aspect, head)):
        width = -(-depth * aspect // head) * head  # rounding up to whole heads should not inflate it much
        if width > 1.5 * depth * aspect:
            broken.add("width")
    return broken


def history_signals(history):
    """(hashes tried, keeps and failures per (name, direction)) from the ledger's descriptions."""
    tried, keeps, fails = set(), {}, {}
    for row in history:
        text, status = str(row.get("description") or ""), str(row.get("status") or "").strip().lower()
        tried.update(re.findall(r"\[s:([0-9a-f]{8})\]", text))
        for part in re.split(r", (?=[A-Z][A-Z0-9_]* )", re.sub(r"\s*\[s:[^\]]*\]", "", text)):
            match = re.search(r"([A-Z][A-Z0-9_]*) (\S.*?) -> (.+)$", part.strip())
            if not match:
                continue
            try:
                old, new = (evaluate(ast.parse(s.strip(), mode="eval").body, {}) for s in match.group(2, 3))
            except (SyntaxError, Unsupported):
                continue
            key = (match.group(1), direction(old, new))
            if status in GOOD:
                keeps[key] = keeps.get(key, 0) + 1
            elif status in BAD:
                fails[key] = fails.get(key, 0) + 1
    return tried, keeps, fails


class SearchAgent:
    """Proposes one untried hyperparameter move at a time; stateless apart from its seed."""

    name = "search"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def propose(self, context: Context) -> Proposal | None:
        parsed = parse_block(context.train_py, context.profile)
        if parsed is None:
            return None
        values, slots = parsed
        history = list(context.history or [])
        tried, keeps, fails = history_signals(history + list(context.in_flight))  # what runs now counts as tried
        digest = hashlib.sha1(context.train_py.encode()).hexdigest()
        rng = random.Random(f"{self.seed}:{len(history)}:{context.profile}:{digest}")
        seq = context.max_seq_len or SEQ_LEN.get(context.profile)
        before = violations(values, seq)
        lines = context.train_py.splitlines(keepends=True)

        def build(changes):
            """(description, text) for a set of changes, or None if invalid or already tried."""
            new_lines = list(lines)
            for name, value in changes.items():
                index, prefix, suffix = slots[name]
                new_lines[index] = (prefix + literal(value).encode() + suffix).decode()
            text = "".join(new_lines)
            new_values = parse_block(text, context.profile)[0]
            h = setting_hash(new_values)
            if h in tried or not violations(new_values, seq) <= before:
                return None
            moved = ", ".join(f"{k} {literal(values[k])} -> {literal(new_values[k])}" for k in changes)
            return f"{moved} [s:{h}]", text

        moves = candidate_moves(values, slots, seq)
        per_name = Counter(next(iter(move)) for move in moves)  # a move's first name is its parameter

        def weight(move):
            """Each parameter gets the same share, scaled up a lot by keeps in this direction."""
            name, value = next(iter(move.items()))
            key = (name, direction(values[name], value))
            return (1 + 12 * min(keeps.get(key, 0), 3)) * 0.5 ** min(fails.get(key, 0), 4) / per_name[name]

        def finish(built):
            """The proposal, checked to compile (the block parsed already; this is the whole file)."""
            compile(built[1], "train.py", "exec")
            return Proposal(description=built[0], train_py=built[1])

        singles = [(m, built) for m in moves if (built := build(m))]
        if singles and rng.random() >= PAIR_PROBABILITY:
            return finish(rng.choices(singles, [weight(m) for m, _ in singles])[0][1])
        weights = [weight(m) for m in moves]
        for _ in range(PAIR_TRIES if len(moves) > 1 else 0):
            first, second = rng.choices(moves, weights, k=2)
            if not set(first) & set(second) and (built := build({**first, **second})):
                return finish(built)
        if singles:  # every pair tried, or a rare pair draw that failed: fall back to a single move
            return finish(rng.choices(singles, [weight(m) for m, _ in singles])[0][1])
        return None
