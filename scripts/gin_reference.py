#!/usr/bin/env python3
"""Reference fixtures for Kiln's GIN (src/model/gin.rs), from an independent
implementation in plain PyTorch (no graph library), the llm.c way.

For each case: a random small GIN written as Kiln writes a checkpoint
(config.json + model.safetensors, float32) and `reference.safetensors` with

  batch.<name>   the forward inputs by Kiln's names (packed graphs, unused
                 node and edge slots marked -1, edges sorted by destination)
  loss           the loss, computed in float64 from the float32 weights
  out.logits     masked-atom logits [N, elements] or predictions [G, L]
  grad.<param>   d loss / d param for every parameter
  losses         the losses before each of 10 AdamW steps on the batch
                 (lr 1e-3, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on
                 matrices except the embedding tables, clipping at 1.0)

Run (needs torch and safetensors):

    python3 scripts/gin_reference.py --out tests/fixtures/gin

The committed fixtures are what CI checks; this script is not run by CI.
"""

import argparse
import json
import os

import torch
from safetensors.torch import save_file

ATOM = ["element", "degree", "charge", "hydrogens", "aromatic"]
BOND = ["type", "in_ring"]
STEPS = 10


def init_params(cfg, gen):
    h, std = cfg["hidden_size"], 0.3
    p = {}
    for f, rows in zip(ATOM, cfg["atom_vocab_sizes"]):
        p[f"gnn.atom_embeddings.{f}.weight"] = torch.randn(rows, h, generator=gen) * std
    for l in range(cfg["num_layers"]):
        pre = f"gnn.layers.{l}"
        for f, rows in zip(BOND, cfg["bond_vocab_sizes"]):
            p[f"{pre}.bond_embeddings.{f}.weight"] = torch.randn(rows, h, generator=gen) * std
        p[f"{pre}.mlp.0.weight"] = torch.randn(2 * h, h, generator=gen) * std
        p[f"{pre}.mlp.0.bias"] = torch.randn(2 * h, generator=gen) * 0.1
        p[f"{pre}.mlp.2.weight"] = torch.randn(h, 2 * h, generator=gen) * std
        p[f"{pre}.mlp.2.bias"] = torch.randn(h, generator=gen) * 0.1
        p[f"{pre}.norm.weight"] = 1 + 0.1 * torch.randn(h, generator=gen)
        p[f"{pre}.norm.bias"] = 0.1 * torch.randn(h, generator=gen)
    if cfg["task"] == "attr_mask":
        p["atom_head.weight"] = torch.randn(cfg["atom_vocab_sizes"][0], h, generator=gen) * std
        p["atom_head.bias"] = 0.1 * torch.randn(cfg["atom_vocab_sizes"][0], generator=gen)
    else:
        p["graph_head.weight"] = torch.randn(cfg["num_labels"], h, generator=gen) * std
        p["graph_head.bias"] = 0.1 * torch.randn(cfg["num_labels"], generator=gen)
    return p


def lookup(table, ids):
    """table[ids], a zero row where ids is outside [0, rows)."""
    ok = (ids >= 0) & (ids < table.shape[0])
    out = table[ids.clamp(0, table.shape[0] - 1)]
    return out * ok.unsqueeze(-1).to(table.dtype)


def segment_sum(x, idx, segments):
    ok = (idx >= 0) & (idx < segments)
    out = torch.zeros(segments, x.shape[1], dtype=x.dtype)
    return out.index_add(0, idx[ok], x[ok])


def forward(cfg, p, b):
    h = sum(lookup(p[f"gnn.atom_embeddings.{f}.weight"], b[f"atom_{f}"]) for f in ATOM)
    n = h.shape[0]
    for l in range(cfg["num_layers"]):
        pre = f"gnn.layers.{l}"
        msg = lookup(h, b["edge_src"])
        msg = msg + lookup(p[f"{pre}.bond_embeddings.type.weight"], b["bond_type"])
        msg = msg + lookup(p[f"{pre}.bond_embeddings.in_ring.weight"], b["bond_in_ring"])
        agg = segment_sum(msg, b["edge_dst"], n)
        z = torch.relu(agg @ p[f"{pre}.mlp.0.weight"].T + p[f"{pre}.mlp.0.bias"])
        z = z @ p[f"{pre}.mlp.2.weight"].T + p[f"{pre}.mlp.2.bias"]
        h = torch.nn.functional.layer_norm(
            z, (z.shape[1],), p[f"{pre}.norm.weight"], p[f"{pre}.norm.bias"], cfg["layer_norm_eps"]
        )
        if l + 1 < cfg["num_layers"]:
            h = torch.relu(h)
    if cfg["task"] == "attr_mask":
        logits = h @ p["atom_head.weight"].T + p["atom_head.bias"]
        loss = torch.nn.functional.cross_entropy(logits, b["atom_labels"].long(), ignore_index=-100)
        return logits, loss
    g = b["graph_weight"].shape[0]
    pooled = segment_sum(h, b["node_graph"], g)
    if cfg["pooling"] == "mean":
        pooled = pooled * b["graph_weight"].unsqueeze(1)
    pred = pooled @ p["graph_head.weight"].T + p["graph_head.bias"]
    # The mean over real graphs only (empty slots have no label).
    used = b["label_weight"] > 0
    loss = ((pred[used] - b["labels"][used]) ** 2).mean()
    return pred, loss


def random_batch(cfg, gen, graphs, slots, seq):
    """`graphs` random connected molecules-like graphs packed into `slots`
    graph slots of N = slots*seq nodes and E = 3N edges."""
    n_cap, e_cap = slots * seq, 3 * slots * seq
    node_graph, edges = [], []  # edges: (src, dst, type, ring)
    base = 0
    for gi in range(graphs):
        n = int(torch.randint(3, seq + 2, (1,), generator=gen))
        n = min(n, n_cap - base)
        node_graph += [gi] * n
        for v in range(1, n):  # a random tree
            u = int(torch.randint(0, v, (1,), generator=gen))
            t = int(torch.randint(0, 4, (1,), generator=gen))
            edges.append((base + u, base + v, t, 0))
        if n >= 4:  # one ring closure
            edges.append((base, base + n - 1, 3, 1))
        base += n
    directed = []
    for s, d, t, r in edges:
        directed += [(s, d, t, r), (d, s, t, r)]
    directed += [(v, v, 4, 0) for v in range(base)]  # self-loops
    directed.sort(key=lambda e: (e[1], e[0]))
    assert len(directed) <= e_cap
    pad_e = e_cap - len(directed)
    b = {}
    for i, (f, rows) in enumerate(zip(ATOM, cfg["atom_vocab_sizes"])):
        ids = torch.randint(0, rows, (base,), generator=gen).int()
        b[f"atom_{f}"] = torch.cat([ids, torch.full((n_cap - base,), -1, dtype=torch.int32)])
    b["edge_src"] = torch.tensor([e[0] for e in directed] + [0] * pad_e, dtype=torch.int32)
    b["edge_dst"] = torch.tensor([e[1] for e in directed] + [-1] * pad_e, dtype=torch.int32)
    b["bond_type"] = torch.tensor([e[2] for e in directed] + [-1] * pad_e, dtype=torch.int32)
    b["bond_in_ring"] = torch.tensor([e[3] for e in directed] + [-1] * pad_e, dtype=torch.int32)
    b["node_graph"] = torch.tensor(node_graph + [-1] * (n_cap - base), dtype=torch.int32)
    counts = torch.bincount(torch.tensor(node_graph), minlength=slots).float()
    b["graph_weight"] = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros(slots))
    if cfg["task"] == "attr_mask":
        labels = torch.full((n_cap,), -100, dtype=torch.int32)
        chosen = torch.randperm(base, generator=gen)[: max(2, base // 4)]
        labels[chosen] = b["atom_element"][chosen]
        b["atom_element"][chosen] = cfg["atom_vocab_sizes"][0] - 1  # the mask id
        b["atom_labels"] = labels
    else:
        L = cfg["num_labels"]
        y = torch.randn(slots, L, generator=gen)
        y[graphs:] = 0
        b["labels"] = y
        w = torch.zeros(slots)
        w[:graphs] = (slots / graphs) ** 0.5
        b["label_weight"] = w
    return b


def adamw_losses(cfg, p, b, decay):
    params = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    groups = [
        {"params": [v for k, v in params.items() if k in decay], "weight_decay": 0.1},
        {"params": [v for k, v in params.items() if k not in decay], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    out = []
    for _ in range(STEPS):
        opt.zero_grad()
        _, loss = forward(cfg, params, b)
        out.append(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
    return out


def case(out_dir, name, cfg, seed, graphs, slots, seq):
    gen = torch.Generator().manual_seed(seed)
    p32 = init_params(cfg, gen)
    b = random_batch(cfg, gen, graphs, slots, seq)
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    full = dict(cfg, model_type="gin")
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(full, f, indent=2)
    save_file({k: v.float().contiguous() for k, v in p32.items()}, os.path.join(d, "model.safetensors"))
    p64 = {k: v.double().requires_grad_(True) for k, v in p32.items()}
    b64 = {k: (v.double() if v.is_floating_point() else v.long()) for k, v in b.items()}
    out, loss = forward(cfg, p64, b64)
    loss.backward()
    t = {"loss": loss.detach().reshape(1).float(), "out.logits": out.detach().float().contiguous()}
    for k, v in b.items():
        t["batch." + k] = v.contiguous()
    for k, v in p64.items():
        t["grad." + k] = v.grad.float().contiguous()
    decay = {k for k, v in p32.items() if v.dim() >= 2 and "embeddings" not in k}
    t["losses"] = torch.tensor(adamw_losses(cfg, {k: v.double() for k, v in p32.items()}, b64, decay))
    t["losses"] = t["losses"].float()
    meta = {"steps": str(STEPS), "lr": "0.001", "weight_decay": "0.1", "grad_clip": "1.0"}
    save_file(t, os.path.join(d, "reference.safetensors"), metadata=meta)
    print(f"{name}: loss {loss.item():.6f}, {len(t)} tensors -> {d}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    base = dict(
        atom_vocab_sizes=[9, 8, 6, 6, 3], bond_vocab_sizes=[6, 3], layer_norm_eps=1e-5,
        initializer_range=0.02, pooling="mean", element_symbols=[],
    )
    case(a.out, "gin_mask", dict(base, hidden_size=12, num_layers=3, task="attr_mask", num_labels=1),
         seed=1, graphs=3, slots=3, seq=6)
    case(a.out, "gin_regression",
         dict(base, hidden_size=20, num_layers=2, task="regression", num_labels=2),
         seed=2, graphs=3, slots=4, seq=5)


if __name__ == "__main__":
    main()
