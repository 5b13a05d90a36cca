#!/usr/bin/env python3
"""PyTorch reference state for Kiln's GPT parity tests (the llm.c way).

Builds GPT-2 (the Hugging Face GPT2LMHeadModel architecture, written out
here so nothing but torch is needed) for a small config, and writes one
safetensors file with:

  param.<name>   the initial parameters, Hugging Face names and layouts
  inputs, targets  i32 [B, T]
  logits         [B, T, V] of the first forward pass
  loss           [1]
  grad.<name>    the gradient of every parameter
  losses         [STEPS] the loss before each of STEPS AdamW steps on the same batch

and the config as metadata. With --checkpoint DIR the initial parameters
come from a Kiln checkpoint (model.safetensors + config.json) instead of a
seeded initialisation. Usage:

  python3 scripts/gpt_reference.py --out tests/fixtures/gpt_reference.safetensors

Not run by CI: the output is committed.
"""
import argparse
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


def gpt_forward(p, cfg, idx):
    B, T = idx.shape
    C, H, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    pos = torch.arange(T)
    x = p["transformer.wte.weight"][idx] + p["transformer.wpe.weight"][pos]
    for l in range(L):
        w = lambda s: p[f"transformer.h.{l}.{s}"]
        h = F.layer_norm(x, (C,), w("ln_1.weight"), w("ln_1.bias"), eps)
        qkv = h @ w("attn.c_attn.weight") + w("attn.c_attn.bias")
        q, k, v = qkv.split(C, dim=2)
        q = q.view(B, T, H, C // H).transpose(1, 2)
        k = k.view(B, T, H, C // H).transpose(1, 2)
        v = v.view(B, T, H, C // H).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // H))
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + (y @ w("attn.c_proj.weight") + w("attn.c_proj.bias"))
        h = F.layer_norm(x, (C,), w("ln_2.weight"), w("ln_2.bias"), eps)
        h = F.gelu(h @ w("mlp.c_fc.weight") + w("mlp.c_fc.bias"), approximate="tanh")
        x = x + (h @ w("mlp.c_proj.weight") + w("mlp.c_proj.bias"))
    x = F.layer_norm(x, (C,), p["transformer.ln_f.weight"], p["transformer.ln_f.bias"], eps)
    return x @ p["transformer.wte.weight"].T


def param_shapes(cfg):
    C, V, P = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]
    out = [("transformer.wte.weight", (V, C)), ("transformer.wpe.weight", (P, C))]
    for l in range(cfg["n_layer"]):
        h = lambda s: f"transformer.h.{l}.{s}"
        out += [
            (h("ln_1.weight"), (C,)), (h("ln_1.bias"), (C,)),
            (h("attn.c_attn.weight"), (C, 3 * C)), (h("attn.c_attn.bias"), (3 * C,)),
            (h("attn.c_proj.weight"), (C, C)), (h("attn.c_proj.bias"), (C,)),
            (h("ln_2.weight"), (C,)), (h("ln_2.bias"), (C,)),
            (h("mlp.c_fc.weight"), (C, 4 * C)), (h("mlp.c_fc.bias"), (4 * C,)),
            (h("mlp.c_proj.weight"), (4 * C, C)), (h("mlp.c_proj.bias"), (C,)),
        ]
    out += [("transformer.ln_f.weight", (C,)), ("transformer.ln_f.bias", (C,))]
    return out


def init_params(cfg, seed):
    # GPT-2 initialisation; biases get small random values (not zeros) so
    # that their gradients and the bias paths are really exercised.
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in param_shapes(cfg):
        if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith(".bias"):
            t = 0.02 * torch.randn(shape, generator=g)
        else:
            t = 0.02 * torch.randn(shape, generator=g)
        out[name] = t.float()
    return out


def decays(name):
    return name.endswith(".weight") and ".ln_" not in name and "wte" not in name and "wpe" not in name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoint", help="Kiln checkpoint directory to take parameters from")
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--embd", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    a = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.backends.cuda.matmul.allow_tf32 = False

    if a.checkpoint:
        cfg = json.load(open(os.path.join(a.checkpoint, "config.json")))
        params = {k: v.float() for k, v in load_file(os.path.join(a.checkpoint, "model.safetensors")).items()}
    else:
        cfg = dict(vocab_size=a.vocab, n_positions=a.seq, n_embd=a.embd, n_head=a.heads,
                   n_layer=a.layers, layer_norm_epsilon=1e-5)
        params = init_params(cfg, a.seed)
    B, T = a.batch, min(a.seq, cfg["n_positions"])
    g = torch.Generator().manual_seed(a.seed + 1)
    seq = torch.randint(0, cfg["vocab_size"], (B, T + 1), generator=g)
    inputs, targets = seq[:, :-1].contiguous(), seq[:, 1:].contiguous()

    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    logits = gpt_forward(p, cfg, inputs)
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
    loss.backward()
    out = {f"param.{k}": v.contiguous() for k, v in params.items()}
    out["inputs"] = inputs.int()
    out["targets"] = targets.int()
    out["logits"] = logits.detach().contiguous()
    out["loss"] = loss.detach().reshape(1)
    for k, v in p.items():
        out[f"grad.{k}"] = v.grad.detach().contiguous()

    # STEPS AdamW steps on the same batch, as Kiln's trainer does them:
    # clip by global norm, then AdamW with decay on matmul weights only.
    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    names = [n for n, _ in param_shapes(cfg)]
    groups = [
        {"params": [p[n] for n in names if decays(n)], "weight_decay": a.weight_decay},
        {"params": [p[n] for n in names if not decays(n)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    losses = []
    for _ in range(a.steps):
        opt.zero_grad()
        logits = gpt_forward(p, cfg, inputs)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        loss.backward()
        if a.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p[n] for n in names], a.grad_clip)
        opt.step()
        losses.append(loss.item())
    out["losses"] = torch.tensor(losses, dtype=torch.float32)
    meta = {k: str(v) for k, v in cfg.items()}
    meta.update(batch=str(B), seq=str(T), steps=str(a.steps), lr=str(a.lr),
                weight_decay=str(a.weight_decay), grad_clip=str(a.grad_clip),
                betas="0.9,0.95", eps="1e-8", torch=torch.__version__)
    save_file(out, a.out, metadata=meta)
    print(f"wrote {a.out}: loss {out['loss'].item():.6f}, losses {[round(x, 5) for x in losses]}")


if __name__ == "__main__":
    main()
