"""The lab's side of the harness: the prepared cache read through harness/manifest.py (no torch), the
harness's protected files, and the caches the lab keeps for its runs (compiled kernels, bytecode).

The fixed harness itself (prepare.py, harness/) runs in the processes the lab starts, never in the lab.
"""
from __future__ import annotations

import os
import shutil
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
    """The shared compile cache, where torch.compile's kernels stay between experiments (the layers of
    `CompileLayers` start from it): TORCHINDUCTOR_CACHE_DIR if set, else autoresearch-compile in
    $XDG_CACHE_HOME (default ~/.cache), which, unlike torch's own default in /tmp, survives a reboot. A
    warm one saves most of the compile time of every later experiment."""
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


class CompileLayers:
    """Each commit's compile cache, a layer of its own. What torch.compile caches is code (generated
    modules, pickles) that every later run finding it executes, so what one experiment's runs write
    reaches only that experiment's later runs (its confirmations, its controls once it is the best):
    - a commit's first run starts from a copy of the shared cache (`compile_cache_dir`); its layer is
      kept for its later runs in `.lab/compile-layers/<commit>/` (the least recently used go first);
    - only runs of `trusted`, the run's first commit (the train.py a person wrote, never a proposal),
      add to the shared cache, file by file, each whole or not at all;
    - a run sees its commit's layer in `mount`, `.lab/compile/`, one directory whatever the commit
      (a Python started ahead has it bound in before its commit is known): `enter` moves the layer
      in before the run, `leave` moves it out after."""
    KEEP = 8  # layers kept: the best's and those of the experiments in flight are among the latest
    # not copied into a layer: C++ precompiled headers (~150 MB each on a CPU, four per commit), which
    # runs do not make (ENV below): copied per commit they filled tens of GB of a test machine's disk
    UNCOPIED = ("precompiled_headers",)
    ENV = {"TORCHINDUCTOR_CPP_CACHE_PRECOMPILE_HEADERS": "0"}

    def __init__(self, workdir: Path, trusted: str, shared: Path | None = None):
        self.trusted, self.shared = trusted, Path(shared or compile_cache_dir())
        self.mount = Path(workdir) / ".lab" / "compile"
        self.store = Path(workdir) / ".lab" / "compile-layers"
        clear(self.mount)  # what a run cut off with the lab left there

    def enter(self, commit: str) -> None:
        """The commit's layer in `mount`, or a copy of the shared cache for its first run. Where the
        disk cannot take it (full, read-only), the run compiles from an empty cache."""
        clear(self.mount)
        layer = self.store / commit
        try:
            if layer.is_dir():
                for entry in layer.iterdir():
                    entry.rename(self.mount / entry.name)
                layer.rmdir()  # a run cut off with the lab then starts again from the shared cache
            elif self.shared.is_dir():
                shutil.copytree(self.shared, self.mount, dirs_exist_ok=True, symlinks=True,
                                ignore=shutil.ignore_patterns(*self.UNCOPIED))
        except OSError:
            clear(self.mount)

    def leave(self, commit: str) -> None:
        """What the run left in `mount` kept as the commit's layer (and, for `trusted`, its new files
        added to the shared cache); where the disk cannot take it, dropped."""
        layer = self.store / commit
        try:
            if commit == self.trusted:
                add_new_files(self.mount, self.shared)
            clear(layer)
            for entry in self.mount.iterdir():
                entry.rename(layer / entry.name)
            os.utime(layer)
            for old in sorted(self.store.iterdir(), key=lambda p: p.stat().st_mtime)[:-self.KEEP]:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            clear(self.mount)


def add_new_files(source: Path, dest: Path) -> None:
    """The files under source that dest lacks, copied there, each under a temporary name first: a run
    copying dest meanwhile (another worker's) sees a file whole or not at all. Symbolic links are not
    followed or copied."""
    for path in source.rglob("*"):
        target = dest / path.relative_to(source)
        if path.is_symlink() or not path.is_file() or target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        shutil.copyfile(path, partial)
        os.replace(partial, target)


def clear(directory: Path) -> None:
    """The directory emptied (itself kept: a sandbox started ahead has it bound in), so that nothing
    one run left there reaches the next."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
