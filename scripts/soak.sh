#!/usr/bin/env bash
# Soak benchmark (issue 10; not run by CI): `kiln train` for many steps,
# with host RSS and Kiln's GPU buffer pool sampled every 100 steps (the
# `host_rss_mb` and `gpu_pool_mb` fields metrics.jsonl rows carry), then a
# table of both. Both should be flat after warm-up.
#
#   scripts/soak.sh [KILN_BIN] [OUT_DIR] [STEPS]
#
# Defaults: target/release/kiln, runs/soak, 5000 steps of the CPU default
# model (2 layers, 64 dims, batch 8 × 64) on Moby-Dick from ../shared/data
# (the built-in corpus where that is absent), a checkpoint every 1,000 steps.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
KILN=${1:-target/release/kiln}
OUT=${2:-runs/soak}
STEPS=${3:-5000}
DATA=()
for d in ../shared/data/text/moby.txt ../../shared/data/text/moby.txt; do
  if [ -f "$d" ]; then DATA=(--data "$d"); break; fi
done
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
/usr/bin/time -v "$KILN" train "${DATA[@]}" --out "$OUT" --overwrite --steps "$STEPS" \
  --layers 2 --heads 4 --embd 64 --seq 64 --batch 8 \
  --log-every 100 --eval-every 500 --checkpoint-every 1000 --sample-tokens 100 \
  2> "$OUT.time.txt" | tail -n 8
grep -E "Maximum resident|Elapsed" "$OUT.time.txt" || true
python3 - "$OUT/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"host_rss_mb"' in l]
print("| step | host RSS (MB) | GPU pool, live (MB) | train loss | tokens/s |")
print("|---:|---:|---:|---:|---:|")
for r in rows:
    if r["step"] % 500 == 0 or r["step"] == 100:
        print(f'| {r["step"]} | {r["host_rss_mb"]:.1f} | {r["gpu_pool_mb"]:.2f} | {r["train_loss"]:.3f} | {r["tokens_per_s"]:.0f} |')
after = [r for r in rows if r["step"] >= 500]
if after:
    rss = [r["host_rss_mb"] for r in after]
    gpu = [r["gpu_pool_mb"] for r in after]
    print(f"\nafter step 500: host RSS {min(rss):.1f}–{max(rss):.1f} MB, GPU pool {min(gpu):.2f}–{max(gpu):.2f} MB")
PY
