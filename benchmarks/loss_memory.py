"""Peak GPU memory of train.py's loss head (norm, lm_head, softcap, cross-entropy) compiled, forward plus
backward, at the h100 profile's micro-batch, for the ways the gradients can come out of it: from the
mean loss (the reference), from per-token losses summed outside the graph, and from the mean with the
per-token losses handed out beside it, detached (train.py's reduction="both"). Needs a CUDA GPU.

    python benchmarks/loss_memory.py [--batch 128] [--seq 2048] [--width 512] [--vocab 8192]
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

SOFTCAP = 15.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--vocab", type=int, default=8192)
    args = p.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    head = nn.Linear(args.width, args.vocab, bias=False, device="cuda")

    def losses(x, y, reduction):
        logits = head(F.rms_norm(x, (x.size(-1),))).float()
        logits = (SOFTCAP * torch.tanh(logits / SOFTCAP)).view(-1, args.vocab)
        if reduction != "both":
            return F.cross_entropy(logits, y.view(-1), ignore_index=-1, reduction=reduction)
        return (F.cross_entropy(logits, y.view(-1), ignore_index=-1),
                F.cross_entropy(logits.detach(), y.view(-1), ignore_index=-1, reduction="none"))

    ways = {"mean loss (reference)": ("mean", lambda out, y: out),
            "per-token losses, summed outside the graph": ("none", lambda out, y: out.sum() / (y != -1).sum()),
            "mean, per-token losses beside it detached (train.py)": ("both", lambda out, y: out[0])}
    x = torch.randn(args.batch, args.seq, args.width, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    y = torch.randint(0, args.vocab, (args.batch, args.seq), device="cuda")
    rows = []
    for name, (reduction, loss_of) in ways.items():
        step = torch.compile(lambda x, y, reduction=reduction: losses(x, y, reduction))
        peaks = []
        for _ in range(3):  # the first call compiles
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = loss_of(step(x, y), y)
            forward = torch.cuda.max_memory_allocated() - base
            loss.backward()
            x.grad = head.weight.grad = None
            torch.cuda.synchronize()
            peaks.append((forward, torch.cuda.max_memory_allocated() - base))
        rows.append((name, peaks[-1]))
    logits_gib = args.batch * args.seq * args.vocab * 2 / 2**30
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}; B={args.batch} T={args.seq} "
          f"width {args.width} vocab {args.vocab}, bf16 autocast (the logits in bf16: {logits_gib:.2f} GiB)")
    print("| gradients from | forward peak GiB | forward + backward peak GiB | vs reference |")
    print("| --- | --- | --- | --- |")
    for name, (forward, total) in rows:
        print(f"| {name} | {forward / 2**30:.2f} | {total / 2**30:.2f} | {total / rows[0][1][1]:.2f}x |")


if __name__ == "__main__":
    main()
