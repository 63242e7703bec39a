"""harness/machine.py: what train.py asks of the machine, in-process on the CPU.
Run: uv run pytest tests/test_machine.py"""
import pytest
import torch
from torch._dynamo.exc import BackendCompilerFailed

from harness.machine import Compiled, Machine


def test_mfu_comes_from_the_gpu_s_peak_and_is_not_made_up_elsewhere(capsys):
    machine = Machine("cpu")
    assert "fp32 on cpu" in capsys.readouterr().out  # less than the fastest is said
    assert machine.mfu(1e9, 1e5) == "n/a" and machine.peak_flops() is None
    machine.device = torch.device("cuda")  # as a GPU would name itself; nothing runs on it here
    machine.name = "NVIDIA H100 80GB HBM3"
    assert machine.mfu(1e9, 1e5) == f"{100 * 1e14 / 989.5e12:.1f}%"
    machine.name = "NVIDIA H100 PCIe"  # the longer name wins over "H100"
    assert machine.mfu(1e9, 1e5, digits=2, sign="") == f"{100 * 1e14 / 756e12:.2f}"
    machine.name = "Some Future GPU"
    assert machine.mfu(1e9, 1e5) == "n/a"


def test_only_a_compiler_failure_falls_back_to_eager(capsys):
    calls, fallbacks = [], []

    def eager(x):
        calls.append("eager")
        return x + 1

    def broken_compiler(x):
        raise BackendCompilerFailed("inductor", RuntimeError("no working C++ compiler"), None)

    step = Compiled(eager, "thing", enabled=False, on_fallback=lambda: fallbacks.append(1))
    step.current = broken_compiler  # what torch.compile gave, failing as a missing compiler does
    assert step(1) == 2 and step(2) == 3 and len(fallbacks) == 1  # once, then eager from there on
    assert "the compiled thing failed (BackendCompilerFailed" in capsys.readouterr().out

    def broken_model(x):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    step = Compiled(eager, "model", enabled=False)
    step.current = broken_model
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):  # the model's own error
        step(1)
