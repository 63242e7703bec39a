"""What train.py asks of the machine it runs on, behind one small interface:

    machine = Machine()             # the device, bf16 or not, compiled or not; a banner for anything less
    with machine.autocast: ...      # the precision; machine.compute_dtype for activations
    step = machine.compiled(fn)     # compiled where it pays, eager from the first compiler failure on
    machine.provenance(...)         # what produced the run, one line
    machine.mfu(flops_per_token, tokens_per_s), machine.summary(val_bpb, ...)

The lab's evaluator names the device with `device_name` too.
"""
import os
import platform
import resource
import subprocess

import torch

# dense bf16 tensor-core peak in TFLOP/s, for MFU; longer names first so "H100 PCIe" wins over "H100"
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.5), ("H200", 989.5), ("H800", 989.5), ("GH200", 989.5),
               ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0),
               ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("RTX 4090", 165.2), ("RTX 3090", 71.0)]


def banner(message):
    print(f"{'!' * 78}\n!! {message}\n{'!' * 78}", flush=True)


def best_device():
    """cuda, then mps, then cpu; AUTORESEARCH_DEVICE forces one."""
    if os.environ.get("AUTORESEARCH_DEVICE"):
        return torch.device(os.environ["AUTORESEARCH_DEVICE"])
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_name(device):
    """How a device is named in every log and ledger row: the GPU's model, or the CPU's architecture and cores."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.machine()}, {os.cpu_count()} cores)"


def compiler_failed(error):
    """Whether an error is the compiler's own (no working C++ compiler, a GPU that Triton does not
    support), not the model's: a broken model edit fails with its own error, compiled or not."""
    from torch._dynamo.exc import BackendCompilerFailed
    return isinstance(error, BackendCompilerFailed) or type(error).__module__.split(".")[0] == "triton"


class Compiled:
    """fn compiled (when the machine compiles), else fn itself. From the first compiler failure on, fn
    itself, after on_fallback() and a banner: a compiler failure must not cost the experiment. Any
    other error (the model's own, out of memory) is raised."""

    def __init__(self, fn, what, enabled, on_fallback=None):
        self.eager, self.what, self.on_fallback = fn, what, on_fallback
        self.current = torch.compile(fn, dynamic=False) if enabled else fn

    def run(self, step, *args):
        """step(the compiled fn, *args); after a compiler failure step(fn, *args), now and from then on."""
        try:
            return step(self.current, *args)
        except Exception as e:
            if self.current is self.eager or not compiler_failed(e):
                raise
            lines = str(e).strip().splitlines()
            banner(f"the compiled {self.what} failed ({type(e).__name__}: {lines[0][:200] if lines else ''}): "
                   "running it eagerly, slower (AUTORESEARCH_COMPILE=0 skips the attempt)")
            self.current = self.eager
            if self.on_fallback:
                self.on_fallback()
            return step(self.current, *args)

    def __call__(self, *args, **kwargs):
        return self.run(lambda fn: fn(*args, **kwargs))


class Machine:
    """The device train.py runs on and how: bf16 autocast on CUDA GPUs that have it, torch.compile on
    CUDA (AUTORESEARCH_COMPILE=0 turns it off, =1 on everywhere), flex_attention where compiled on
    CUDA, TF32 matmuls. Each thing less than the fastest is said in a banner."""

    def __init__(self, device=None):
        self.device = torch.device(device) if device is not None else best_device()
        on_cuda = self.device.type == "cuda"
        self.bf16 = on_cuda and torch.cuda.is_bf16_supported()
        self.compile = os.environ.get("AUTORESEARCH_COMPILE", "1" if on_cuda else "0") != "0"
        self.flex = self.compile and on_cuda  # flex_attention has no backward pass on the CPU
        self.autocast = torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)
        self.compute_dtype = torch.bfloat16 if self.bf16 else torch.float32  # activations; parameters stay fp32
        self.name = device_name(self.device)
        if not self.bf16:
            why = "this GPU lacks bf16" if on_cuda else "bf16 is slow off CUDA"
            banner(f"fp32 on {self.device.type}: no bf16 autocast ({why})")
        if not self.compile:
            why = "disabled by AUTORESEARCH_COMPILE=0" if on_cuda else \
                "compiling costs more than it saves in a short budget (AUTORESEARCH_COMPILE=1 forces it)"
            banner(f"no torch.compile on {self.device.type}: {why}")
        if on_cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def compiled(self, fn, what, on_fallback=None):
        return Compiled(fn, what, self.compile, on_fallback)

    def provenance(self, profile, seed):
        try:
            out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
            commit = out.stdout.strip() or "none"
        except (OSError, subprocess.TimeoutExpired):
            commit = "none"
        print(f"provenance: commit {commit} | torch {torch.__version__} | python {platform.python_version()} | "
              f"device {self.name} | profile {profile} | seed {seed}", flush=True)

    def peak_flops(self):
        """The GPU's dense bf16 peak in FLOP/s; None on a CPU, MPS or an unknown GPU (no MFU then)."""
        if self.device.type != "cuda":
            return None
        return next((tflops * 1e12 for key, tflops in PEAK_TFLOPS if key in self.name), None)

    def mfu(self, flops_per_token, tokens_per_s, digits=1, sign="%"):
        """Model FLOPs utilization in percent, as text ("41.3%"); "n/a" where the peak is not known."""
        peak = self.peak_flops()
        return f"{100 * flops_per_token * tokens_per_s / peak:.{digits}f}{sign}" if peak else "n/a"

    def peak_memory_mb(self):
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak resident memory off CUDA

    def summary(self, val_bpb, **fields):
        """The summary block after `---`: `key: value` lines, val_bpb first (under the lab it is nan: the
        lab's evaluator computes it), then the fields given (floats to one decimal), then the device."""
        print("---")
        rows = dict(val_bpb=f"{val_bpb:.6f}", **{k: f"{v:.1f}" if isinstance(v, float) else v for k, v in fields.items()},
                    device=self.name)
        for key, value in rows.items():
            print(f"{key + ':':<17} {value}")
