"""Dataloader throughput: prepare.make_dataloader (tokenized at prepare time, sorted best-fit
buffer) against a reference that tokenizes on the fly and packs with a linear best-fit scan,
the way the original harness does. Same tokenizer, same documents, same shapes, one process.

    uv run benchmarks/dataloader.py          # uses the active cache (AUTORESEARCH_CACHE)
"""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import prepare  # noqa: E402
from harness import sources  # noqa: E402


def reference_loader(tokenizer, texts, B, T, buffer_size=1000, tokenize_batch=128):
    """Tokenize documents as they are needed; fill each row with the largest document that fits
    (a linear scan of the buffer); when none fits, crop the shortest and drop its rest."""
    bos = tokenizer.get_bos_token_id()
    position, buffer = 0, []

    def refill():
        nonlocal position
        while len(buffer) < buffer_size:
            batch = [texts[(position + i) % len(texts)] for i in range(tokenize_batch)]
            position += tokenize_batch
            buffer.extend(tokenizer.encode(batch, prepend=bos, num_threads=4))

    while True:
        rows = []
        for _ in range(B):
            row = []
            while len(row) < T + 1:
                refill()
                space = T + 1 - len(row)
                best, best_len = -1, 0
                for i, doc in enumerate(buffer):
                    if best_len < len(doc) <= space:
                        best, best_len = i, len(doc)
                if best >= 0:
                    row.extend(buffer.pop(best))
                else:
                    shortest = min(range(len(buffer)), key=lambda i: len(buffer[i]))
                    row.extend(buffer.pop(shortest)[:space])
            rows.append(row)
        batch = torch.tensor(rows, dtype=torch.long)
        yield batch[:, :-1], batch[:, 1:], 0


def tokens_per_second(loader, B, T, seconds):
    next(loader)  # warm up (opens files, fills buffers)
    start, batches = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        next(loader)
        batches += 1
    return batches * B * T / (time.perf_counter() - start)


def main(seconds=3.0, repeats=3):
    tokenizer = prepare.Tokenizer.from_directory()
    texts = [text for group, text in sources.python_documents() if not sources.is_val(group)]
    print(f"{len(texts):,} documents; {torch.get_num_threads()} torch threads; device cpu; "
          f"{repeats} runs of {seconds:.0f} s, median tokens/s")
    print("| B x T | reference (tokenize on the fly) | make_dataloader | ratio |")
    print("| --- | --- | --- | --- |")
    for B, T in [(128, 2048), (32, 256)]:
        ours, ref = [], []
        for _ in range(repeats):
            ref.append(tokens_per_second(reference_loader(tokenizer, texts, B, T), B, T, seconds))
            ours.append(tokens_per_second(prepare.make_dataloader(tokenizer, B, T, "train", device="cpu"), B, T, seconds))
        r, o = statistics.median(ref), statistics.median(ours)
        print(f"| {B} x {T} | {r / 1e6:.2f} M | {o / 1e6:.2f} M | {o / r:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
