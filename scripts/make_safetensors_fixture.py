#!/usr/bin/env python3
"""Writes tests/fixtures/safetensors/torch_mixed.safetensors with PyTorch's
safetensors writer, for the Rust test `io::checkpoint::tests::reads_python_fixture`.

Random numbers only (fixed seed). The expected values are stored in the file's
own metadata as JSON, each float as the exact f32 it converts to, so the Rust
side can compare bit for bit. Run from the repo root:

    python3 scripts/make_safetensors_fixture.py
"""
import json
import os

import torch
from safetensors.torch import save_file

OUT = "tests/fixtures/safetensors/torch_mixed.safetensors"

g = torch.Generator().manual_seed(1234)
tensors = {
    "f32": torch.randn(2, 3, generator=g, dtype=torch.float32),
    "f16": torch.randn(3, 2, generator=g).to(torch.float16),
    "bf16": torch.randn(4, generator=g).to(torch.bfloat16),
    "i32": torch.randint(-1000, 1000, (2, 2), generator=g, dtype=torch.int32),
    # within i32 range, including both ends: Kiln converts I64 to i32
    "i64": torch.tensor([-(2**31), -7, 0, 2**31 - 1], dtype=torch.int64),
}

metadata = {"writer": "scripts/make_safetensors_fixture.py"}
for name, t in tensors.items():
    vals = t.to(torch.float32) if t.is_floating_point() else t
    metadata[name] = json.dumps(
        {"shape": list(t.shape), "values": vals.flatten().tolist()}
    )

os.makedirs(os.path.dirname(OUT), exist_ok=True)
save_file(tensors, OUT, metadata=metadata)
print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")
