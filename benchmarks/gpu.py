"""GPU speed and fixed cost of train.py: tokens/s, MFU, compile, evaluation and fixed overhead per
experiment, peak memory and val_bpb, with a cold and a warm compile cache, beside a reference
train.py, in one process on one card. Prepares nothing: point AUTORESEARCH_CACHE at a prepared cache
(carried to the GPU machine), prepared with a short --time-budget.

    python benchmarks/gpu.py [--before OLD_TRAIN_PY] [--out DIR] [--only cold,warm,L,check,big,ahead]
                             [--big-cache DIR] [--compile-cache DIR]

Runs: cold and warm compile cache; window pattern L; "check", which counts host-device
synchronizations per training step and also evaluates the trained weights through the eager model
(the compiled evaluation must agree); "big", a run on another prepared cache (--big-cache, e.g. the
Python source with site-packages), warm cache; "ahead", a warm run as the lab makes it, in a Python
started 5 s before the hand-over (while the agent works), its fixed overhead counted from the hand-over.
benchmarks/gpu_session.sh wraps all of it into one call on a GPU machine.
"""
import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ["val_bpb", "training_seconds", "tokens_per_s", "mfu_percent", "peak_vram_mb", "first_step_seconds",
        "eval_seconds", "num_steps"]


def run(name, train_text, compile_cache, workdir, out_dir, data_cache=None):
    """One train.py run in its own folder; returns the summary plus the wall time seen from outside."""
    folder = workdir / name
    folder.mkdir()
    shutil.copy(ROOT / "prepare.py", folder)
    (folder / "train.py").write_text(train_text)
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(compile_cache), AUTORESEARCH_RESULT=str(folder / "r.json"),
               PYTHONUNBUFFERED="1")
    if data_cache:
        env["AUTORESEARCH_CACHE"] = str(data_cache)
    t0 = time.time()
    out = subprocess.run([sys.executable, "train.py"], cwd=folder, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if out_dir:
        (Path(out_dir) / f"{name}.log").write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        print(f"{name}: FAILED\n{(out.stdout + out.stderr)[-3000:]}", flush=True)
        return None
    block = out.stdout.split("\n---\n", 1)[1]
    summary = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in block.splitlines() if ":" in ln)}
    summary["wall_seconds"] = f"{wall:.1f}"
    summary["fixed_seconds"] = f"{wall - float(summary['training_seconds']):.1f}"
    summary["eval_tokens"] = json.loads((folder / "r.json").read_text())["eval_tokens"]
    eager = re.search(r"^eager val_bpb: ([\d.]+)", out.stdout, re.M)
    if eager:  # the checks run: the eager model's val_bpb, and synchronizations per training step
        syncs = out.stderr.count("called a synchronizing CUDA operation")
        summary["val_bpb"] += f" (eager {eager.group(1)}; {syncs / (int(summary['num_steps']) - 1):.1f} syncs/step)"
    return summary


def run_ahead(name, train_text, compile_cache, workdir, out_dir, think=5.0):
    """One train.py run as the lab makes it: in a Python started `think` seconds before the hand-over
    (the agent at work). Its wall time counts from the hand-over."""
    sys.path.insert(0, str(ROOT))
    from autoresearch import harness, runner
    folder = workdir / name
    folder.mkdir()
    shutil.copy(ROOT / "prepare.py", folder)
    (folder / "train.py").write_text(train_text)
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(compile_cache))
    manifest = harness.read_manifest()
    prestarted = runner.Prestarted(folder, env)
    time.sleep(think)
    log = Path(out_dir or workdir) / f"{name}.log"
    result = runner.run_training(folder, log, folder / "r.json", env, timeout=3600, prestarted=prestarted,
                                 expect=dict(data_hash=manifest["data_hash"],
                                             eval_tokens=manifest["constants"]["EVAL_TOKENS"]))
    if result.status != "ok":
        print(f"{name}: FAILED ({result.status}: {result.reason})\n{log.read_text()[-3000:]}", flush=True)
        return None
    summary = dict(result.summary)
    summary["wall_seconds"] = f"{result.seconds:.1f}"
    summary["fixed_seconds"] = f"{result.seconds - float(summary['training_seconds']):.1f}"
    summary["eval_tokens"] = result.record["eval_tokens"]
    return summary


def with_pattern(text, pattern):
    return re.sub(r"^WINDOW_PATTERN = .*$", f'WINDOW_PATTERN = "{pattern}"', text, flags=re.M)


def with_checks(text):
    """train.py that reports every host-device synchronization of its training steps from the second
    on (CUDA's sync debug mode), and evaluates its trained weights through the eager model too."""
    start, stop = "        gc.disable()\n", "t_eval = time.time()\n"
    assert start in text and stop in text, "train.py changed: update with_checks"
    audit = ('        import warnings\n        warnings.simplefilter("always")\n'
             '        if ON_CUDA:\n            torch.cuda.set_sync_debug_mode("warn")\n')
    text = text.replace(start, start + audit, 1).replace(stop, "if ON_CUDA:\n    torch.cuda.set_sync_debug_mode(0)\n" + stop, 1)
    return text + ('\nwith autocast:\n'
                   '    print(f"eager val_bpb: {evaluate_bpb(model, tokenizer, FINAL_EVAL_BATCH_SIZE):.6f}")\n')


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--before", help="a reference train.py to measure beside the current one")
    p.add_argument("--out", help="folder for the logs")
    p.add_argument("--only", default="cold,warm,L", help="which of our runs: cold, warm, L, check, big, ahead "
                                                               "(comma-separated, in this order)")
    p.add_argument("--big-cache", help="the prepared cache of the 'big' run")
    p.add_argument("--compile-cache", help="folder for the compile caches, kept across calls "
                                           "(default: a temporary one, so the first run is cold)")
    args = p.parse_args()
    if "big" in args.only.split(",") and not args.big_cache:
        p.error("the 'big' run needs --big-cache DIR")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    ours = (ROOT / "train.py").read_text()
    # name: (label, train.py text, compile cache, data cache or None for AUTORESEARCH_CACHE)
    runs = {"cold": ("ours, cold cache", ours, "ours", None), "warm": ("ours, warm cache", ours, "ours", None),
            "L": ("ours, window L", with_pattern(ours, "L"), "ours", None),
            "check": ("ours, checks (timings perturbed)", with_checks(ours), "ours", None),
            "big": ("ours, big corpus, warm cache", ours, "ours", args.big_cache),
            "ahead": ("ours, warm cache, Python started 5 s ahead (the lab)", ours, "ours", None)}
    plan = [runs[name] for name in args.only.split(",")]
    if args.before:
        plan.append(("before, cold cache", Path(args.before).read_text(), "before", None))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        compile_root = Path(args.compile_cache) if args.compile_cache else tmp
        for i, (name, text, cache, data) in enumerate(plan):
            how = run_ahead if "started" in name else functools.partial(run, data_cache=data)
            summary = how(f"run{i}", text, compile_root / f"inductor-{cache}", tmp, args.out)
            if summary:
                rows.append((name, summary))
                print(next((ln for ln in (Path(args.out or tmp) / f"run{i}.log").read_text().splitlines()
                            if ln.startswith("startup:")), "") if args.out else "", flush=True)
                log = (Path(args.out or tmp) / f"run{i}.log").read_text() if args.out else ""
                early = re.findall(r"^step 0000[1-4] \|.*\| dt (\d+)ms", log, re.M)  # the first timed steps?
                print(f"{name}: " + json.dumps({k: summary.get(k) for k in KEYS + ['fixed_seconds']}) +
                      f" | dt of steps 1-4: {', '.join(early)} ms", flush=True)
    device = rows[0][1].get("device", "?") if rows else "?"
    print(f"\n{device}; budget {rows[0][1]['training_seconds'] if rows else '?'} s of training per run")
    print("| run | tokens/s | MFU % | first step s | eval s (tokens) | fixed overhead s | peak GB | val_bpb |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, s in rows:
        print(f"| {name} | {float(s['tokens_per_s']) / 1e6:.3f} M | {s['mfu_percent']} | {s.get('first_step_seconds', '?')} | "
              f"{s.get('eval_seconds', '?')} ({s['eval_tokens']:,}) | {s['fixed_seconds']} | "
              f"{float(s['peak_vram_mb']) / 1024:.1f} | {s['val_bpb']} |")


if __name__ == "__main__":
    main()
