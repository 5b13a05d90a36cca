#!/usr/bin/env python3
"""A checkpoint Kiln wrote, loaded by Hugging Face's `from_pretrained`, gives
Kiln's outputs: the other direction of tests/hf_parity.rs (which loads what
`save_pretrained` wrote into Kiln).

For a run directory of any of Kiln's models (GPT-2, BERT, ViT, CLIP) this
loads it with the matching transformers class (float64, eval mode), makes a
small random batch of that model's inputs (padding included), runs
`kiln grads` on the same batch and compares the loss, the logits and every
gradient. Exits non-zero past the tolerances (logits 1e-4, loss 1e-5,
gradients 1e-5 + 1e-3·|ref|, as the parity tests). Needs torch,
transformers, safetensors; not run by CI (no Python there).

    python3 scripts/check_hf_load.py RUN_DIR [--kiln target/release/kiln]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file


def batch_for(kind, cfg, g):
    b = 3
    if kind == "gpt2":
        t = min(cfg["n_positions"], 13)
        ids = torch.randint(0, cfg["vocab_size"], (b, t), generator=g)
        return {"input_ids": ids, "labels": ids.clone()}
    if kind == "bert":
        t = min(cfg["max_position_embeddings"], 13)
        v = cfg["vocab_size"]
        ids = torch.randint(5, v, (b, t), generator=g)
        mask = torch.ones(b, t, dtype=torch.long)
        mask[1, t - 4:] = 0
        ids[1, t - 4:] = cfg.get("pad_token_id", 0) or 0
        labels = torch.full((b, t), -100)
        labels[:, 2::3] = torch.randint(0, v, labels[:, 2::3].shape, generator=g)
        labels[1, t - 4:] = -100
        return {"input_ids": ids, "attention_mask": mask,
                "token_type_ids": torch.zeros(b, t, dtype=torch.long), "labels": labels}
    if kind == "vit":
        c, s = cfg["num_channels"], cfg["image_size"]
        return {"pixel_values": torch.randn(b, c, s, s, generator=g),
                "labels": torch.randint(0, len(cfg["id2label"]), (b,), generator=g)}
    if kind == "clip":
        tc, vc = cfg["text_config"], cfg["vision_config"]
        t = min(tc["max_position_embeddings"], 11)
        eos, bos = tc["eos_token_id"], tc["bos_token_id"]
        ids = torch.randint(0, min(eos, bos), (b, t), generator=g)
        mask = torch.ones(b, t, dtype=torch.long)
        for i, e in enumerate([t - 1, 4, t - 3]):
            ids[i, 0] = bos
            ids[i, e] = eos
            ids[i, e + 1:] = tc.get("pad_token_id", 0) or 0
            mask[i, e + 1:] = 0
        c, s = vc["num_channels"], vc["image_size"]
        return {"input_ids": ids, "attention_mask": mask,
                "pixel_values": torch.randn(b, c, s, s, generator=g)}
    raise SystemExit(f"unknown model_type {kind}")


def hf_model(kind, run):
    import transformers as tf

    cls = {"gpt2": tf.GPT2LMHeadModel, "bert": tf.BertForMaskedLM,
           "vit": tf.ViTForImageClassification, "clip": tf.CLIPModel}[kind]
    m = cls.from_pretrained(run, attn_implementation="eager").double()
    m.train(False)
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--kiln", default="target/release/kiln")
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(a.run, "config.json")))
    kind = cfg["model_type"]
    g = torch.Generator().manual_seed(0)
    batch = batch_for(kind, cfg, g)
    m = hf_model(kind, a.run)
    b64 = {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}
    if kind == "clip":
        out = m(**b64, return_loss=True)
        logits_name, logits = "logits_per_image", out.logits_per_image
    else:
        out = m(**b64)
        logits_name, logits = "logits", out.logits
    out.loss.backward()

    with tempfile.TemporaryDirectory() as d:
        bf, gf = os.path.join(d, "batch.safetensors"), os.path.join(d, "grads.safetensors")
        save_file({k: (v.float() if v.is_floating_point() else v.int()).contiguous() for k, v in batch.items()}, bf)
        subprocess.run([a.kiln, "grads", "--checkpoint", a.run, "--batch", bf, "--out", gf], check=True)
        k = load_file(gf)

    ok = True
    loss_err = abs(k["loss"].double().item() - out.loss.item())
    logit_err = (k[logits_name].double() - logits.detach()).abs().max().item()
    print(f"{kind}: loss kiln {k['loss'].item():.6f} hf {out.loss.item():.6f} (err {loss_err:.1e}); "
          f"{logits_name} max err {logit_err:.1e}")
    ok &= loss_err <= 1e-5 and logit_err <= 1e-4
    saved = load_file(os.path.join(a.run, "model.safetensors"))
    params = dict(m.named_parameters())
    checked, worst = 0, 0.0
    for name in saved:
        key = "grad." + name
        if key not in k:
            print(f"  kiln wrote no {key}")
            ok = False
            continue
        p = params.get(name)
        if p is None:  # transformers renamed it internally: match by value
            hits = [q for q in params.values() if q.shape == saved[name].shape and torch.equal(q.detach().float(), saved[name])]
            p = hits[0] if len(hits) == 1 else None
        if p is None or p.grad is None:
            print(f"  {name}: no Hugging Face gradient to compare")
            ok = False
            continue
        ref = p.grad.detach()
        err = (k[key].double() - ref).abs() / (1e-5 + 1e-3 * ref.abs())
        worst = max(worst, err.max().item())
        checked += 1
    print(f"  {checked} gradients, worst error {worst:.2f} of the tolerance")
    ok &= worst <= 1.0
    print("ok" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
