"""The lab's evaluator: val_bpb computed outside the experiment from the model it handed off, shown by
agreement with the in-process evaluation and by hand-offs that try to cheat and are rejected: a model
that sees the future, one worse than knowing nothing, state that changes between calls, and archives
crafted to run code or hide objects.
Run: uv run pytest tests/test_evaluator.py"""
import json
import math
import pickle
import zipfile

import pytest
import torch
import torch.nn as nn

import prepare
from autoresearch import ledger, runner
from autoresearch.evaluator import Evaluator
from autoresearch.harness import harness_hashes
from conftest import ROOT


class Honest(nn.Module):
    """Better than knowing nothing: the training split's unigram as the bias, plus a little that depends
    on the token read (through a small embedding), so that the logits vary with the input."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        vocab = prepare.Tokenizer.from_directory().get_vocab_size()
        train, _ = prepare.load_split("train")
        counts = torch.bincount(torch.from_numpy(train[:200_000].astype("int64")), minlength=vocab) + 1.0
        self.embed = nn.Embedding(vocab, 8)
        self.head = nn.Linear(8, vocab)
        with torch.no_grad():
            self.head.bias.copy_(torch.log(counts / counts.sum()))
            self.head.weight.mul_(0.1)

    def forward(self, x, y=None, reduction="mean"):
        return self.head(self.embed(x))


@pytest.fixture(scope="module")
def evaluator(tiny_cache, tmp_path_factory):
    """One evaluator for the module's tests, kept warm between hand-offs as the lab keeps it."""
    judge = Evaluator(ROOT, harness_hashes(ROOT), {"AUTORESEARCH_CACHE": str(tiny_cache), "AUTORESEARCH_DEVICE": "cpu"},
                      log=tmp_path_factory.mktemp("evaluator") / "evaluator.log")
    yield judge
    judge.close()


def hand_off(model, path, batch=16):
    prepare.hand_off(model, batch, path)
    return path


class SeesTheFuture(Honest):
    """Honest logits, plus a bonus on the token that comes next in its own input."""

    def forward(self, x, y=None, reduction="mean"):
        logits = super().forward(x)
        following = torch.cat([x[:, 1:], x[:, :1]], dim=1)
        return logits + 30 * nn.functional.one_hot(following, logits.size(-1)).to(logits.dtype)


class WorseThanNothing(Honest):
    """Sure of the one token it just read: wrong almost everywhere."""

    def forward(self, x, y=None, reduction="mean"):
        return 30 * nn.functional.one_hot(x, self.head.out_features).float()


class Counting(Honest):
    """Keeps a count across calls in a buffer: a program with state it changes."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x, y=None, reduction="mean"):
        self.calls.add_(1)
        return super().forward(x) + 0 * self.calls


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_the_evaluator_agrees_with_the_in_process_evaluation(use_cache, evaluator, tmp_path, device):
    """The same weights score the same in train.py's process and in the evaluator (which runs the
    program on the device it was exported on), and the causality probe passes an honest model."""
    model = Honest(seed=5).to(device)
    alone = prepare.evaluate_bpb(model, prepare.Tokenizer.from_directory(), 16)
    for batch in (16, 24):  # one that divides the rows, one that leaves a short last batch to pad
        scored = evaluator.score(hand_off(model, tmp_path / f"model-{batch}.pt2", batch), timeout=300)
        assert scored.status == runner.OK, scored.reason
        assert scored.val_bpb == pytest.approx(alone, rel=1e-9)
        record = scored.record
        assert record["eval_tokens"] == prepare.EVAL_TOKENS and record["batch_size"] == batch
        assert record["device"].startswith(device)
        assert record["probe"]["cuts"] == batch and record["probe"]["largest_change"] <= record["probe"]["tolerance"]
        assert record["val_bpb"] < record["uniform_bpb"]
    assert evaluator.proc.poll() is None  # kept warm across hand-offs


def test_a_model_that_sees_the_future_is_rejected(use_cache, evaluator, tmp_path):
    scored = evaluator.score(hand_off(SeesTheFuture(), tmp_path / "m.pt2"), timeout=300)
    assert scored.status == ledger.REJECTED and "sees the future" in scored.reason, scored.reason
    assert scored.val_bpb is None


class PeeksAwayFromTheFixedCuts(Honest):
    """Sees the next token everywhere but at the positions a fixed cut would catch (0, T/4 - 1,
    T/2 - 1, T - 2): only cuts at places it cannot know find it."""

    def forward(self, x, y=None, reduction="mean"):
        logits = super().forward(x)
        T = x.size(1)
        mask = torch.full((T,), 30.0)
        mask[[0, T // 4 - 1, T // 2 - 1, T - 2, T - 1]] = 0.0
        following = torch.cat([x[:, 1:], x[:, :1]], dim=1)
        return logits + mask[None, :, None] * nn.functional.one_hot(following, logits.size(-1)).to(logits.dtype)


@pytest.mark.parametrize("batch", [1, 2, 16])
def test_a_model_that_sees_the_future_is_rejected_whatever_batch_it_was_exported_for(use_cache, evaluator, tmp_path,
                                                                                      batch):
    """A model exported for one row is probed at as many cuts as one exported for sixteen."""
    scored = evaluator.score(hand_off(SeesTheFuture(), tmp_path / "m.pt2", batch=batch), timeout=300)
    assert scored.status == ledger.REJECTED and "sees the future" in scored.reason, scored.reason
    scored = evaluator.score(hand_off(PeeksAwayFromTheFixedCuts(), tmp_path / "p.pt2", batch=batch), timeout=300)
    assert scored.status == ledger.REJECTED and "sees the future" in scored.reason, scored.reason
    honest = evaluator.score(hand_off(Honest(), tmp_path / "h.pt2", batch=batch), timeout=300)
    assert honest.status == runner.OK and honest.record["probe"]["cuts"] >= 16, honest


def test_values_no_real_model_reaches_are_rejected(use_cache, evaluator, tmp_path):
    scored = evaluator.score(hand_off(WorseThanNothing(), tmp_path / "m.pt2"), timeout=300)
    assert scored.status == ledger.REJECTED and "above a uniform model's" in scored.reason, scored.reason


def test_a_program_with_state_it_changes_is_rejected(use_cache, evaluator, tmp_path):
    scored = evaluator.score(hand_off(Counting(), tmp_path / "m.pt2"), timeout=300)
    assert scored.status == ledger.REJECTED and "no state it changes" in scored.reason, scored.reason


class Boom:
    """Unpickling this would leave a marker file: the attack's evidence."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def rewrite(source, target, change):
    """A copy of the archive `source` with change(name, data) -> data applied to each entry."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, change(item.filename, zin.read(item.filename)))
    return target


def edit_graph(edit):
    def change(name, data):
        if name.endswith("models/model.json"):
            program = json.loads(data)
            edit(program)
            return json.dumps(program).encode()
        return data
    return change


def test_crafted_archives_are_rejected_before_anything_in_them_runs(use_cache, evaluator, tmp_path):
    honest = hand_off(Honest(), tmp_path / "honest.pt2")
    marker = tmp_path / "pwned"

    def call_system(program):
        program["graph_module"]["graph"]["nodes"][0]["target"] = "os.system"

    def guards(program):
        program["guards_code"] = ["__import__('os').system('touch " + str(marker) + "')"]

    def pickled(name, data):
        if name.endswith("_config.json"):
            config = json.loads(data)
            for meta in config["config"].values():
                meta["use_pickle"] = True
            return json.dumps(config).encode()
        if "/data/weights/" in name and not name.endswith(".json"):
            return pickle.dumps(Boom(str(marker)))
        return data

    crafted = {"calls os.system": (edit_graph(call_system), "only torch.ops.aten operators"),
               "guards code": (edit_graph(guards), "dynamic shapes or guards"),
               "pickled weights": (pickled, "pickled weights")}
    for i, (what, (change, reason)) in enumerate(crafted.items()):
        scored = evaluator.score(rewrite(honest, tmp_path / f"crafted-{i}.pt2", change), timeout=300)
        assert scored.status == ledger.REJECTED and reason in scored.reason, (what, scored.reason)
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(pickle.dumps(Boom(str(marker))))
    scored = evaluator.score(junk, timeout=300)
    assert scored.status == ledger.REJECTED and "not a torch.export archive" in scored.reason
    assert not marker.exists()
    assert evaluator.score(honest, timeout=300).status == runner.OK  # and it goes on scoring


def test_no_hand_off_and_a_dead_evaluator_are_crashes_with_a_reason(use_cache, evaluator, tmp_path):
    scored = evaluator.score(tmp_path / "missing.pt2", timeout=300)
    assert scored.status == ledger.CRASH and "handed no model off" in scored.reason
    program = hand_off(Honest(), tmp_path / "m.pt2")
    evaluator.ready(300)
    runner.kill_group(evaluator.proc.pid, evaluator.proc)
    scored = evaluator.score(program, timeout=300)  # started again for this hand-off
    assert scored.status == runner.OK and math.isfinite(scored.val_bpb)
    assert evaluator.is_ready  # its start-up line was read on the way: the next run does not wait for it


class KilledOnRequest:
    """An evaluator's stdin that kills its process once a request has gone through it, while the
    request is unanswered: an outside kill halfway through a hand-off, without a race."""

    def __init__(self, proc, kills: list):
        self.proc, self.stream, self.kills = proc, proc.stdin, kills

    def write(self, text):
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()
        if self.kills[0]:
            self.kills[0] -= 1
            self.proc.kill()

    def close(self):
        self.stream.close()


def test_an_evaluator_killed_while_it_scores_is_started_again_and_only_a_second_death_is_a_crash(use_cache, tmp_path):
    """Killed from outside while it scores a hand-off (an OOM killer, a person): the run is scored by a
    fresh evaluator, not recorded as the experiment's crash. Killed again once started anew: a crash
    that says both."""
    program = hand_off(Honest(), tmp_path / "m.pt2")
    judge = Evaluator(ROOT, harness_hashes(ROOT), {"AUTORESEARCH_CACHE": str(use_cache), "AUTORESEARCH_DEVICE": "cpu"})
    kills = [0]
    started = judge.start

    def start():
        started()
        if not isinstance(judge.proc.stdin, KilledOnRequest):
            judge.proc.stdin = KilledOnRequest(judge.proc, kills)

    judge.start = start
    try:
        alone = judge.score(program, timeout=300)
        assert alone.status == runner.OK, alone.reason
        kills[0] = 1
        pid = judge.proc.pid
        scored = judge.score(program, timeout=300)
        assert scored.status == runner.OK and scored.val_bpb == pytest.approx(alone.val_bpb), scored
        assert judge.proc.pid != pid and kills == [0]  # scored by a fresh one
        kills[0] = 2
        scored = judge.score(program, timeout=300)
        assert scored.status == ledger.CRASH and "(killed by signal 9), and again when started anew" in scored.reason, \
            scored.reason
    finally:
        judge.close()


@pytest.mark.parametrize("changed", ["prepare.py", "harness/packing.py"])
def test_a_changed_harness_is_not_run(use_cache, tmp_path, changed):
    hashes = dict(harness_hashes(ROOT), **{changed: "0" * 64})
    judge = Evaluator(ROOT, hashes, {"AUTORESEARCH_CACHE": str(use_cache)})
    try:
            scored = judge.score(hand_off(Honest(), tmp_path / "m.pt2"), timeout=300)
    finally:
        judge.close()
    assert scored.status == ledger.CRASH and f"{changed} is not the protected" in scored.reason, scored.reason
