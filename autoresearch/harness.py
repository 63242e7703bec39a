"""What the lab needs to know about the prepared cache, read without importing torch.

The fixed harness itself (prepare.py) is run, never imported: the lab only reads its manifest.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .workspace import LabError

PREPARE_HINT = "uv run prepare.py --source python --profile tiny"


def cache_dir(cache=None) -> Path:
    return Path(cache or os.environ.get("AUTORESEARCH_CACHE", "~/.cache/autoresearch")).expanduser().resolve()


def compile_cache_dir() -> Path:
    """Where torch.compile keeps its kernels between experiments: TORCHINDUCTOR_CACHE_DIR if set, else
    autoresearch-compile in $XDG_CACHE_HOME (default ~/.cache), which, unlike torch's own default in
    /tmp, survives a reboot. A warm one saves most of the compile time of every later experiment."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]).expanduser()
    return cache_home() / "autoresearch-compile"


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()


def read_manifest(cache=None) -> dict:
    """The cache's manifest; a missing or broken cache is a LabError naming the command that fixes it."""
    directory = cache_dir(cache)
    path = directory / "manifest.json"
    if not path.exists():
        raise LabError(f"no prepared data in {directory}: run `{PREPARE_HINT}` first (or set AUTORESEARCH_CACHE)")
    try:
        manifest = json.loads(path.read_text())
        for name, meta in manifest["files"].items():
            if (directory / name).stat().st_size != meta["bytes"]:
                raise ValueError(f"{name} has the wrong size")
        manifest["constants"]["TIME_BUDGET"], manifest["data_hash"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LabError(f"the cache in {directory} is broken ({e}): run `{PREPARE_HINT} --force`") from None
    return manifest


def validation_files(manifest: dict) -> list[str]:
    """The cache's files that hold the validation split (prepare.py's load_split("val")): the lab's
    evaluator reads them, no experiment does."""
    return sorted(name for name in manifest["files"] if Path(name).name.startswith("val"))


def device_name(device) -> str:
    """How the lab names a torch device in every row: the GPU's model, or the CPU's architecture and
    cores (imports torch: for the processes that run it, not the lab's own)."""
    import os
    import platform

    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.machine()}, {os.cpu_count()} cores)"


def probe_device(where: Path, env: dict) -> str:
    """The device train.py will run on, named by `device_name`, from a Python of the lab's own that
    imports the prepare.py in `where` (the evaluator names it otherwise). It writes torch's bytecode
    (its compiler's too) under the PYTHONPYCACHEPREFIX env keeps, as the lab's own process: sandboxed
    experiments only read it."""
    warm = "import torch._dynamo, torch._inductor.compile_fx; " if env.get("PYTHONPYCACHEPREFIX") else ""
    code = ("import prepare; " + warm + "from autoresearch.harness import device_name; "
            "print(device_name(prepare.best_device()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=where, env=env, capture_output=True, text=True,
                         timeout=120)
    if out.returncode != 0:
        raise LabError(f"could not start Python with torch in {where}: {out.stderr.strip().splitlines()[-1:]}")
    return out.stdout.strip()


# torch's files sampled for cached bytecode: its top, a layer, and the compiler that a compiled train.py
# imports later than the rest (a first run without torch.compile caches all but these)
BYTECODE_SAMPLES = ("__init__.py", "nn/modules/linear.py", "_dynamo/__init__.py", "_inductor/compile_fx.py")


def bytecode_uncached(module="torch", samples=BYTECODE_SAMPLES) -> bool:
    """Whether a package's compiled bytecode is missing where this Python looks for it (beside its
    source, or under PYTHONPYCACHEPREFIX) for any of its sampled files: PYTHONDONTWRITEBYTECODE set, a
    read-only install, or no import yet. Each train.py process would then compile torch's Python source
    again: ~2 s eager and ~8 s compiled per experiment on a 2-core machine."""
    import importlib.util
    spec = importlib.util.find_spec(module)
    if spec is None or not (spec.origin or "").endswith(".py"):
        return False
    files = [Path(spec.origin).parent / name for name in samples] if spec.submodule_search_locations else []
    files = [f for f in files if f.exists()] or [Path(spec.origin)]
    return not all(Path(importlib.util.cache_from_source(str(f))).exists() for f in files)


def bytecode_env(module="torch") -> dict:
    """What train.py processes need in their environment so that they write the module's bytecode
    once and reuse it: nothing where it is cached already; else PYTHONDONTWRITEBYTECODE off for them,
    and, unless the user chose a PYTHONPYCACHEPREFIX, autoresearch-pyc in $XDG_CACHE_HOME (~/.cache)."""
    if not bytecode_uncached(module):
        return {}
    prefix = os.environ.get("PYTHONPYCACHEPREFIX") or str(cache_home() / "autoresearch-pyc")
    return {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": prefix}


def load_prepare():
    """The repository's prepare.py as the module `prepare` (the one already imported, if it is that
    file), for the parts of the lab that display what the harness made."""
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "prepare.py"
    module = sys.modules.get("prepare")
    if module is not None and Path(getattr(module, "__file__", "")).resolve() == path:
        return module
    spec = importlib.util.spec_from_file_location("prepare", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["prepare"] = module
    spec.loader.exec_module(module)
    return module
