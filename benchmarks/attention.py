"""One attention layer of the h100 model on a CUDA GPU, forward plus backward: the short window (half
the context) through flex_attention with several kernel options, beside full causal SDPA (what the
long layers run) and SDPA with a dense window mask (the fallback without compile). The short window
pays off only where its kernel beats full causal SDPA; this says which options get closest.

    python benchmarks/attention.py [--batch 128] [--heads 4] [--seq 2048] [--head-dim 128] [--iters 20]
"""
import argparse
import statistics

import torch
import torch.nn.functional as F

# kernel options to try (torch's FlexKernelOptions); an option this torch lacks shows as an error row
FLEX_OPTIONS = {
    "flex, default options": {},
    "flex, 128x64, 8 warps, 3 stages": dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3),
    "flex, 128x128, 8 warps, 2 stages": dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=2),
    "flex, 64x64, 4 warps, 3 stages": dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3),
    "flex, TMA": dict(USE_TMA=True),
    "flex, prescaled QK": dict(PRESCALE_QK=True),
}


def time_fwd_bwd(fn, q, k, v, iters):
    """Median milliseconds of forward + backward, after two warm-up calls (compilation included there)."""
    grad = torch.randn_like(q)
    times = []
    for i in range(iters + 2):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn(q, k, v)
        out.backward(grad)
        end.record()
        torch.cuda.synchronize()
        if i >= 2:
            times.append(start.elapsed_time(end))
        q.grad = k.grad = v.grad = None
    return statistics.median(times), out.detach()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--iters", type=int, default=20)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/attention.py needs a CUDA GPU")
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    for name in ("recompile_limit", "cache_size_limit"):  # one compiled variant per set of options
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)

    B, H, T, D, window = args.batch, args.heads, args.seq, args.head_dim, args.seq // 2
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    pos = torch.arange(T, device="cuda")
    allowed = (pos[:, None] >= pos[None, :]) & (pos[:, None] - pos[None, :] < window)
    block_mask = create_block_mask(lambda b, h, qi, kv: (qi >= kv) & (qi - kv < window), None, None, T, T,
                                   device="cuda")
    rows = []
    full_ms, _ = time_fwd_bwd(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), q, k, v,
                              args.iters)
    rows.append(("SDPA, full causal window", full_ms, None))
    dense_ms, reference = time_fwd_bwd(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=allowed),
                                       q, k, v, args.iters)
    rows.append(("SDPA, dense window mask", dense_ms, 0.0))
    for name, options in FLEX_OPTIONS.items():
        compiled = torch.compile(lambda q, k, v, o=options: flex_attention(q, k, v, block_mask=block_mask,
                                                                           kernel_options=o or None))
        try:
            ms, out = time_fwd_bwd(compiled, q, k, v, args.iters)
        except Exception as e:  # an option this torch or this card does not take
            print(f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
            continue
        rows.append((name, ms, (out.float() - reference.float()).abs().max().item()))
        print(f"{name}: {ms:.2f} ms", flush=True)

    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}; B={B} H={H} T={T} D={D}, bf16, "
          f"short window {window}; forward + backward, median of {args.iters}")
    print("| attention | ms | vs full causal SDPA | max abs diff vs dense mask |")
    print("| --- | --- | --- | --- |")
    for name, ms, diff in rows:
        print(f"| {name} | {ms:.2f} | {ms / full_ms:.2f}x | {'—' if diff is None else f'{diff:.1e}'} |")


if __name__ == "__main__":
    main()
