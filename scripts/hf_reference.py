#!/usr/bin/env python3
"""Hugging Face reference fixtures for Kiln's parity tests, the llm.c way.

For each case: a random small model of a transformers class, saved with
`save_pretrained` (config.json + model.safetensors, float32, exactly as a
user's checkpoint would be), and `reference.safetensors` holding

  batch.<name>     the forward arguments by their Hugging Face names
  loss             the model's loss on that batch, computed in float64
  out.<name>       the model's outputs (logits, logits_per_image, ...)
  grad.<param>     d loss / d param for every parameter in the file
  losses           the losses before each of STEPS AdamW steps on the batch
                   (lr, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on
                   matrices, embeddings excepted as Kiln's models declare)

Everything is computed in float64 from the float32 weights, so the fixture
measures Kiln's f32 error alone. Run (needs torch, transformers, safetensors):

    python3 scripts/hf_reference.py --out tests/fixtures/hf [--only gpt2_ninner]

The committed fixtures are what CI checks; this script is not run by CI.
"""

import argparse
import json
import os

import torch
from safetensors.torch import save_file

STEPS = 10


def adamw_losses(model, batch, loss_of, decay_names, lr=1e-3):
    """Losses of STEPS AdamW steps on one batch, as Kiln's trainer takes them
    (global-norm clipping at 1.0, then AdamW; decay only on decay_names)."""
    params = dict(model.named_parameters())
    groups = [
        {"params": [p for n, p in params.items() if n in decay_names], "weight_decay": 0.1},
        {"params": [p for n, p in params.items() if n not in decay_names], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    out = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = loss_of(model, batch)
        out.append(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return out


def saved_names(model, path):
    """named_parameters() name -> the name save_pretrained wrote it under.
    transformers 5 renames some modules internally (ViT's q_proj, ...) and
    converts back to the published checkpoint names when saving; match the
    tensors by value (random initialisations are unique)."""
    from safetensors.torch import load_file

    saved = load_file(path)
    out = {}
    for n, p in model.named_parameters():
        if n in saved and torch.equal(saved[n], p.detach().float()):
            out[n] = n
            continue
        hits = [k for k, v in saved.items() if v.shape == p.shape and torch.equal(v, p.detach().float())]
        if len(hits) != 1:
            raise SystemExit(f"cannot tell which saved tensor {n} is: {hits}")
        out[n] = hits[0]
    return out


def write_case(out_dir, name, model, batch, loss_of, outputs_of, decay_names, meta=None):
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    model = model.float()
    model.save_pretrained(d, safe_serialization=True)
    names = saved_names(model, os.path.join(d, "model.safetensors"))
    m64 = model.double()
    m64.train(False)
    b64 = {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}
    m64.zero_grad()
    loss = loss_of(m64, b64)
    loss.backward()
    tensors = {"loss": loss.detach().reshape(1).float()}
    for k, v in outputs_of(m64, b64).items():
        tensors["out." + k] = v.detach().float().contiguous()
    for k, v in batch.items():
        tensors["batch." + k] = (v.float() if v.is_floating_point() else v.int()).contiguous()
    for n, p in m64.named_parameters():
        if p.grad is not None:
            tensors["grad." + names[n]] = p.grad.detach().float().contiguous()
    tensors["losses"] = torch.tensor(adamw_losses(m64, b64, loss_of, decay_names), dtype=torch.float32)
    info = {"steps": str(STEPS), "lr": "0.001", "weight_decay": "0.1", "grad_clip": "1.0"}
    info.update({k: str(v) for k, v in (meta or {}).items()})
    save_file(tensors, os.path.join(d, "reference.safetensors"), metadata=info)
    print(f"{name}: loss {loss.item():.6f}, {len(tensors)} tensors -> {d}")


def gpt2_case(out_dir, name, n_inner, seed):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=37, n_positions=16, n_embd=24, n_layer=2, n_head=3, n_inner=n_inner,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
    )
    model = GPT2LMHeadModel(cfg)
    # Non-trivial biases and gains so every path is exercised.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias") or ".ln_" in n:
                p.add_(0.1 * torch.randn_like(p))
    b, t = 3, 11
    ids = torch.randint(0, 37, (b, t))
    labels = ids.clone()
    labels[0, 4] = -100
    labels[2, 7] = -100
    batch = {"input_ids": ids, "labels": labels}

    def loss_of(m, bt):
        return m(input_ids=bt["input_ids"], labels=bt["labels"]).loss

    def outputs_of(m, bt):
        return {"logits": m(input_ids=bt["input_ids"]).logits}

    decay = {n for n, p in model.named_parameters() if p.dim() >= 2 and "wte" not in n and "wpe" not in n}
    write_case(out_dir, name, model, batch, loss_of, outputs_of, decay)


def perturb(model, scale=0.1):
    """Non-trivial biases and norm parameters, so every path is exercised."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias") or "norm" in n.lower() or "layrnorm" in n:
                p.add_(scale * torch.randn_like(p))


def bert_case(out_dir, name, seed, layers, heads, head_dim, seq, pad):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    h = heads * head_dim
    cfg = BertConfig(
        vocab_size=41, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * h + 3, max_position_embeddings=seq + 4, type_vocab_size=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0,
    )
    model = BertForMaskedLM(cfg)
    perturb(model)
    b = 3
    ids = torch.randint(1, 41, (b, seq))
    mask = torch.ones(b, seq, dtype=torch.long)
    for i, p in enumerate(pad):
        if p:
            mask[i, seq - p:] = 0
            ids[i, seq - p:] = 0
    types = torch.zeros(b, seq, dtype=torch.long)
    types[:, seq // 2:] = 1
    labels = torch.full((b, seq), -100)
    for i in range(b):
        for j in range(0, seq, 3):
            if mask[i, j]:
                labels[i, j] = torch.randint(0, 41, ()).item()
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels}

    def loss_of(m, bt):
        return m(**bt).loss

    def outputs_of(m, bt):
        return {"logits": m(**{k: v for k, v in bt.items() if k != "labels"}).logits}

    decay = {n for n, p in model.named_parameters() if p.dim() >= 2}
    write_case(out_dir, name, model, batch, loss_of, outputs_of, decay)


def vit_case(out_dir, name, seed, layers, heads, head_dim, image, patch, channels, labels_n):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    h = heads * head_dim
    cfg = ViTConfig(
        hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * h + 5,
        image_size=image, patch_size=patch, num_channels=channels, num_labels=labels_n,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    model = ViTForImageClassification(cfg)
    perturb(model)
    with torch.no_grad():
        model.vit.embeddings.cls_token.normal_(0, 0.5)
        model.vit.embeddings.position_embeddings.normal_(0, 0.5)
    b = 3
    pixels = torch.randn(b, channels, image, image)
    labels = torch.randint(0, labels_n, (b,))
    batch = {"pixel_values": pixels, "labels": labels}

    def loss_of(m, bt):
        return m(**bt).loss

    def outputs_of(m, bt):
        return {"logits": m(pixel_values=bt["pixel_values"]).logits}

    decay = {n for n, p in model.named_parameters() if p.dim() >= 2}
    write_case(out_dir, name, model, batch, loss_of, outputs_of, decay)


def clip_case(out_dir, name, seed, layers, heads, head_dim, seq, image, patch, channels):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    h = heads * head_dim
    vocab, eos = 29, 28
    text = dict(
        vocab_size=vocab, hidden_size=h, intermediate_size=2 * h + 1, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=seq + 2, eos_token_id=eos, bos_token_id=27,
        pad_token_id=0, hidden_act="quick_gelu",
    )
    vision = dict(
        hidden_size=h + heads, intermediate_size=3 * h, num_hidden_layers=layers, num_attention_heads=heads,
        image_size=image, patch_size=patch, num_channels=channels, hidden_act="quick_gelu",
    )
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=h - 1)
    model = CLIPModel(cfg)
    perturb(model)
    with torch.no_grad():
        model.vision_model.embeddings.class_embedding.normal_(0, 0.5)
    b = 4
    ids = torch.randint(1, 27, (b, seq))
    mask = torch.ones(b, seq, dtype=torch.long)
    ends = [seq - 1, seq - 3, 2, seq - 2]
    for i, e in enumerate(ends):
        ids[i, 0] = 27
        ids[i, e] = eos
        ids[i, e + 1:] = 0
        mask[i, e + 1:] = 0
    pixels = torch.randn(b, channels, image, image)
    batch = {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}

    def loss_of(m, bt):
        return m(**bt, return_loss=True).loss

    def outputs_of(m, bt):
        out = m(**bt)
        return {"logits_per_image": out.logits_per_image, "logits_per_text": out.logits_per_text}

    decay = {n for n, p in model.named_parameters() if p.dim() >= 2 and "embedding" not in n}
    write_case(out_dir, name, model, batch, loss_of, outputs_of, decay)


def bert_seqcls_case(out_dir, name, seed, labels_n, pad):
    """BertForSequenceClassification: the pooler (tanh on [CLS]) and a new
    classifier; one label means regression (MSE on float targets)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    seq, h = 9, 16
    cfg = BertConfig(
        vocab_size=41, hidden_size=h, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=2 * h + 3, max_position_embeddings=seq + 4, type_vocab_size=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0,
        num_labels=labels_n,
    )
    if labels_n == 1:
        cfg.problem_type = "regression"
    model = BertForSequenceClassification(cfg)
    perturb(model)
    b = 4
    ids = torch.randint(1, 41, (b, seq))
    mask = torch.ones(b, seq, dtype=torch.long)
    for i, p in enumerate(pad):
        if p:
            mask[i, seq - p:] = 0
            ids[i, seq - p:] = 0
    types = torch.zeros(b, seq, dtype=torch.long)
    if labels_n == 1:
        labels = torch.randn(b)
    else:
        labels = torch.randint(0, labels_n, (b,))
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels}

    def loss_of(m, bt):
        return m(**bt).loss

    def outputs_of(m, bt):
        return {"logits": m(**{k: v for k, v in bt.items() if k != "labels"}).logits}

    decay = {n for n, p in model.named_parameters() if p.dim() >= 2}
    write_case(out_dir, name, model, batch, loss_of, outputs_of, decay)


def gpt2_seqcls_case(out_dir, name, seed, labels_n):
    """GPT2ForSequenceClassification: `score` on the last token that is not
    padding (pad_token_id set; rows padded on the right)."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    pad = 36
    cfg = GPT2Config(
        vocab_size=37, n_positions=16, n_embd=24, n_layer=2, n_head=3,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
        pad_token_id=pad, num_labels=labels_n,
    )
    model = GPT2ForSequenceClassification(cfg)
    perturb(model)
    b, t = 4, 11
    ids = torch.randint(0, 36, (b, t))
    for i, n in enumerate([0, 3, 7, 1]):
        if n:
            ids[i, t - n:] = pad
    labels = torch.randint(0, labels_n, (b,))
    batch = {"input_ids": ids, "labels": labels}

    def loss_of(m, bt):
        return m(**bt).loss

    def outputs_of(m, bt):
        return {"logits": m(input_ids=bt["input_ids"]).logits}

    decay = {n for n, p in model.named_parameters() if p.dim() >= 2 and "wte" not in n and "wpe" not in n}
    write_case(out_dir, name, model, batch, loss_of, outputs_of, decay)


def distill_case(out_dir, name, seed, alpha, tau):
    """Knowledge distillation, GPT-2 into a smaller GPT-2: the student's loss
    (1 - alpha)·CE + alpha·tau²·KL(softmax(t/tau) || softmax(s/tau)), the KL
    averaged over every position (kl_div(..., reduction="batchmean") on
    [B·T, V] rows). The teacher is saved in `teacher/`; the fixture's model is
    the student, its gradients those of the mixed loss."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    common = dict(vocab_size=37, n_positions=16, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                  bos_token_id=None, eos_token_id=None)
    teacher = GPT2LMHeadModel(GPT2Config(n_embd=24, n_layer=2, n_head=3, **common))
    student = GPT2LMHeadModel(GPT2Config(n_embd=12, n_layer=1, n_head=2, **common))
    perturb(teacher, 0.3)
    perturb(student)
    d = os.path.join(out_dir, name)
    teacher.float().save_pretrained(os.path.join(d, "teacher"), safe_serialization=True)
    t64 = teacher.double()
    t64.train(False)
    b, t = 3, 10
    ids = torch.randint(0, 37, (b, t))
    batch = {"input_ids": ids, "labels": ids.clone()}
    with torch.no_grad():
        tlogits = t64(input_ids=ids).logits

    def loss_of(m, bt):
        out = m(input_ids=bt["input_ids"], labels=bt["labels"])
        s = out.logits.reshape(-1, 37) / tau
        p = torch.nn.functional.softmax(tlogits.reshape(-1, 37).to(s.dtype) / tau, dim=-1)
        kl = torch.nn.functional.kl_div(torch.log_softmax(s, -1), p, reduction="batchmean")
        return (1 - alpha) * out.loss + alpha * tau * tau * kl

    def outputs_of(m, bt):
        return {"logits": m(input_ids=bt["input_ids"]).logits}

    decay = {n for n, p in student.named_parameters() if p.dim() >= 2 and "wte" not in n and "wpe" not in n}
    write_case(out_dir, name, student, batch, loss_of, outputs_of, decay,
               meta={"alpha": alpha, "tau": tau})


def bert_pretrained_case(out_dir, name, seed):
    """A BertForMaskedLM and its WordPiece tokenizer as Hugging Face saves
    them (model.save_pretrained + BertTokenizerFast.save_pretrained), for
    the test that `kiln finetune` trains a head on such a checkpoint. The
    weights are random: the test checks loading and training, not quality."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    torch.manual_seed(seed)
    words = ["red", "green", "blue", "apple", "river", "stone", "cloud", "quick", "slow", "bright"]
    corpus = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(12)) for i in range(200)]
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(corpus, vocab_size=120, min_frequency=1)
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    tok = BertTokenizerFast(
        tokenizer_object=wp._tokenizer, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
        cls_token="[CLS]", mask_token="[MASK]",
    )
    tok.save_pretrained(d)
    cfg = BertConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, pad_token_id=tok.pad_token_id,
    )
    BertForMaskedLM(cfg).save_pretrained(d, safe_serialization=True)
    print(f"{name}: BertForMaskedLM, vocab {len(tok)} -> {d}")


def vit_mim_case(out_dir, name, seed):
    """ViTForMaskedImageModeling's parameters (mask token, 1x1-conv decoder
    to each patch's pixels) with Kiln's objective: the mean squared error of
    the masked patches' pixels (Hugging Face's own loss is L1). Exactly half
    of each image's patches are masked (mask_ratio 0.5)."""
    from transformers import ViTConfig, ViTForMaskedImageModeling

    torch.manual_seed(seed)
    image, patch, ch, h = 16, 4, 2, 16
    cfg = ViTConfig(
        hidden_size=h, num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * h + 5,
        image_size=image, patch_size=patch, num_channels=ch, encoder_stride=patch,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    model = ViTForMaskedImageModeling(cfg)
    perturb(model)
    with torch.no_grad():
        model.vit.embeddings.mask_token.normal_(0, 0.5)
        model.vit.embeddings.cls_token.normal_(0, 0.5)
    b, n = 3, (image // patch) ** 2
    pixels = torch.randn(b, ch, image, image)
    masked = torch.zeros(b, n, dtype=torch.long)
    for i in range(b):
        masked[i, torch.randperm(n)[: n // 2]] = 1
    batch = {"pixel_values": pixels, "bool_masked_pos": masked}

    def patches(x):
        g = image // patch
        return x.reshape(b, ch, g, patch, g, patch).permute(0, 2, 4, 1, 3, 5).reshape(b, n, ch * patch * patch)

    def loss_of(m, bt):
        rec = m(pixel_values=bt["pixel_values"], bool_masked_pos=bt["bool_masked_pos"]).reconstruction
        err = (patches(rec) - patches(bt["pixel_values"])) ** 2
        w = bt["bool_masked_pos"].unsqueeze(-1).to(err.dtype)
        return (err * w).sum() / (w.sum() * err.shape[-1])

    def outputs_of(m, bt):
        rec = m(pixel_values=bt["pixel_values"], bool_masked_pos=bt["bool_masked_pos"]).reconstruction
        return {"reconstruction": patches(rec)}

    decay = {n for n, p in model.named_parameters() if p.dim() >= 2}
    write_case(out_dir, name, model, batch, loss_of, outputs_of, decay)


def clip_cls_case(out_dir, name, seed, labels_n):
    """CLIPForImageClassification: CLIP's image tower and a classifier on
    the mean of the patch states (what `kiln finetune` builds from a CLIP
    checkpoint)."""
    from transformers import CLIPConfig, CLIPForImageClassification

    torch.manual_seed(seed)
    h, heads, image, patch, channels = 16, 2, 12, 4, 1
    text = dict(vocab_size=29, hidden_size=h, intermediate_size=2 * h, num_hidden_layers=1,
                num_attention_heads=heads, max_position_embeddings=8, eos_token_id=28, bos_token_id=27,
                pad_token_id=0, hidden_act="quick_gelu")
    vision = dict(hidden_size=h, intermediate_size=3 * h, num_hidden_layers=2, num_attention_heads=heads,
                  image_size=image, patch_size=patch, num_channels=channels, hidden_act="quick_gelu")
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=h, num_labels=labels_n)
    model = CLIPForImageClassification(cfg)
    perturb(model)
    with torch.no_grad():
        model.vision_model.embeddings.class_embedding.normal_(0, 0.5)
    b = 3
    pixels = torch.randn(b, channels, image, image)
    labels = torch.randint(0, labels_n, (b,))
    batch = {"pixel_values": pixels, "labels": labels}

    def loss_of(m, bt):
        return m(**bt).loss

    def outputs_of(m, bt):
        return {"logits": m(pixel_values=bt["pixel_values"]).logits}

    decay = {n for n, p in model.named_parameters() if p.dim() >= 2 and "embedding" not in n}
    write_case(out_dir, name, model, batch, loss_of, outputs_of, decay)


CASES = {
    "clip_cls": lambda out: clip_cls_case(out, "clip_cls", 17, 5),
    "vit_mim": lambda out: vit_mim_case(out, "vit_mim", 16),
    "bert_pretrained": lambda out: bert_pretrained_case(out, "bert_pretrained", 15),
    "bert_seqcls": lambda out: bert_seqcls_case(out, "bert_seqcls", 11, 3, [0, 4, 1, 0]),
    "bert_regress": lambda out: bert_seqcls_case(out, "bert_regress", 12, 1, [2, 0, 0, 5]),
    "gpt2_seqcls": lambda out: gpt2_seqcls_case(out, "gpt2_seqcls", 13, 4),
    "distill_gpt2": lambda out: distill_case(out, "distill_gpt2", 14, 0.7, 2.5),
    "gpt2_ninner": lambda out: gpt2_case(out, "gpt2_ninner", 40, 1),
    "gpt2_default": lambda out: gpt2_case(out, "gpt2_default", None, 2),
    # Awkward sizes: odd sequence lengths, padding, head_dim 8-32, 1-3 layers.
    "bert_small": lambda out: bert_case(out, "bert_small", 3, 2, 2, 8, 9, [0, 3, 1]),
    "bert_wide": lambda out: bert_case(out, "bert_wide", 4, 1, 1, 32, 7, [2, 0, 0]),
    "vit_grey": lambda out: vit_case(out, "vit_grey", 5, 2, 2, 8, 12, 4, 1, 10),
    "vit_rgb": lambda out: vit_case(out, "vit_rgb", 6, 3, 3, 16, 10, 5, 3, 7),
    "clip_small": lambda out: clip_case(out, "clip_small", 7, 2, 2, 8, 9, 12, 4, 1),
    "clip_rgb": lambda out: clip_case(out, "clip_rgb", 8, 1, 3, 12, 7, 10, 5, 3),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*", default=None)
    a = ap.parse_args()
    torch.set_grad_enabled(True)
    for name, make in CASES.items():
        if a.only is None or name in a.only:
            make(a.out)


if __name__ == "__main__":
    main()
