"""
The one editable file: a small GPT, its optimizer and its training loop, single device.
It trains for the fixed time budget of the prepared cache, then evaluates val_bpb with the harness.

Usage: uv run train.py        (after `uv run prepare.py`; the lab runs it the same way)

What the lab reads from this file's text and output (tests/test_train.py checks each):
- the hyperparameter block: the lines between the `# Hyperparameters` rules below, single-line
  `NAME = value` assignments that the search agent rewrites in place;
- one progress line per step: `step 00042 |  35.2% | loss 3.412345 | ... | 1,640,000 tok/s | ... | 194s left`
  (the percent of the budget where the step began, the seconds left where it ended), which the lab
  parses for its live view and early abort;
- the summary block after a line `---`: `key: value` lines (val_bpb, training_seconds, num_steps,
  tokens_per_s, ...), informational: under the lab val_bpb is the evaluator's, not this block's;
- the end: `evaluate_bpb(model, tokenizer, batch_size)`, with `model(idx)` returning logits.
"""

import gc
import math
import os
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.machine import Machine, banner
from prepare import MAX_SEQ_LEN, PROFILE, TIME_BUDGET, Tokenizer, evaluate_bpb, make_dataloader, to_device

# ---------------------------------------------------------------------------
# Hyperparameters (edit these directly, no CLI flags needed)
# ---------------------------------------------------------------------------

# Model size: one line per profile of the prepared cache (tiny: CPU laptop, small: consumer GPU)
DEPTH = 8 if PROFILE == "h100" else 6 if PROFILE == "small" else 2   # transformer layers
ASPECT_RATIO = 64                               # model width = DEPTH * ASPECT_RATIO, rounded up to heads
HEAD_DIM = 128 if PROFILE != "tiny" else 64     # attention head size
WINDOW_PATTERN = "SSSL" if PROFILE == "h100" else "L"  # per layer: S = half-context window, L = full

# Batch: tokens per optimizer step, and rows per forward pass (lower it if memory runs out)
TOTAL_BATCH_SIZE = 2**19 if PROFILE == "h100" else 2**17 if PROFILE == "small" else 2**12
DEVICE_BATCH_SIZE = 128 if PROFILE == "h100" else 64 if PROFILE == "small" else 16

# Optimization
MATRIX_LR = 0.04        # Muon, for the transformer's 2-d matrices
EMBEDDING_LR = 0.6      # AdamW, token and value embeddings
UNEMBEDDING_LR = 0.004  # AdamW, lm_head
SCALAR_LR = 0.5         # AdamW, the per-layer residual and x0 mixing scalars
WEIGHT_DECAY = 0.2      # Muon's weight decay, decayed to zero over the run
ADAM_BETAS = (0.8, 0.95)
WARMUP_RATIO = 0.0      # fraction of the budget spent ramping the learning rate up
WARMDOWN_RATIO = 0.5    # fraction of the budget spent ramping it down at the end
FINAL_LR_FRAC = 0.0     # learning rate at the end, as a fraction of the peak
SOFTCAP = 15.0          # logits are squashed into (-SOFTCAP, SOFTCAP)

# Run control
SEED = int(os.environ.get("AUTORESEARCH_SEED", "42"))  # the lab sets the seed; do not tune it
UNTIMED_STEPS = 1       # the first step (compilation, allocator warm-up) does not count against the budget
FINAL_EVAL_BATCH_SIZE = DEVICE_BATCH_SIZE

# the device, its precision and whether to compile: the fastest this machine supports, loudly about less
machine = Machine()
device, autocast, COMPUTE_DTYPE = machine.device, machine.autocast, machine.compute_dtype
torch.manual_seed(SEED)

# ---------------------------------------------------------------------------
# GPT model
# ---------------------------------------------------------------------------


@dataclass
class GPTConfig:
    sequence_len: int = 2048
    vocab_size: int = 8192
    n_layer: int = 8
    n_head: int = 4
    n_embd: int = 512
    window_pattern: str = "SSSL"


def norm(x):
    return F.rms_norm(x, (x.size(-1),))


def has_value_embedding(layer, n_layer):
    # every other layer, always including the last
    return layer % 2 == (n_layer - 1) % 2


def rotate(x, cos, sin):
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def window_attention(window, T):
    """An attention function for a causal window of `window` tokens. Full windows use SDPA's causal
    kernel; short ones use flex_attention when compiled on CUDA, else SDPA with an explicit mask."""
    if window >= T:
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if machine.flex:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        block_mask = create_block_mask(lambda b, h, q, kv: (q >= kv) & (q - kv < window), None, None, T, T,
                                       device=device)
        return lambda q, k, v: flex_attention(q, k, v, block_mask=block_mask)
    pos = torch.arange(T, device=device)
    allowed = (pos[:, None] >= pos[None, :]) & (pos[:, None] - pos[None, :] < window)
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:q.size(-2), :q.size(-2)])


class Attention(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.n_embd // config.n_head
        self.c_q = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_k = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_v = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        # value embeddings enter through an input-dependent gate per head (ResFormer-style)
        self.gate_channels = min(32, config.n_embd)
        self.ve_gate = nn.Linear(self.gate_channels, self.n_head, bias=False) \
            if has_value_embedding(layer, config.n_layer) else None
        self.attend = None  # set by GPT: the window of this layer

    def forward(self, x, ve, cos, sin):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        if ve is not None:
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., :self.gate_channels]))  # 1.0 at init
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_head, self.head_dim)
        q, k = norm(rotate(q, cos, sin)), norm(rotate(k, cos, sin))  # QK-norm after RoPE
        q, k, v = (t.to(COMPUTE_DTYPE).transpose(1, 2) for t in (q, k, v))  # autocast may leave norms in fp32
        y = self.attend(q, k, v)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())  # ReLU²


class Block(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.attn = Attention(config, layer)
        self.mlp = MLP(config)

    def forward(self, x, ve, cos, sin):
        x = x + self.attn(norm(x), ve, cos, sin)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(config.vocab_size, config.n_embd)
                                           for i in range(config.n_layer) if has_value_embedding(i, config.n_layer)})
        # learned mix of the running residual and the first layer's input, per layer
        self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))
        self.x0_lambdas = nn.Parameter(torch.zeros(config.n_layer))
        head_dim = config.n_embd // config.n_head
        freqs = 1.0 / 10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(config.sequence_len, dtype=torch.float32), freqs)
        self.register_buffer("cos", angles.cos()[None, :, None, :], persistent=False)
        self.register_buffer("sin", angles.sin()[None, :, None, :], persistent=False)
        pattern = config.window_pattern.upper()
        assert pattern and set(pattern) <= set("SL"), "WINDOW_PATTERN is made of S and L"
        self.windows = [config.sequence_len // 2 if pattern[i % len(pattern)] == "S" else config.sequence_len
                        for i in range(config.n_layer)]
        self.windows[-1] = config.sequence_len  # the last layer always sees the whole context

    @torch.no_grad()
    def init_weights(self):
        s = 3**0.5 * self.config.n_embd**-0.5  # uniform bound with std 1/sqrt(n_embd)
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -s, s)
            nn.init.zeros_(block.attn.c_proj.weight)  # each block starts as the identity
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.zeros_(block.attn.ve_gate.weight)
        for ve in self.value_embeds.values():
            nn.init.uniform_(ve.weight, -s, s)
        self.resid_lambdas.fill_(1.0)
        self.x0_lambdas.fill_(0.1)

    def flops_per_token(self):
        """Training FLOPs per token (forward + backward): 6 per matrix weight, plus attention."""
        embeddings = self.wte.weight.numel() + sum(ve.weight.numel() for ve in self.value_embeds.values())
        matrices = sum(p.numel() for p in self.parameters()) - embeddings
        head_dim = self.config.n_embd // self.config.n_head
        attention = sum(12 * self.config.n_head * head_dim * min(w, self.config.sequence_len) for w in self.windows)
        return 6 * matrices + attention

    def forward(self, idx, targets=None):
        """Logits (what evaluate_bpb asks for); with targets, their mean loss."""
        T = idx.size(1)
        cos, sin = self.cos[:, :T].to(COMPUTE_DTYPE), self.sin[:, :T].to(COMPUTE_DTYPE)
        x = x0 = norm(self.wte(idx).to(COMPUTE_DTYPE))  # a bf16 residual stream halves activation traffic
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx).to(COMPUTE_DTYPE) if str(i) in self.value_embeds else None
            x = block(x, ve, cos, sin)
        logits = self.lm_head(norm(x)).float()
        logits = SOFTCAP * torch.tanh(logits / SOFTCAP)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)


# ---------------------------------------------------------------------------
# Optimizer: Muon (polar-express orthogonalization) for matrices, AdamW for the rest
# ---------------------------------------------------------------------------

# polar-express coefficients for five iterations (arXiv 2505.16932)
POLAR_EXPRESS = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def orthogonalize(g, steps=5):
    """Push a stack of matrices towards the nearest semi-orthogonal ones (bf16 on GPU, fp32 on CPU)."""
    x = g.bfloat16() if g.is_cuda else g.float()
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-6)
    wide = x.size(-2) <= x.size(-1)
    if not wide:
        x = x.mT
    for a, b, c in POLAR_EXPRESS[:steps]:
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.mT


def muon_update(params, momentum_buffer, second_moment, hyper, beta2=0.95):
    """One Muon step for same-shaped matrices: Nesterov momentum, orthogonalize, then a NorMuon-style
    per-row rescale that keeps the update's overall norm, and decoupled weight decay. `hyper` holds
    (lr, momentum, weight decay) as a tensor, so a compiled step is not recompiled as they change."""
    lr, momentum, weight_decay = hyper[0], hyper[1], hyper[2]
    grads = torch.stack([p.grad for p in params])
    momentum_buffer.lerp_(grads, 1 - momentum)
    update = orthogonalize(grads.lerp_(momentum_buffer, momentum)).float()
    reduce_dim = -1 if update.size(-2) >= update.size(-1) else -2
    second_moment.lerp_(update.square().mean(dim=reduce_dim, keepdim=True), 1 - beta2)
    before = update.norm(dim=(-2, -1), keepdim=True)
    update = update / (second_moment.sqrt() + 1e-10)
    update = update * (before / (update.norm(dim=(-2, -1), keepdim=True) + 1e-10))
    scale = max(1.0, update.size(-2) / update.size(-1)) ** 0.5
    for p, u in zip(params, update.unbind(0)):
        p.mul_(1 - lr * weight_decay).sub_(u.to(p.dtype) * (lr * scale))


class MuonAdamW:
    """Groups with kind='muon' (2-d matrices of one shape) or kind='adamw' (everything else).
    A plain class: torch.optim.Optimizer would pull in the compiler stack for nothing."""

    def __init__(self, groups):
        self.param_groups = groups
        self.state = {}
        # compiled (on CUDA), the Muon step's dozens of small kernels become a few
        self.muon_step = machine.compiled(muon_update, "Muon step")

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["kind"] == "muon":
                state = self.state.setdefault(params[0], {})
                if not state:
                    state["momentum"] = torch.zeros(len(params), *params[0].shape, device=params[0].device)
                    shape = list(state["momentum"].shape)
                    shape[-1 if shape[-2] >= shape[-1] else -2] = 1
                    state["second"] = torch.zeros(shape, device=params[0].device)
                # to_device copies without waiting for the backward pass to finish on the GPU
                hyper = to_device(torch.tensor([group["lr"], group["momentum"], group["weight_decay"]]),
                                  params[0].device)
                self.muon_step(params, state["momentum"], state["second"], hyper)
                continue
            beta1, beta2 = group["betas"]
            for p in params:
                state = self.state.setdefault(p, {})
                if not state:
                    state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["step"] += 1
                state["m"].lerp_(p.grad, 1 - beta1)
                state["v"].lerp_(p.grad.square(), 1 - beta2)
                m_hat = state["m"] / (1 - beta1 ** state["step"])
                v_hat = state["v"] / (1 - beta2 ** state["step"])
                p.add_(m_hat / (v_hat.sqrt() + 1e-10), alpha=-group["lr"])


def build_optimizer(model):
    scale = (model.config.n_embd / 768) ** -0.5  # AdamW rates were tuned at width 768
    matrices = [p for p in model.blocks.parameters()]
    groups = [
        dict(kind="adamw", params=[model.wte.weight], lr=EMBEDDING_LR * scale, betas=ADAM_BETAS),
        dict(kind="adamw", params=list(model.value_embeds.parameters()), lr=EMBEDDING_LR * scale, betas=ADAM_BETAS),
        dict(kind="adamw", params=[model.lm_head.weight], lr=UNEMBEDDING_LR * scale, betas=ADAM_BETAS),
        dict(kind="adamw", params=[model.resid_lambdas], lr=SCALAR_LR * 0.01, betas=ADAM_BETAS),
        dict(kind="adamw", params=[model.x0_lambdas], lr=SCALAR_LR, betas=(0.96, 0.95)),
    ]
    for shape in sorted({p.shape for p in matrices}):
        groups.append(dict(kind="muon", params=[p for p in matrices if p.shape == shape], lr=MATRIX_LR,
                           momentum=0.95, weight_decay=WEIGHT_DECAY))
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters())), "every parameter in one group"
    for g in groups:
        g["initial_lr"] = g["lr"]
    return MuonAdamW(groups)


def lr_multiplier(progress):
    if progress < WARMUP_RATIO:
        return progress / WARMUP_RATIO
    if progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    cooldown = (1.0 - progress) / WARMDOWN_RATIO
    return cooldown + (1 - cooldown) * FINAL_LR_FRAC


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

t_start = time.time()
machine.provenance(PROFILE, SEED)
tokenizer = Tokenizer.from_directory()
t_tokenizer = time.time()
model_dim = ((DEPTH * ASPECT_RATIO + HEAD_DIM - 1) // HEAD_DIM) * HEAD_DIM
config = GPTConfig(sequence_len=MAX_SEQ_LEN, vocab_size=tokenizer.get_vocab_size(), n_layer=DEPTH,
                   n_head=model_dim // HEAD_DIM, n_embd=model_dim, window_pattern=WINDOW_PATTERN)
with torch.device(device):
    model = GPT(config)
model.init_weights()


def attach_attention(model):
    """Each block's attention function for its window: one mask per distinct window, not per layer."""
    by_window = {w: window_attention(w, MAX_SEQ_LEN) for w in set(model.windows)}
    for block, window in zip(model.blocks, model.windows):
        block.attn.attend = by_window[window]


def dense_attention():
    """Dense masks in place of flex_attention, which materializes every score when not compiled."""
    if machine.flex:
        machine.flex = False
        attach_attention(model)


attach_attention(model)
if not machine.flex and any(w < MAX_SEQ_LEN for w in model.windows):
    banner("short windows through a dense mask (flex_attention needs torch.compile and CUDA): slower than 'L'")
t_model = time.time()
num_params = sum(p.numel() for p in model.parameters())
flops_per_token = model.flops_per_token()
print(f"model: depth {DEPTH}, width {model_dim}, heads {config.n_head}, windows {model.windows}, "
      f"{num_params / 1e6:.1f}M params, {flops_per_token:.3e} FLOPs/token", flush=True)

tokens_per_pass = DEVICE_BATCH_SIZE * MAX_SEQ_LEN
assert TOTAL_BATCH_SIZE % tokens_per_pass == 0, "TOTAL_BATCH_SIZE must be a multiple of DEVICE_BATCH_SIZE * MAX_SEQ_LEN"
grad_accum_steps = TOTAL_BATCH_SIZE // tokens_per_pass
optimizer = build_optimizer(model)
# after a compiler failure: the eager model, dense masks, and no gradient a half-done pass left
train_model = machine.compiled(model, "model",
                               on_fallback=lambda: (dense_attention(), model.zero_grad(set_to_none=True)))
train_loader = make_dataloader(tokenizer, DEVICE_BATCH_SIZE, MAX_SEQ_LEN, "train", device=device, seed=SEED)
x, y, epoch = next(train_loader)
print(f"startup: tokenizer {t_tokenizer - t_start:.1f}s | model and attention masks {t_model - t_tokenizer:.1f}s | "
      f"optimizer and first batch {time.time() - t_model:.1f}s", flush=True)
print(f"budget {TIME_BUDGET}s | {TOTAL_BATCH_SIZE:,} tokens/step in {grad_accum_steps} passes of "
      f"{DEVICE_BATCH_SIZE}x{MAX_SEQ_LEN}", flush=True)


def forward_backward(m):
    """One pass over the current micro-batch; gradients accumulate over grad_accum_steps passes."""
    with autocast:
        loss = m(x, y)
    (loss / grad_accum_steps).backward()
    return loss.detach()


def wait_for(loss):
    """A step's loss as a number (reading it waits for the step to finish) and the step's time, from
    the end of the step before to its own end."""
    global t_done
    value = loss.item()
    now = time.time()
    dt, t_done = now - t_done, now
    return value, dt


def report(s, loss_value, progress, epoch, dt):
    """The divergence check and the progress line of step s."""
    global smooth_loss
    if not math.isfinite(loss_value) or loss_value > 100:  # NaN > 100 is False: check finiteness too
        print(f"FAIL: training diverged at step {s} (loss {loss_value})", flush=True)
        raise SystemExit(1)
    smooth_loss = 0.9 * smooth_loss + 0.1 * loss_value
    tokens_per_s = TOTAL_BATCH_SIZE / dt
    print(f"step {s:05d} | {100 * progress:5.1f}% | loss {smooth_loss / (1 - 0.9 ** (s + 1)):.6f} | "
          f"lr {lr_multiplier(progress):.2f} | dt {dt * 1000:.0f}ms | {tokens_per_s:,.0f} tok/s | "
          f"mfu {machine.mfu(flops_per_token, tokens_per_s)} | epoch {epoch} | "
          f"{max(0.0, TIME_BUDGET - training_time):.0f}s left", flush=True)


# On CUDA and MPS, which queue work, each step is timed and reported one step late, with the next one
# already queued: the device never idles while the host waits. The CPU finishes each step in the loop.
REPORT_LATE = device.type != "cpu"
step, training_time, smooth_loss, first_step_seconds = 0, 0.0, 0.0, 0.0
pending = None  # on CUDA and MPS: (step, loss on the device, progress, epoch) of the step not yet timed
t_loop = t_done = time.time()
while True:
    progress = min(training_time / TIME_BUDGET, 1.0)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * lr_multiplier(progress)
        if group["kind"] == "muon":
            group["momentum"] = 0.85 + 0.10 * min(step / 300, 1.0)  # momentum warms up from 0.85 to 0.95
            group["weight_decay"] = WEIGHT_DECAY * (1 - progress)
    for _ in range(grad_accum_steps):
        train_loss = train_model.run(forward_backward)
        x, y, epoch = next(train_loader)
    optimizer.step()
    model.zero_grad(set_to_none=True)
    if step == 0:  # within the first step's time, which is not counted
        gc.collect()
        gc.freeze()  # nothing long-lived is made from here on: keep the collector out of the loop
        gc.disable()
    done = (step, train_loss, progress, epoch)
    if REPORT_LATE:
        done, pending = pending, done
    if done:
        loss_value, dt = wait_for(done[1])
        if done[0] == 0:
            first_step_seconds = dt  # mostly compilation when compiled
        if done[0] >= UNTIMED_STEPS:
            training_time += dt  # the training clock: only timed steps spend the budget
        report(done[0], loss_value, done[2], done[3], dt)
    step += 1
    if step > UNTIMED_STEPS and training_time >= TIME_BUDGET:
        break
if pending:  # the last step, still queued
    loss_value, dt = wait_for(pending[1])
    training_time += dt
    report(pending[0], loss_value, pending[2], pending[3], dt)

timed_steps = step - UNTIMED_STEPS
t_eval = time.time()
dense_attention()  # the eager model is evaluated (under the lab: handed off), not a compiled graph of its own
with autocast:
    val_bpb = evaluate_bpb(model, tokenizer, FINAL_EVAL_BATCH_SIZE)
t_end = time.time()
steady_tokens_per_s = timed_steps * TOTAL_BATCH_SIZE / training_time if training_time > 0 else 0.0
machine.summary(val_bpb, training_seconds=training_time, total_seconds=t_end - t_start,
                peak_vram_mb=machine.peak_memory_mb(),
                mfu_percent=machine.mfu(flops_per_token, steady_tokens_per_s, digits=2, sign=""),
                total_tokens_M=step * TOTAL_BATCH_SIZE / 1e6, num_steps=step, num_params_M=num_params / 1e6,
                depth=DEPTH, tokens_per_s=f"{steady_tokens_per_s:.0f}", startup_seconds=t_loop - t_start,
                first_step_seconds=first_step_seconds, eval_seconds=t_end - t_eval, profile=PROFILE)
