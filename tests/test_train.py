"""train.py end to end as a subprocess against the tiny cache (a 4-second budget): on the CPU, and
on CUDA where a GPU is present.
Run: uv run pytest tests/test_train.py"""
import json
import math
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, python_env, run_script

SEED_SUMMARY_KEYS = ["val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
                     "total_tokens_M", "num_steps", "num_params_M", "depth"]
PROGRESS = re.compile(r"^step (\d+) \| +([\d.]+)% \| loss ([\d.]+) \| .* \| ([\d,]+) tok/s \|")


def summary(stdout):
    block = stdout.split("\n---\n", 1)[1]
    return dict(line.split(":", 1) for line in block.strip().splitlines() if ":" in line)


def progress_lines(stdout):
    """The progress lines, parsed (None for one that does not parse)."""
    return [PROGRESS.match(line) for line in stdout.splitlines() if line.startswith("step ")]


def test_tiny_run_prints_the_summary_and_writes_the_result(tiny_cache, tmp_path):
    result = tmp_path / "result.json"
    out = run_script(ROOT / "train.py", ROOT, python_env(tiny_cache, AUTORESEARCH_RESULT=result))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    values = {k: v.strip() for k, v in summary(out.stdout).items()}
    assert list(values)[:len(SEED_SUMMARY_KEYS)] == SEED_SUMMARY_KEYS
    record = json.loads(result.read_text())
    assert f"{record['val_bpb']:.6f}" == values["val_bpb"]
    assert values["mfu_percent"] == "n/a"  # no peak figure for a CPU
    assert 4.0 <= float(values["training_seconds"]) < 4.0 + 5
    assert float(values["total_seconds"]) < 4.0 + 60
    progress = progress_lines(out.stdout)
    assert progress and all(progress)
    assert [int(m.group(1)) for m in progress] == list(range(len(progress))) == list(range(int(values["num_steps"])))
    assert re.search(r"^provenance: commit \S+ \| torch \S+ \| python \S+ \| device cpu", out.stdout, re.M)
    assert "no torch.compile on cpu" in out.stdout  # fallbacks are announced
    # better than a model that knows nothing (uniform over the vocabulary), after the ~10 steps that fit in
    # 4 s on 2 cores: ~0.79 of it, and 0.82 with a step fewer on a busy machine; untrained, 1.0
    token_bytes = np.load(tiny_cache / "tokenizer" / "token_bytes.npy")
    uniform_bpb = record["eval_tokens"] * math.log2(len(token_bytes)) / record["eval_bytes"]
    assert record["val_bpb"] < 0.9 * uniform_bpb


def test_divergence_fails_fast_without_a_result(tiny_cache, tmp_path):
    shutil.copy(ROOT / "prepare.py", tmp_path)
    source = (ROOT / "train.py").read_text()
    broken = re.sub(r"^MATRIX_LR = .*$", 'MATRIX_LR = float("nan")', source, flags=re.M)
    assert broken != source
    (tmp_path / "train.py").write_text(broken)
    result = tmp_path / "result.json"
    out = run_script(tmp_path / "train.py", tmp_path, python_env(tiny_cache, AUTORESEARCH_RESULT=result))
    assert out.returncode != 0
    assert "FAIL: training diverged at step" in out.stdout
    assert not result.exists() and "\n---\n" not in out.stdout


SEED_STYLE = '''
import torch, torch.nn as nn, torch.nn.functional as F
from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, make_dataloader, evaluate_bpb

tokenizer = Tokenizer.from_directory()
vocab_size = tokenizer.get_vocab_size()
bos = tokenizer.get_bos_token_id()
assert tokenizer.encode("hello", prepend=bos)[0] == bos

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, vocab_size)
    def forward(self, idx, targets=None, reduction="mean"):
        logits = self.emb(idx)
        return F.cross_entropy(logits.view(-1, vocab_size), targets.view(-1), ignore_index=-1, reduction=reduction)

model = Model().to("cpu")
opt = torch.optim.Adam(model.parameters(), lr=0.1)
loader = make_dataloader(tokenizer, 8, MAX_SEQ_LEN, "train")
x, y, epoch = next(loader)
for step in range(20):
    loss = model(x, y)
    loss.backward()
    opt.step()
    opt.zero_grad()
    x, y, epoch = next(loader)
print(f"val_bpb: {evaluate_bpb(model, tokenizer, 32):.6f} budget {TIME_BUDGET}")
'''


def test_a_train_py_written_for_the_original_harness_still_works(tiny_cache, tmp_path):
    shutil.copy(ROOT / "prepare.py", tmp_path)
    (tmp_path / "train.py").write_text(SEED_STYLE)
    out = run_script(tmp_path / "train.py", tmp_path, python_env(tiny_cache))
    assert out.returncode == 0, out.stderr[-3000:]
    match = re.search(r"val_bpb: ([\d.]+) budget 4", out.stdout)
    assert match and 0 < float(match.group(1)) < 20


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_the_compiled_path_with_short_windows_trains_and_evaluates_like_the_eager_model(tiny_cache, tmp_path,
                                                                                        device):
    """What CUDA runs by default: torch.compile of the model with a short window (through flex_attention
    on CUDA; a dense mask on the CPU, where flex_attention has no backward pass), the compiled Muon
    step, losses read one step late, evaluation through the compiled model; on the CPU forced with
    AUTORESEARCH_COMPILE=1 and REPORT_LATE. The compiled evaluation must agree with the eager
    model's on the same weights, and run through the training graph: no recompilation of the model,
    even with evaluation batches (24 rows) that are not the training batch (16)."""
    shutil.copy(ROOT / "prepare.py", tmp_path)
    source = (ROOT / "train.py").read_text()
    variant = re.sub(r"^WINDOW_PATTERN = .*$", 'WINDOW_PATTERN = "SL"', source, flags=re.M)
    # the loop as on CUDA: each step's loss read one step late, the last one after the loop
    variant, late = re.subn(r"^REPORT_LATE = .*$", "REPORT_LATE = True", variant, flags=re.M)
    variant, batch = re.subn(r"^FINAL_EVAL_BATCH_SIZE = .*$", "FINAL_EVAL_BATCH_SIZE = 24", variant, flags=re.M)
    marker = "t_end = time.time()\n"
    assert variant != source and late == 1 and batch == 1 and marker in variant
    eager = "with autocast:\n    print(f\"eager val_bpb: {evaluate_bpb(model, tokenizer, 7):.6f}\")\n"
    (tmp_path / "train.py").write_text(variant.replace(marker, marker + eager, 1))
    env = python_env(tiny_cache, AUTORESEARCH_COMPILE="1", TORCHINDUCTOR_CACHE_DIR=tmp_path / "inductor",
                     AUTORESEARCH_DEVICE=device, TORCH_LOGS="recompiles")
    out = run_script(tmp_path / "train.py", tmp_path, env, timeout=540)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "no torch.compile" not in out.stdout and "failed" not in out.stdout  # no fallback of any kind
    assert "Recompiling function muon_update" in out.stderr  # the log is on: one graph per shape
    assert "Recompiling function forward" not in out.stderr, out.stderr[-3000:]
    assert re.search(r"^model: .* windows \[128, 256\]", out.stdout, re.M)  # a short window is in effect
    assert ("through a dense mask" in out.stdout) == (device == "cpu")  # flex_attention on CUDA
    values = {k: v.strip() for k, v in summary(out.stdout).items()}
    assert [int(m.group(1)) for m in progress_lines(out.stdout)] == list(range(int(values["num_steps"])))
    assert float(values["first_step_seconds"]) > 0
    compiled, eager = float(values["val_bpb"]), float(re.search(r"eager val_bpb: ([\d.]+)", out.stdout).group(1))
    tolerance = 1e-3 if device == "cpu" else 5e-3  # fp32 on the CPU, bf16 autocast on CUDA
    assert abs(compiled - eager) < tolerance * eager, (compiled, eager)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_compiled_training_step_holds_no_second_copy_of_the_logits(tiny_cache, tmp_path):
    """The compiled model returns per-token losses beside the mean (the evaluation reads them from the
    same graph), and training takes its gradients from the mean: its training peak is that of a model
    that returns the mean alone, give or take a small buffer. Gradients from per-token losses summed
    outside the graph hold a second bf16 copy of the logits (4 GiB at the h100 profile's batch): that
    variant is measured too, to show the probe sees such a copy. 128 rows per micro-batch, as in the
    h100 profile, so the copy (256 MiB) stands well above the tiny model's run-to-run wander (~20 MiB
    at 16 rows on an H200). The three runs go in parallel, each its own process, compile cache and peak."""
    source = (ROOT / "train.py").read_text()
    ours = '        loss = m(x, y) if m is model else m(x, y, reduction="both")[0]\n'
    marker = "t_eval = time.time()\n"
    probe = 'print(f"training peak: {torch.cuda.max_memory_allocated()}", flush=True)\n'
    assert source.count(ours) == 1 and source.count(marker) == 1
    rows, seq_len = 128, 256
    source, n1 = re.subn(r"^DEVICE_BATCH_SIZE = .*$", f"DEVICE_BATCH_SIZE = {rows}", source, flags=re.M)
    source, n2 = re.subn(r"^TOTAL_BATCH_SIZE = .*$", f"TOTAL_BATCH_SIZE = {rows * seq_len}", source, flags=re.M)
    assert n1 == n2 == 1
    variants = {"ours": ours, "mean alone": "        loss = m(x, y)\n",
                "per-token": '        loss = m(x, y, reduction="none").sum() / (y != -1).sum()\n'}
    runs = {}
    for name, line in variants.items():
        folder = tmp_path / name.replace(" ", "_")
        folder.mkdir()
        shutil.copy(ROOT / "prepare.py", folder)
        (folder / "train.py").write_text(source.replace(ours, line).replace(marker, probe + marker))
        env = python_env(tiny_cache, AUTORESEARCH_COMPILE="1", AUTORESEARCH_DEVICE="cuda",
                         TORCHINDUCTOR_CACHE_DIR=folder / "inductor")
        runs[name] = subprocess.Popen([sys.executable, "train.py"], cwd=folder, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peaks = {}
    for name, proc in runs.items():
        out = proc.communicate(timeout=540)[0]
        assert proc.returncode == 0, out[-3000:]
        assert "failed" not in out and f"of {rows}x{seq_len}" in out  # compiled, at this batch
        peaks[name] = int(re.search(r"^training peak: (\d+)$", out, re.M).group(1))
    copy = rows * seq_len * len(np.load(tiny_cache / "tokenizer" / "token_bytes.npy")) * 2  # bf16 logits
    mib = {name: round(peak / 2**20, 1) for name, peak in peaks.items()}
    assert peaks["per-token"] - peaks["mean alone"] >= 0.75 * copy, mib  # the probe sees a copy
    assert peaks["ours"] - peaks["mean alone"] <= 0.25 * copy, mib


def test_a_broken_compiler_costs_speed_not_the_experiment(tiny_cache, tmp_path):
    """torch.compile asked for, but the C++ compiler it needs is missing (CXX names none): train.py
    says so loudly, trains and evaluates the eager model, and reports a result."""
    shutil.copy(ROOT / "prepare.py", tmp_path)
    shutil.copy(ROOT / "train.py", tmp_path)
    env = python_env(tiny_cache, AUTORESEARCH_COMPILE="1", CXX=tmp_path / "no-such-c++",
                     TORCHINDUCTOR_CACHE_DIR=tmp_path / "inductor")
    out = run_script(tmp_path / "train.py", tmp_path, env, timeout=540)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "no torch.compile" not in out.stdout  # compile was attempted
    banner = r"^!! the compiled model failed \(.+\): running eagerly, slower \(AUTORESEARCH_COMPILE=0"
    assert re.search(banner, out.stdout, re.M)
    assert "compiled Muon step failed" in out.stdout
    values = {k: v.strip() for k, v in summary(out.stdout).items()}
    assert [int(m.group(1)) for m in progress_lines(out.stdout)] == list(range(int(values["num_steps"])))
    assert 0 < float(values["val_bpb"]) < 5  # trained: the unigram model is at ~3.5 on this cache
