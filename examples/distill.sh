#!/usr/bin/env bash
# Distillation (README "Transfer"): a GPT student with half the layers and
# width (1 layer × 32 dims, 2 heads) learns from the default GPT teacher
# (`kiln train`'s built-in default: 2 layers × 64 dims, 300 steps on the
# built-in corpus), against the same student trained alone: validation loss
# after the same 300 steps, three seeds. Loss of the distilled student:
# (1 − α)·CE + α·τ²·KL(teacher ‖ student) at α 0.5 and τ 1 or 2 (TAUS); the
# teacher runs forward-only inside each step. About 15 minutes on lavapipe.
#
#   cargo build --release && examples/distill.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-target/release/kiln}
OUT=${OUT:-runs/distill}
SEEDS=${SEEDS:-"1 2 3"}
STEPS=${STEPS:-300}
TAUS=${TAUS:-"1 2"}
mkdir -p "$OUT/runs"
[ -f "$OUT/teacher/results.json" ] || "$KILN" train --out "$OUT/teacher" --overwrite --sample-tokens 0
for s in $SEEDS; do
  for tau in $TAUS; do
    run="$OUT/runs/distilled_tau$tau-$STEPS-$s"
    [ -f "$run/results.json" ] ||
      "$KILN" distill --teacher "$OUT/teacher" --alpha 0.5 --tau "$tau" --steps "$STEPS" \
        --seed "$s" --sample-tokens 0 --out "$run" --overwrite | grep -E "validation loss" || true
  done
  run="$OUT/runs/alone-$STEPS-$s"
  [ -f "$run/results.json" ] ||
    "$KILN" train --layers 1 --heads 2 --embd 32 --steps "$STEPS" --seed "$s" --sample-tokens 0 \
      --out "$run" --overwrite | grep -E "validation loss" || true
done
cargo run --release --quiet --example transfer_table -- "$OUT/runs" final_val_loss \
  "student validation loss (nats/byte)" steps
cargo run --release --quiet --example val_curves -- "$OUT/runs" "$OUT/curves.svg" \
  "student validation loss (nats/byte)" "$OUT/teacher"
