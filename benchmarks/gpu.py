"""GPU speed and fixed cost of train.py: tokens/s, MFU, compile, evaluation and fixed overhead per
experiment, peak memory and val_bpb, with a cold and a warm compile cache, beside a reference
train.py, in one process on one card. Prepares nothing: point AUTORESEARCH_CACHE at a prepared cache
(carried to the GPU machine), prepared with a short --time-budget.

    python benchmarks/gpu.py [--before OLD_TRAIN_PY] [--out DIR] [--only cold,warm,L,check,big,ahead,edit]
                             [--big-cache DIR] [--compile-cache DIR]

Runs: cold and warm compile cache; window pattern L; "check", which counts host-device
synchronizations per training step and also hands the trained model off to the lab's evaluator (its
val_bpb must agree with the in-process one, and its causality probe must pass on this GPU); "big", a run on another prepared cache (--big-cache, e.g. the
Python source with site-packages), warm cache; "ahead", a warm run as the lab makes it, in a Python
started 5 s before the hand-over (while the agent works), its model handed off to the lab's evaluator
(started beforehand, as the lab keeps it warm), its fixed overhead counted from the hand-over to the
evaluator's answer;
"edit", a run after an edit of the model as an agent makes one (the MLP's ReLU² becomes GELU), with the
compile cache the runs before left: what an experiment that changes the model pays, where a change of
the optimizer's settings alone finds the whole graph cached.
benchmarks/gpu_session.sh wraps all of it into one call on a GPU machine.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ["val_bpb", "training_seconds", "tokens_per_s", "mfu_percent", "peak_vram_mb", "training_peak_mb",
        "first_step_seconds", "eval_seconds", "num_steps", "fixed_seconds"]


def run(name, train_text, compile_cache, workdir, out_dir, data_cache=None, ahead=None):
    """One train.py run in its own folder; returns the summary plus the wall time seen from outside.
    With `ahead` seconds, the run is made as the lab makes it: in a Python started that long before
    the hand-over (the agent at work), its wall time counted from the hand-over."""
    folder = workdir / name
    folder.mkdir()
    from autoresearch.harness import copy_harness
    copy_harness(ROOT, folder)
    (folder / "train.py").write_text(with_training_peak(train_text))
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(compile_cache), PYTHONUNBUFFERED="1")
    if data_cache:
        env["AUTORESEARCH_CACHE"] = str(data_cache)
    sys.path.insert(0, str(ROOT))
    from autoresearch import harness, runner
    from autoresearch.evaluator import Evaluator
    evaluator = Evaluator(folder, None, env)
    log = Path(out_dir or workdir) / f"{name}.log"
    scored = None
    if ahead is None:
        t0 = time.time()
        out = subprocess.run([sys.executable, "train.py"], cwd=folder, env=env, capture_output=True, text=True)
        wall, failed, stdout, stderr = time.time() - t0, out.returncode != 0, out.stdout, out.stderr
        log.write_text(stdout + stderr)
        if not failed and (folder / "checked.pt2").exists():  # the check run handed its model off too
            scored = evaluator.score(folder / "checked.pt2", 600)
    else:
        program = folder / "model.pt2"
        env["AUTORESEARCH_HANDOFF"] = str(program)
        evaluator.ready(600)
        prestarted = runner.Prestarted(folder, env)
        time.sleep(ahead)
        result = runner.run_training(folder, log, env, timeout=3600, prestarted=prestarted)
        failed = result.status != runner.OK
        scored = None if failed else evaluator.score(program, 600)
        wall, stdout, stderr = result.seconds + (scored.record.get("eval_seconds", 0) if scored else 0), log.read_text(), ""
        failed = failed or scored.status != runner.OK
    evaluator.close()
    if failed:
        print(f"{name}: FAILED\n{(stdout + stderr)[-3000:]}{scored.reason if scored else ''}", flush=True)
        return None
    block = stdout.split("\n---\n", 1)[1]
    summary = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in block.splitlines() if ":" in ln)}
    summary["wall_seconds"] = f"{wall:.1f}"
    summary["fixed_seconds"] = f"{wall - float(summary['training_seconds']):.1f}"
    summary["eval_tokens"] = harness.read_manifest(data_cache)["constants"]["EVAL_TOKENS"]
    if ahead is not None:
        summary["val_bpb"] = f"{scored.val_bpb:.6f} (the lab's evaluator)"
        summary["eval_seconds"] = f"{scored.record['eval_seconds']:.1f} (evaluator)"
    training_peak = re.search(r"^training peak MiB: ([\d.]+)$", stdout, re.M)
    summary["training_peak_mb"] = training_peak.group(1) if training_peak else None
    if ahead is None and scored is not None:  # the checks run: the evaluator's val_bpb, synchronizations per step
        syncs = stderr.count("called a synchronizing CUDA operation")
        probe = scored.record.get("probe", {})
        evaluated = f"{scored.val_bpb:.6f}" if scored.status == runner.OK else f"{scored.status}: {scored.reason}"
        summary["val_bpb"] += (f" (evaluator {evaluated}; probe change {probe.get('largest_change')} of "
                               f"{probe.get('tolerance')}; {syncs / (int(summary['num_steps']) - 1):.1f} syncs/step)")
    return summary


def with_training_peak(text):
    """train.py that also prints its peak memory before the evaluation, which shows whether training or
    the evaluation sets the peak (peak_vram_mb is the whole run's)."""
    marker = "\nt_eval = time.time()\n"
    probe = 'if ON_CUDA:\n    print(f"training peak MiB: {torch.cuda.max_memory_allocated() / 2**20:.1f}", flush=True)\n'
    return text.replace(marker, "\n" + probe + marker[1:], 1) if "ON_CUDA" in text else text


def with_pattern(text, pattern):
    return re.sub(r"^WINDOW_PATTERN = .*$", f'WINDOW_PATTERN = "{pattern}"', text, flags=re.M)


def with_checks(text):
    """train.py that reports every host-device synchronization of its training steps from the second
    on (CUDA's sync debug mode), and hands its trained model off as the lab would (checked.pt2)."""
    start, stop = "        gc.disable()\n", "t_eval = time.time()\n"
    assert start in text and stop in text, "train.py changed: update with_checks"
    audit = ('        import warnings\n        warnings.simplefilter("always")\n'
             '        if ON_CUDA:\n            torch.cuda.set_sync_debug_mode("warn")\n')
    text = text.replace(start, start + audit, 1).replace(stop, "if ON_CUDA:\n    torch.cuda.set_sync_debug_mode(0)\n" + stop, 1)
    return text + '\nos.environ["AUTORESEARCH_HANDOFF"] = os.path.abspath("checked.pt2")\nevaluate()\n'


def with_edited_model(text):
    """train.py after an edit of the model's code: the compiled graph changes, its shapes do not."""
    relu2 = "F.relu(self.c_fc(x)).square()"
    assert relu2 in text, "train.py changed: update with_edited_model"
    return text.replace(relu2, "F.gelu(self.c_fc(x))", 1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--before", help="a reference train.py to measure beside the current one")
    p.add_argument("--out", help="folder for the logs")
    p.add_argument("--only", default="cold,warm,L", help="which of our runs: cold, warm, L, check, big, ahead, edit "
                                                               "(comma-separated, in this order)")
    p.add_argument("--big-cache", help="the prepared cache of the 'big' run")
    p.add_argument("--compile-cache", help="folder for the compile caches, kept across calls "
                                           "(default: a temporary one, so the first run is cold)")
    args = p.parse_args()
    if "big" in args.only.split(",") and not args.big_cache:
        p.error("the 'big' run needs --big-cache DIR")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    if os.environ.get("AUTORESEARCH_CACHE"):  # each run works in a folder of its own: a relative path would miss
        os.environ["AUTORESEARCH_CACHE"] = str(Path(os.environ["AUTORESEARCH_CACHE"]).expanduser().resolve())
    if args.big_cache:
        args.big_cache = str(Path(args.big_cache).expanduser().resolve())
    ours = (ROOT / "train.py").read_text()
    as_is = str
    # name: (label, what the run makes of train.py, compile cache, data cache or None for
    # AUTORESEARCH_CACHE, seconds ahead); only the runs asked for rewrite train.py
    runs = {"cold": ("ours, cold cache", as_is, "ours", None, None),
            "warm": ("ours, warm cache", as_is, "ours", None, None),
            "L": ("ours, window L", lambda text: with_pattern(text, "L"), "ours", None, None),
            "check": ("ours, checks (timings perturbed)", with_checks, "ours", None, None),
            "big": ("ours, big corpus, warm cache", as_is, "ours", args.big_cache, None),
            "ahead": ("ours, warm cache, Python started 5 s ahead (the lab)", as_is, "ours", None, 5.0),
            "edit": ("ours, model edited (ReLU² to GELU), cache of the runs before", with_edited_model, "ours",
                     None, None)}
    plan = [(label, rewrite(ours), *rest) for label, rewrite, *rest in (runs[name] for name in args.only.split(","))]
    if args.before:
        plan.append(("before, cold cache", Path(args.before).read_text(), "before", None, None))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        compile_root = Path(args.compile_cache) if args.compile_cache else tmp
        for i, (name, text, cache, data, ahead) in enumerate(plan):
            summary = run(f"run{i}", text, compile_root / f"inductor-{cache}", tmp, args.out, data, ahead)
            if summary:
                rows.append((name, summary))
                log = (Path(args.out or tmp) / f"run{i}.log").read_text()
                print(next((ln for ln in log.splitlines() if ln.startswith("startup:")), ""), flush=True)
                early = re.findall(r"^step 0000[1-4] \|.*\| dt (\d+)ms", log, re.M)  # the first timed steps?
                print(f"{name}: " + json.dumps({k: summary.get(k) for k in KEYS}) +
                      f" | dt of steps 1-4: {', '.join(early)} ms", flush=True)
    device = rows[0][1].get("device", "?") if rows else "?"
    print(f"\n{device}; budget {rows[0][1]['training_seconds'] if rows else '?'} s of training per run")
    print("| run | tokens/s | MFU % | first step s | eval s (tokens) | fixed overhead s | peak GB (training) | val_bpb |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, s in rows:
        training = f" ({float(s['training_peak_mb']) / 1024:.1f})" if s["training_peak_mb"] else ""
        print(f"| {name} | {float(s['tokens_per_s']) / 1e6:.3f} M | {s['mfu_percent']} | {s.get('first_step_seconds', '?')} | "
              f"{s.get('eval_seconds', '?')} ({s['eval_tokens']:,}) | {s['fixed_seconds']} | "
              f"{float(s['peak_vram_mb']) / 1024:.1f}{training} | {s['val_bpb']} |")


if __name__ == "__main__":
    main()
