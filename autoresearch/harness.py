"""The lab's side of the harness: the prepared cache read through harness/manifest.py (no torch), the
harness's protected files, and the caches the lab keeps for its runs (compiled kernels, bytecode).

The fixed harness itself (prepare.py, harness/) runs in the processes the lab starts, never in the lab.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness import manifest as _manifest

from .workspace import LabError

def cache_dir(cache=None) -> Path:
    return _manifest.cache_dir(cache).resolve()


def is_harness(path: str) -> bool:
    """Whether a tracked file is part of the harness that runs train.py and scores it: prepare.py and
    the harness package (the lab's evaluator runs exactly these, each checked by its hash)."""
    return path == "prepare.py" or (path.startswith("harness/") and path.endswith(".py"))


def compile_cache_dir() -> Path:
    """Where torch.compile keeps its kernels between experiments: TORCHINDUCTOR_CACHE_DIR if set, else
    autoresearch-compile in $XDG_CACHE_HOME (default ~/.cache), which, unlike torch's own default in
    /tmp, survives a reboot. A warm one saves most of the compile time of every later experiment."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]).expanduser()
    return cache_home() / "autoresearch-compile"


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()


def harness_hashes(root: Path) -> dict[str, str]:
    """sha256 of each file of the harness under root as it is on disk (what `is_harness` names)."""
    import hashlib
    root = Path(root)
    files = [root / "prepare.py", *sorted((root / "harness").glob("*.py"))]
    return {f.relative_to(root).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def copy_harness(root: Path, dest: Path) -> None:
    """prepare.py and harness/ from a checkout into dest, a folder to run a train.py in."""
    import shutil
    for name in harness_hashes(root):
        (Path(dest) / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(root) / name, Path(dest) / name)


def read_manifest(cache=None) -> dict:
    """The cache's manifest; a missing or broken cache is a LabError naming the command that fixes it."""
    try:
        return _manifest.load_manifest(cache_dir(cache))
    except _manifest.CacheError as e:
        raise LabError(str(e)) from None


validation_files = _manifest.validation_files


def prepared_caches(*more) -> list[tuple[Path, dict]]:
    """The prepared caches on this machine, each with its manifest: the one in use (AUTORESEARCH_CACHE
    or the default), those beside it and in the user's cache folder named autoresearch*, and any
    given; a folder without a readable manifest is left out."""
    home, default = cache_home(), cache_dir()
    candidates = [default, *more, *sorted(default.parent.glob("autoresearch*")), *sorted(home.glob("autoresearch*"))]
    found: dict[Path, dict] = {}
    for path in candidates:
        path = Path(path).expanduser().resolve()
        if path not in found and (path / "manifest.json").is_file():
            try:
                found[path] = read_manifest(path)
            except LabError:
                continue
    return list(found.items())


def describe_cache(path: Path, manifest: dict) -> str:
    """One line: where a cache is, its profile, its training budget per run and its source."""
    source = manifest.get("source")
    kind = source.get("name") if isinstance(source, dict) else source
    return (f"{path} ({manifest['profile']} profile, {manifest['constants']['TIME_BUDGET']} s per run"
            + (f", {kind} source" if kind else "") + ")")


def probe_device(where: Path, env: dict) -> str:
    """The device train.py will run on, named by `device_name`, from a Python of the lab's own that
    imports the prepare.py in `where` (the evaluator names it otherwise). It writes torch's bytecode
    (its compiler's too) under the PYTHONPYCACHEPREFIX env keeps, as the lab's own process: sandboxed
    experiments only read it."""
    warm = "import torch._dynamo, torch._inductor.compile_fx; " if env.get("PYTHONPYCACHEPREFIX") else ""
    code = ("import prepare; " + warm + "from harness.machine import best_device, device_name; "
            "print(device_name(best_device()))")
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
