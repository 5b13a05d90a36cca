#!/usr/bin/env python3
"""Checks that tokenizers Kiln writes load in Hugging Face transformers.

Not run by CI. Needs `pip install transformers` (tokenizers comes with it;
PyTorch is not needed) and cargo.

Runs the ignored Rust test `write_hf_tokenizer_check`, which trains a
WordPiece (BERT), a GPT-2 and a CLIP byte-level BPE tokenizer on Kiln's own
generated text, converts the byte tokenizer, saves each (tokenizer.json,
tokenizer_config.json, special_tokens_map.json) and writes sample texts with
Kiln's ids. Then, for each, `AutoTokenizer.from_pretrained(dir)` must give
the same ids without and with special tokens, the same special-token roles
([MASK] for BERT, <|endoftext|> for GPT-2 and CLIP) and the class named in
tokenizer_config.json. Prints one line per tokenizer; exits 1 on a mismatch.

Usage: python3 scripts/check_hf_tokenizers.py   (from the repository root)
"""

import json
import os
import subprocess
import sys
import tempfile

import transformers
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    out = tempfile.mkdtemp(prefix="kiln-hf-tok-")
    env = dict(os.environ, KILN_HF_TOKENIZER_CHECK=out)
    subprocess.run(
        ["cargo", "test", "--lib", "write_hf_tokenizer_check", "--", "--ignored"],
        cwd=ROOT, env=env, check=True,
    )
    cases = json.load(open(os.path.join(out, "cases.json")))
    bad = 0
    for name in sorted({c["tokenizer"] for c in cases}):
        tok = AutoTokenizer.from_pretrained(os.path.join(out, name))
        n = 0
        for c in (c for c in cases if c["tokenizer"] == name):
            ids = tok(c["text"], add_special_tokens=False)["input_ids"]
            with_sp = tok(c["text"])["input_ids"]
            for what, got, want in [("ids", ids, c["ids"]), ("with specials", with_sp, c["ids_with_specials"])]:
                if got != want:
                    bad += 1
                    print(f"MISMATCH {name} {what} {c['text']!r}:\n  hf   {got}\n  kiln {want}")
            n += 1
        roles = {k: getattr(tok, k) for k in ["cls_token", "sep_token", "mask_token", "pad_token", "eos_token", "bos_token"]
                 if getattr(tok, k, None) is not None}
        print(f"{name}: {type(tok).__name__}, vocab {len(tok)}, {n} texts agree, specials {roles}")
        if name == "wordpiece" and tok.mask_token != "[MASK]":
            bad += 1
            print("MISMATCH wordpiece has no [MASK] role")
    print(f"transformers {transformers.__version__}: {'all agree' if bad == 0 else f'{bad} mismatches'}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
