#!/usr/bin/env bash
# Kiln on a real GPU, from a prebuilt release binary (nothing is compiled here).
#
#   scripts/gpu-check.sh OUT_DIR [KILN_BIN]
#
# Needs: bash, coreutils `timeout`, a Vulkan (or Metal/DX12) driver, the `kiln`
# binary (KILN_BIN, else `kiln` on PATH, else target/release/kiln next to this
# script). Optional: python3 with torch and CUDA, for the PyTorch comparison.
#
# Writes into OUT_DIR, one JSON per item (plus NAME.log with its output):
#   devices.json                 kiln devices --json
#   kernels-FAMILY.json          kiln bench FAMILY: the kernel sweep at GPU sizes
#                                (matmul up to 4096³ and GPT-2 124M shapes,
#                                attention B×H×1024×64 for several B and H, …)
#   train-gpt2-124m.json         kiln bench train --preset gpt2-124m (B 8, T 1024)
#   torch-gpt2-124m.json         the same step in PyTorch (FP32, TF32 off, AdamW)
#   matmul-variants.json         kiln bench matmul --variant all (to tune default_variant)
#   train-gpt2-124m-profile.json the step again with --profile (per-kernel times)
#   summary.txt                  status and seconds of every item, and the
#                                Kiln / PyTorch ratio
# Each item runs under `timeout`; a failure or timeout is logged and the
# script goes on. The items run most important first and share one time
# budget (KILN_CHECK_BUDGET_S, default 450 s), so the whole check stays
# under 8 minutes; an item that no longer fits is skipped.
#
# KILN_CHECK_QUICK=1 shrinks everything (tiny shapes, the `tiny` preset,
# PyTorch on the CPU when there is no CUDA) to test this script on a machine
# without a GPU, e.g. on lavapipe:
#   KILN_CHECK_QUICK=1 scripts/gpu-check.sh /tmp/check target/release/kiln
# KILN_ADAPTER / KILN_BACKEND pick the adapter as usual.
set -uo pipefail

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
OUT=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -ge 2 ]; then
  KILN=$2
elif command -v kiln >/dev/null 2>&1; then
  KILN=$(command -v kiln)
else
  KILN=$HERE/../target/release/kiln
fi
if [ ! -x "$KILN" ]; then
  echo "gpu-check: no kiln binary at $KILN (pass it as the second argument)" >&2
  exit 2
fi
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

QUICK=${KILN_CHECK_QUICK:-0}
BUDGET=${KILN_CHECK_BUDGET_S:-450}
START=$(date +%s)
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"

say() { echo "gpu-check: $*" | tee -a "$SUMMARY"; }

# run_item NAME CAP_SECONDS COMMAND...: runs COMMAND under `timeout`, at most
# CAP seconds and never past the shared budget; output to NAME.log.
run_item() {
  local name=$1 cap=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  if [ "$left" -lt 20 ]; then
    say "$name: SKIPPED (${left}s of the ${BUDGET}s budget left)"
    return 1
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  local t0 rc
  t0=$(date +%s)
  echo "gpu-check: $name (timeout ${cap}s): $*" >&2
  timeout --kill-after=10 "$cap" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  local dt=$(($(date +%s) - t0))
  if [ $rc -eq 0 ]; then
    say "$name: ok (${dt}s)"
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    say "$name: TIMEOUT after ${dt}s (limit ${cap}s); see $name.log"
  else
    say "$name: FAILED (exit $rc, ${dt}s); last lines of $name.log:"
    tail -n 5 "$OUT/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"
  fi
  return $rc
}

say "kiln: $KILN ($("$KILN" --version 2>/dev/null))"
say "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); quick: $QUICK; budget: ${BUDGET}s"
say "host: $(uname -srm); $(nproc 2>/dev/null) CPUs"
if command -v nvidia-smi >/dev/null 2>&1; then
  timeout 20 nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
  say "nvidia-smi: $(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)"
fi

# 1. What wgpu sees.
run_item devices 60 sh -c "\"$KILN\" devices --json >\"$OUT/devices.json\""

if [ "$QUICK" = 1 ]; then
  PRESET=(--preset tiny --batch 2 --seq 16 --steps 2 --warmup-steps 1)
  TORCH=(--preset tiny --batch 2 --seq 16 --steps 2 --warmup 1)
  KITERS=(--iters 1 --warmup 0)
else
  PRESET=(--preset gpt2-124m --batch 8 --seq 1024 --steps 20 --warmup-steps 3)
  TORCH=(--preset gpt2-124m --batch 8 --seq 1024 --steps 20 --warmup 3)
  KITERS=()
fi

# 2. The GPT-2 124M training step (the headline number).
run_item train-gpt2-124m 150 "$KILN" bench train "${PRESET[@]}" \
  --json "$OUT/train-gpt2-124m.json"

# 3. The same step in PyTorch, where CUDA is available (or on the CPU in quick mode).
TORCH_OK=0
if command -v python3 >/dev/null 2>&1 &&
  python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  TORCH_DEV=cuda
elif [ "$QUICK" = 1 ] && python3 -c 'import torch' 2>/dev/null; then
  TORCH_DEV=cpu
else
  TORCH_DEV=
  say "torch-gpt2-124m: not run (no python3 with torch and CUDA)"
fi
if [ -n "$TORCH_DEV" ]; then
  run_item torch-gpt2-124m 150 python3 "$HERE/torch_gpt2_step.py" "${TORCH[@]}" \
    --device "$TORCH_DEV" --json "$OUT/torch-gpt2-124m.json" && TORCH_OK=1
fi

# 4. The kernel sweep, one family per process and file (GPU sizes unless quick).
for fam in matmul attention layernorm softmax gelu crossentropy embedding adamw reduce; do
  sizes=()
  if [ "$QUICK" = 1 ]; then
    case $fam in
      matmul) sizes=(--sizes 64,32x48x40) ;;
      attention) sizes=(--sizes 1x2x32x16) ;;
      embedding) sizes=(--sizes 2x16x64x32) ;;
      gelu | adamw) sizes=(--sizes 4096) ;;
      *) sizes=(--sizes 64x96) ;;
    esac
  fi
  run_item "kernels-$fam" 60 "$KILN" bench "$fam" ${sizes[@]+"${sizes[@]}"} ${KITERS[@]+"${KITERS[@]}"} \
    --json "$OUT/kernels-$fam.json"
done

# 5. Every matmul variant, to check and tune default_variant on this GPU.
if [ "$QUICK" = 1 ]; then
  MM=(--sizes 32,8x48x40 --variant "naive,direct reg 4x4,tiled 32x32x8 reg 4x4 vec4" --iters 1 --warmup 0)
else
  MM=(--sizes 128,512,1024,2048,4096,64x768x768,8192x2304x768,8192x768x3072,8192x50257x768
    --variant all --iters 10 --warmup 2 --budget-s 0.5)
fi
run_item matmul-variants 120 "$KILN" bench matmul "${MM[@]}" --json "$OUT/matmul-variants.json"

# 6. Where the training step's time goes.
if [ "$QUICK" = 1 ]; then
  PROF=(--preset tiny --batch 2 --seq 16 --steps 1 --warmup-steps 0)
else
  PROF=(--preset gpt2-124m --batch 8 --seq 1024 --steps 2 --warmup-steps 1)
fi
run_item train-gpt2-124m-profile 120 "$KILN" bench train "${PROF[@]}" --profile \
  --json "$OUT/train-gpt2-124m-profile.json"

# The Kiln / PyTorch ratio (python3 is there whenever torch ran).
if [ "$TORCH_OK" = 1 ] && [ -s "$OUT/train-gpt2-124m.json" ]; then
  python3 - "$OUT/train-gpt2-124m.json" "$OUT/torch-gpt2-124m.json" <<'EOF' | tee -a "$SUMMARY"
import json, sys
k = json.load(open(sys.argv[1]))["train"]
t = json.load(open(sys.argv[2]))
kb, kt, tb, tt = k["batch"], k["seq"], t["batch"], t["seq"]
print(f"kiln:    {k['ms_per_step']:.2f} ms/step, {k['tokens_per_s']:.0f} tokens/s "
      f"({k['preset']['name']}, B {kb}, T {kt}, timer {k['timer']})")
print(f"pytorch: {t['ms_per_step']:.2f} ms/step, {t['tokens_per_s']:.0f} tokens/s "
      f"({t['preset']}, B {tb}, T {tt}, {t['device']}, {t['attention']} attention, TF32 off)")
if (kb, kt) != (tb, tt):
    print("WARNING: different batch shapes; the ratio means little")
print(f"ratio kiln/pytorch (time per step): {k['ms_per_step'] / t['ms_per_step']:.2f}x")
EOF
fi
say "total: $(($(date +%s) - START))s; results in $OUT"
if grep -q -E ': (FAILED|TIMEOUT|SKIPPED)' "$SUMMARY"; then
  exit 1
fi
exit 0
