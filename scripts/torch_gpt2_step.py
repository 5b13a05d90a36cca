#!/usr/bin/env python3
"""Times one GPT-2 training step in PyTorch, for comparison with
`kiln bench train` (scripts/gpu-check.sh runs both and prints the ratio).

Self-contained: GPT-2 (the Hugging Face GPT2LMHeadModel architecture:
learned positions, pre-LayerNorm blocks, tanh-GELU MLP, tied LM head) is
written out here, so nothing but torch is needed. The step matches Kiln's:
forward, cross-entropy, backward, gradient clipping to norm 1.0, AdamW
(betas 0.9/0.95, eps 1e-8, weight decay 0.1 on weight matrices only), on
random tokens, everything in FP32 with TF32 *off* (plain FP32 matmuls, the
same arithmetic Kiln's kernels do).

    python3 scripts/torch_gpt2_step.py --preset gpt2-124m --batch 8 --seq 1024 \\
        --steps 20 --warmup 3 --json torch.json

Time per step: CUDA events around the whole step (zero_grad … optimizer.step)
on a GPU, the host clock after a synchronize otherwise; the median over
--steps after --warmup untimed steps. Attention is
F.scaled_dot_product_attention (what a PyTorch user would write; in FP32 it
runs the memory-efficient or math kernel, never flash) unless
--attention manual (q·kᵀ, masked softmax, p·v as separate ops, like Kiln's
unfused path).
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    # name: (layers, embd, heads, vocab, seq, batch) as in `kiln bench train`.
    "tiny": (2, 64, 4, 256, 64, 8),
    "small": (4, 256, 4, 256, 256, 8),
    "gpt2-124m": (12, 768, 12, 50257, 1024, 8),
}


class Block(nn.Module):
    def __init__(self, c, heads, attention):
        super().__init__()
        self.heads = heads
        self.attention = attention
        self.ln_1 = nn.LayerNorm(c, eps=1e-5)
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c, eps=1e-5)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def attn(self, x):
        b, t, c = x.shape
        h = self.heads
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, h, c // h).transpose(1, 2) for z in (q, k, v))
        if self.attention == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // h))
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            s = s.masked_fill(~mask, float("-inf"))
            y = F.softmax(s, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, layers, c, heads, vocab, positions, attention):
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(positions, c)
        self.h = nn.ModuleList(Block(c, heads, attention) for _ in range(layers))
        self.ln_f = nn.LayerNorm(c, eps=1e-5)
        # GPT-2's initialisation (as Kiln's GptConfig::init_params).
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif ".ln_" in name or name.startswith("ln_f"):
                nn.init.ones_(p)
            elif name.endswith("c_proj.weight") or name.endswith("mlp_proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * layers))
            else:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        t = idx.shape[1]
        pos = torch.arange(t, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()  # tied LM head
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="gpt2-124m", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when available)")
    ap.add_argument("--attention", default="sdpa", choices=["sdpa", "manual"])
    ap.add_argument("--json", help="write the result here")
    a = ap.parse_args()

    layers, c, heads, vocab, seq, batch = PRESETS[a.preset]
    batch = a.batch or batch
    seq = a.seq or seq
    dev = a.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = dev.startswith("cuda")

    # Plain FP32 everywhere: no TF32 tensor-core matmuls.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.manual_seed(1)

    model = GPT(layers, c, heads, vocab, max(seq, PRESETS[a.preset][4]), a.attention).to(dev)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wte" not in n and "wpe" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "wte" not in n and "wpe" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-4, betas=(0.9, 0.95), eps=1e-8,
    )
    tokens = torch.randint(0, vocab, (batch, seq + 1), device=dev)
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    times = []
    loss = None
    for i in range(a.warmup + max(a.steps, 1)):
        if cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            loss = step()
            end.record()
            torch.cuda.synchronize()
            ms = start.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            loss = step()
            ms = (time.perf_counter() - t0) * 1e3
        if i >= a.warmup:
            times.append(ms)
        print(f"  step {i + 1}{' (warm-up)' if i < a.warmup else ''}: {ms:.2f} ms", file=sys.stderr)

    med = statistics.median(times)
    result = {
        "framework": "pytorch",
        "torch_version": torch.__version__,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "timer": "cuda events" if cuda else "wall",
        "tf32": False,
        "attention": a.attention,
        "preset": a.preset,
        "n_layer": layers,
        "n_embd": c,
        "n_head": heads,
        "vocab": vocab,
        "batch": batch,
        "seq": seq,
        "params": params,
        "warmup_steps": a.warmup,
        "steps": len(times),
        "ms_per_step": med,
        "min_ms_per_step": min(times),
        "samples_ms": times,
        "tokens_per_s": batch * seq / (med / 1e3),
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "loss": float(loss.detach()),
    }
    print(
        f"pytorch {a.preset} B {batch} T {seq} on {result['device']} ({a.attention} attention, "
        f"FP32, TF32 off): {med:.2f} ms/step, {result['tokens_per_s']:.0f} tokens/s, "
        f"loss {result['loss']:.4f}"
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
