"""What the compile cache's layers cost: each commit compiles in a layer of its own started from the
shared cache, which only the run's first commit adds to (harness.CompileLayers). A candidate whose
model the baseline compiled finds it all there; one built on a kept commit that changed the model
finds only the kernels it shares with the baseline. This times that candidate's first step beside the
same run with the kept commit's layer (what one shared cache gave it before), one run each, in order:

  base    train.py as it is, filling the shared cache (cold, unless --shared names a warm one)
  kept    the MLP's ReLU² edited to GELU (a kept commit that changed the model), in its own layer
  layered the kept commit plus a changed MATRIX_LR, in a layer copied from the shared cache
  shared  the same candidate in a copy of the kept commit's layer

  uv run benchmarks/compile_layers.py [--shared DIR]

Compiling on a CPU needs AUTORESEARCH_COMPILE=1, which this sets; on CUDA it is the default.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from autoresearch.harness import copy_harness  # noqa: E402

FIRST_STEP = re.compile(r"^step 00000 .*\| dt (?P<ms>\d+)ms", re.M)


def variants() -> dict[str, str]:
    base = (ROOT / "train.py").read_text()
    kept = base.replace("F.relu(self.c_fc(x)).square()", "F.gelu(self.c_fc(x))")
    assert kept != base, "train.py's MLP is no longer ReLU²: edit this benchmark's variants"
    candidate = re.sub(r"^MATRIX_LR = [\d.]+", "MATRIX_LR = 0.03", kept, flags=re.M)
    return {"base": base, "kept": kept, "candidate": candidate}


def run(text: str, cache: Path, work: Path, log: Path) -> tuple[float, float]:
    """(first step s, wall s) of train.py `text` with TORCHINDUCTOR_CACHE_DIR=cache."""
    (work / "train.py").write_text(text)
    env = dict(os.environ, AUTORESEARCH_COMPILE="1", TORCHINDUCTOR_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "train.py"], cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log.write_text(out.stdout + out.stderr)
    found = FIRST_STEP.search(out.stdout)
    if out.returncode != 0 or not found:
        sys.exit(f"train.py failed: see {log}")
    return int(found["ms"]) / 1000, wall


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", help="a shared compile cache to start from (else a cold one)")
    args = p.parse_args()
    texts = variants()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        work, shared = tmp / "work", tmp / "shared"
        work.mkdir()
        copy_harness(ROOT, work)
        if args.shared:
            shutil.copytree(args.shared, shared)
        rows = [("base (shared cache)", *run(texts["base"], shared, work, tmp / "base.log"))]
        t0 = time.perf_counter()
        shutil.copytree(shared, tmp / "kept")
        copy_s = time.perf_counter() - t0
        rows.append(("kept (layer from shared)", *run(texts["kept"], tmp / "kept", work, tmp / "kept.log")))
        shutil.copytree(shared, tmp / "layered")
        rows.append(("candidate, layer from shared", *run(texts["candidate"], tmp / "layered", work, tmp / "c1.log")))
        shutil.copytree(tmp / "kept", tmp / "shared-as-before")
        rows.append(("candidate, kept commit's cache", *run(texts["candidate"], tmp / "shared-as-before", work,
                                                            tmp / "c2.log")))
        files = [f for f in shared.rglob("*") if f.is_file()]
        size = sum(f.stat().st_size for f in files)
    print(f"shared cache after the base run: {size / 1e6:.1f} MB in {len(files)} files; copied into a layer "
          f"in {copy_s:.3f} s; load average {os.getloadavg()[0]:.2f}")
    print("| run | first step s | wall s |\n| --- | --- | --- |")
    for name, first, wall in rows:
        print(f"| {name} | {first:.1f} | {wall:.1f} |")


if __name__ == "__main__":
    main()
