"""Training throughput and val_bpb of train.py on the active cache, beside the unigram baseline
(a model that only knows token frequencies), computed on the same validation tokens.

    uv run benchmarks/train_tiny.py [--runs N]
"""
import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import prepare  # noqa: E402


def unigram_bpb():
    """bits per byte of the best context-free model: train-split token frequencies (add-one)."""
    tokenizer = prepare.Tokenizer.from_directory()
    train, _ = prepare.load_split("train")
    counts = np.bincount(np.asarray(train), minlength=tokenizer.get_vocab_size()) + 1.0
    log_p = np.log2(counts / counts.sum())
    targets = prepare.validation_rows(tokenizer)[:, 1:].numpy().ravel()
    nbytes = prepare.get_token_bytes().numpy()[targets]
    return float(-(log_p[targets] * (nbytes > 0)).sum() / nbytes.sum())


def run_train(seed):
    """train.py standalone (it evaluates in its own process): its summary block, and val_bpb."""
    env = dict(os.environ, AUTORESEARCH_SEED=str(seed))
    out = subprocess.run([sys.executable, "train.py"], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"train.py failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    block = dict(line.split(":", 1) for line in out.stdout.split("\n---\n", 1)[1].splitlines() if ":" in line)
    block = {k: v.strip() for k, v in block.items()}
    return block, {"val_bpb": float(block["val_bpb"])}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1)
    runs = parser.parse_args().runs
    manifest = prepare.load_manifest()
    rows = [run_train(seed) for seed in range(42, 42 + runs)]
    first = rows[0][0]
    bpb = [r[1]["val_bpb"] for r in rows]
    print(f"profile {manifest['profile']} | {first['device']} | budget {manifest['constants']['TIME_BUDGET']} s | "
          f"{runs} run(s), medians")
    print("| figure | value |\n| --- | --- |")
    print(f"| training tokens/s | {statistics.median(float(r[0]['tokens_per_s']) for r in rows):,.0f} |")
    print(f"| val_bpb | {statistics.median(bpb):.4f} (min {min(bpb):.4f}, max {max(bpb):.4f}) |")
    print(f"| unigram val_bpb | {unigram_bpb():.4f} |")
    print(f"| total seconds | {statistics.median(float(r[0]['total_seconds']) for r in rows):.1f} |")
    print(f"| steps | {first['num_steps']} | \n| params | {first['num_params_M']} M |")
    print("\n| seed | first step s | training tokens/s | total s | val_bpb |\n| --- | --- | --- | --- | --- |")
    for seed, (summary, result) in enumerate(rows, start=42):
        print(f"| {seed} | {summary['first_step_seconds']} | {float(summary['tokens_per_s']):,.0f} | "
              f"{summary['total_seconds']} | {result['val_bpb']:.4f} |")


if __name__ == "__main__":
    main()
