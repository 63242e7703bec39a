"""The lab's evaluator process: val_bpb computed from a run's hand-off, outside the experiment.

`evaluator.Evaluator` starts it once per loop (in a sandbox of its own: it reads the prepared cache,
the hand-off directory and the harness, writes nothing, has no network) as
`python -c LAUNCH FOLDER HASHES`. It runs the harness (prepare.py and harness/) from the folder's
sources, each checked against its protected hash (no bytecode file is ever read), packs the
validation rows once, then answers
each line `{"program": PATH}` on stdin with one line `RESULT {json}`:

- the archive is checked before anything in it is loaded: a torch.export zip with one graph of
  `torch.ops.aten` operators, static shapes, one input, one output, no state it mutates, no pickled
  or opaque objects; it is then loaded weights-only (pickle itself is refused) and its graph
  checked again;
- the logits for every validation row are computed by the program, the loss of each target token
  here, by prepare.score_rows (the program never receives the targets);
- a causality probe: 16 validation rows (a batch, if the model was exported for more) with the tokens
  from a cut onward replaced (a cut per row, at 1, T/4, T/2, T-1 and random places), in as many calls
  as the exported batch takes; the logits before each cut must not move by more than the float32
  rounding of their size;
- bounds: a value that is not finite, not above 0, or above a uniform model's is rejected.

Its statuses: "ok" (val_bpb and the record), "rejected" (the hand-off broke a rule: reason) or
"crash" (it could not be scored: reason).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.util
import json
import math
import os
import random
import sys
import time
import types
import zipfile
from pathlib import Path

from .ledger import CRASH, REJECTED
from .runner import OK

# graph nodes that are not operators: a tuple's item
STRUCTURAL = {"_operator.getitem"}
# argument kinds that would carry code, a subgraph, an opaque object or a symbolic shape
FORBIDDEN_ARGS = {"as_graph", "as_custom_obj", "as_operator", "as_sym_int", "as_sym_ints", "as_sym_bool",
                  "as_sym_bools", "as_sym_float", "as_sym_floats", "as_expr"}
UNIFORM_SLACK = 1e-6  # a uniform model itself scores its bound, give or take float rounding
PROBE_ROWS = 16  # rows the causality probe cuts, whatever batch the model was exported for
PROBE_TOLERANCE = 64  # in float32 epsilons times (1 + the largest logit): rounding, never a signal


class Rejected(Exception):
    """The hand-off broke a rule; the message says which, in one line."""


class CheckedSource(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports `prepare` and the `harness` package from the sources in one folder, each one only if it
    hashes as protected (hashes: path under the folder -> sha256; None checks nothing), run from its
    source: no bytecode file is read or written."""

    def __init__(self, folder: Path, hashes: dict[str, str] | None):
        self.folder, self.hashes = Path(folder), hashes

    def find_spec(self, name, path=None, target=None):
        if name != "prepare" and name.split(".")[0] != "harness":
            return None
        parts = name.split(".")
        package = self.folder.joinpath(*parts) / "__init__.py"
        where = package if package.is_file() else self.folder.joinpath(*parts[:-1], parts[-1] + ".py")
        if not where.is_file():  # never from elsewhere on the path: the lab's own copy is not checked
            raise ModuleNotFoundError(f"{name} is not part of the harness in {self.folder}")
        return importlib.util.spec_from_file_location(name, where, loader=self,
                                                      submodule_search_locations=[str(where.parent)]
                                                      if where.name == "__init__.py" else None)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        path = Path(module.__spec__.origin)
        source = path.read_bytes()
        name = path.relative_to(self.folder).as_posix()
        if self.hashes is not None and self.hashes.get(name) != hashlib.sha256(source).hexdigest():
            raise SystemExit(f"FAIL: {name} is not the protected {name}: the evaluator will not run it")
        exec(compile(source, str(path), "exec"), module.__dict__)


def load_harness(folder: Path, hashes: dict[str, str] | None) -> types.ModuleType:
    """The harness (prepare.py and harness/) run from the folder's sources, each checked against its
    protected hash; whatever of it was imported before (the lab's own copy) is forgotten first."""
    for name in [n for n in sys.modules if n == "prepare" or n.split(".")[0] == "harness"]:
        del sys.modules[name]
    sys.meta_path.insert(0, CheckedSource(folder, hashes))
    return importlib.import_module("prepare")


def refuse_pickle():
    """From here on nothing in this process unpickles (torch's weights-only loader has its own)."""
    import pickle

    def refused(*args, **kwargs):
        raise Rejected("the hand-off asked to unpickle an object")

    pickle.load = pickle.loads = refused


def walk_args(value):
    """Every dict key in a serialized node's arguments, recursively."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from walk_args(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk_args(item)


def check_archive(path: Path) -> None:
    """Before loading: the file is a torch.export archive whose graph holds only what `check_graph`
    allows, with static shapes and nothing pickled."""
    try:
        archive = zipfile.ZipFile(path)
        names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as e:
        raise Rejected(f"the hand-off is not a torch.export archive ({e})") from None
    models = [n for n in names if n.split("/")[-2:-1] == ["models"] and n.endswith(".json")]
    if len(models) != 1:
        raise Rejected(f"the hand-off holds {len(models)} graphs: one is expected")
    try:
        program = json.loads(archive.read(models[0]))
        configs = [json.loads(archive.read(n)) for n in names if n.endswith("_config.json")]
        graph, signature = program["graph_module"]["graph"], program["graph_module"]["signature"]
    except (ValueError, KeyError, TypeError) as e:
        raise Rejected(f"the hand-off's graph cannot be read ({e})") from None
    if program.get("guards_code") or program.get("range_constraints"):
        raise Rejected("the hand-off has dynamic shapes or guards: export it for static shapes")
    if graph.get("custom_obj_values"):
        raise Rejected("the hand-off holds opaque objects")
    if any(meta.get("use_pickle") for config in configs for meta in config.get("config", {}).values()):
        raise Rejected("the hand-off holds pickled weights or constants")
    for node in graph["nodes"]:
        target = str(node.get("target"))
        if not (target.startswith("torch.ops.aten.") or target in STRUCTURAL):
            raise Rejected(f"the hand-off calls {target[:120]}: only torch.ops.aten operators are allowed")
        bad = FORBIDDEN_ARGS.intersection(walk_args([node.get("inputs"), node.get("outputs")]))
        if bad:
            raise Rejected(f"the hand-off passes {sorted(bad)[0]} to {target[:120]}")
    inputs = [s for s in signature["input_specs"] if "user_input" in s]
    outputs = signature["output_specs"]
    if len(inputs) != 1 or [list(s) for s in outputs] != [["user_output"]]:
        raise Rejected("the hand-off must be model(idx) -> logits: one input, one output, no state it changes")


def check_graph(program) -> None:
    """After loading: every operator is an aten one (what the archive said is what was built)."""
    import operator

    import torch
    for node in program.graph.nodes:
        if node.op not in ("call_function", "placeholder", "output"):
            raise Rejected(f"the hand-off's graph has a {node.op} node")
        if node.op == "call_function" and node.target is not operator.getitem and not (
                isinstance(node.target, torch._ops.OpOverload) and node.target.namespace == "aten"):
            raise Rejected(f"the hand-off calls {node.target}: only torch.ops.aten operators are allowed")


class Scorer:
    """The harness, the validation rows and the token bytes, loaded once; `score` per hand-off."""

    def __init__(self, prepare):
        import torch
        import torch.export  # noqa: F401  (its imports are most of a first load's time)
        from torch._export.serde import serialize  # noqa: F401
        self.prepare, self.torch = prepare, torch
        self.manifest = prepare.load_manifest()
        tokenizer = prepare.Tokenizer.from_directory()
        self.rows = prepare.validation_rows(tokenizer)
        self.token_bytes = prepare.get_token_bytes("cpu")
        self.vocab = len(self.token_bytes)
        self.T = self.manifest["constants"]["MAX_SEQ_LEN"]

    def score(self, path: Path) -> dict:
        torch = self.torch
        t0 = time.time()
        if not path.is_file():
            return dict(status=CRASH, reason="train.py handed no model off: it must end by calling evaluate_bpb "
                                             "(printed numbers are not believed)")
        try:
            check_archive(path)
            try:
                program = torch.export.load(str(path))
            except Rejected:
                raise
            except Exception as e:
                raise Rejected(f"the hand-off does not load ({type(e).__name__}: {first_line(e)})") from None
            check_graph(program)
            return self.measure(program, t0)
        except Rejected as e:
            return dict(status=REJECTED, reason=str(e))
        finally:
            if torch.cuda.is_initialized():
                torch.cuda.empty_cache()  # the next run trains on this GPU

    def measure(self, program, t0: float) -> dict:
        torch, prepare = self.torch, self.prepare
        user = program.graph_signature.user_inputs
        idx = next(n.meta["val"] for n in program.graph.nodes if n.op == "placeholder" and n.name in user)
        if idx.dim() != 2 or idx.shape[1] != self.T or idx.dtype != torch.long:
            raise Rejected(f"the hand-off takes {tuple(idx.shape)} {idx.dtype}: expected (batch, {self.T}) int64 tokens")
        devices = {t.device for t in list(program.state_dict.values()) + list(program.constants.values())
                   if isinstance(t, torch.Tensor)} or {idx.device}
        if len(devices) != 1:
            raise Rejected(f"the hand-off's weights lie on {len(devices)} devices: one is expected")
        device, batch = devices.pop(), idx.shape[0]
        module = program.module()

        def logits_of(x):
            n = x.size(0)
            padded = torch.cat([x, x.new_zeros(batch - n, x.size(1))]) if n < batch else x
            logits = module(padded)
            if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
                raise Rejected("the hand-off must return a tensor of logits")
            return logits[:n]

        with torch.no_grad():
            try:
                nats, nbytes, uniform_nats = prepare.score_rows(logits_of, self.rows, self.token_bytes.to(device),
                                                                batch, device)
            except ValueError as e:
                raise Rejected(str(e)) from None
            t_eval = time.time()
            probe = self.probe(logits_of, batch, device)
        val_bpb, uniform_bpb = nats / (math.log(2) * nbytes), uniform_nats / (math.log(2) * nbytes)
        if not math.isfinite(val_bpb) or val_bpb <= 0:
            raise Rejected(f"val_bpb {val_bpb} is not physically possible")
        if val_bpb > uniform_bpb * (1 + UNIFORM_SLACK):
            raise Rejected(f"val_bpb {val_bpb:.6f} is above a uniform model's {uniform_bpb:.6f}")
        return dict(status=OK, val_bpb=val_bpb, nats=nats, eval_bytes=nbytes, eval_tokens=int(self.rows[:, 1:].numel()),
                    uniform_bpb=uniform_bpb, batch_size=batch, device=str(device), probe=probe,
                    eval_seconds=round(t_eval - t0, 3), probe_seconds=round(time.time() - t_eval, 3),
                    profile=self.manifest["profile"], data_hash=self.manifest["data_hash"], time=time.time())

    def probe(self, logits_of, batch, device) -> dict:
        """PROBE_ROWS validation rows (at least one batch), each with its tokens from a cut onward
        replaced: the logits before the cut must stay where they were (the model may not see the
        future). As many calls as that takes at the exported batch: a model exported for one row is
        probed at as many cuts as any other, most of them at places it cannot know."""
        torch = self.torch
        T = self.T
        rng = random.Random(os.urandom(16))
        n = max(PROBE_ROWS, batch)
        x = self.prepare.to_device(self.rows[[k % len(self.rows) for k in range(n)]], device)[:, :T].contiguous()
        fixed = (1, T // 4, T // 2, T - 1)
        cuts = [fixed[k] if k < len(fixed) else rng.randrange(1, T) for k in range(n)]
        changed = x.clone()
        for row, cut in enumerate(cuts):
            shift = torch.tensor([rng.randrange(1, self.vocab) for _ in range(T - cut)], device=x.device)
            changed[row, cut:] = (changed[row, cut:] + shift) % self.vocab

        def logits(inputs):  # in calls of the exported batch, the last one padded by logits_of
            return torch.cat([logits_of(inputs[i:i + batch]).float() for i in range(0, n, batch)])

        before, after = logits(x), logits(changed)
        tolerance = PROBE_TOLERANCE * torch.finfo(torch.float32).eps * (1 + before.abs().max().item())
        worst, where = 0.0, None
        for row, cut in enumerate(cuts):
            moved = (after[row, :cut] - before[row, :cut]).abs().max().item()
            if not moved <= tolerance:  # NaN included
                raise Rejected(f"the model sees the future: changing tokens from position {cut} on moved the "
                               f"logits before it by {moved:.3g} (tolerance {tolerance:.2g})")
            if moved > worst:
                worst, where = moved, cut
        return dict(cuts=len(cuts), largest_change=worst, at_cut=where, tolerance=tolerance)


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else ""


def main(argv: list[str]) -> int:
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    prepare = load_harness(Path(argv[0]), json.loads(argv[1]) if len(argv) > 1 and argv[1] else None)
    scorer = Scorer(prepare)
    refuse_pickle()
    from harness.machine import best_device, device_name
    device = device_name(best_device())  # as the runs see it: the lab names it from here
    print("READY " + json.dumps(dict(rows=len(scorer.rows), vocab=scorer.vocab, device=device)), flush=True)
    for line in sys.stdin:
        try:
            request = json.loads(line)
            result = scorer.score(Path(request["program"]))
        except Exception as e:  # one hand-off's failure is that hand-off's, not the evaluator's
            result = dict(status=CRASH, reason=f"the evaluator failed: {type(e).__name__}: {first_line(e)}")
        print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
