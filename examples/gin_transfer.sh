#!/usr/bin/env bash
# What pretraining buys a graph network on molecules (README "Transfer"):
# TPSA regression on a fixed held-out 20% of the NCI set, fine-tuned with
# 1%, 10% and 100% of the remaining labels, GIN from scratch against GIN
# pretrained by attribute masking on all 15,000 molecules (WEHI + NCI,
# labels unused). Three seeds per cell; the same fine-tuning budget for both
# rows of a column. Sized for lavapipe (CPU); on a GPU raise PRE_STEPS and
# the fine-tuning steps, and use the GPU default model (5 layers × 300).
#
#   cargo build --release && examples/gin_transfer.sh
#
# Writes runs under $OUT (default runs/gin-transfer), then the table
# ($OUT/table.md) and chart ($OUT/transfer.svg).
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-target/release/kiln}
OUT=${OUT:-runs/gin-transfer}
DATA=${DATA:-../shared/data/molecules}
SEEDS=${SEEDS:-"1 2 3"}
PRE_STEPS=${PRE_STEPS:-1000}
# Fine-tuning steps per label fraction (batches of 16 molecules).
declare -A STEPS=([0.01]=150 [0.1]=250 [1]=500)
FRACTIONS=${FRACTIONS:-"0.01 0.1 1"}
mkdir -p "$OUT"

# 1. Self-supervised pretraining (kept when already there).
if [ ! -f "$OUT/pretrain/results.json" ]; then
  "$KILN" train --model gin --data "$DATA" --steps "$PRE_STEPS" --out "$OUT/pretrain" --overwrite
fi

# 2. Fine-tuning, from scratch and from the pretrained encoder.
for f in $FRACTIONS; do
  for s in $SEEDS; do
    for row in scratch pretrained; do
      run="$OUT/$row-$f-$s"
      [ -f "$run/results.json" ] && continue
      init=()
      [ "$row" = pretrained ] && init=(--init-from "$OUT/pretrain")
      "$KILN" train --model gin --objective regression --data "$DATA/nci_first5k_tpsa.csv" \
        --label-fraction "$f" --seed "$s" --steps "${STEPS[$f]}" --batch 16 --seq 32 \
        --warmup 20 --eval-every 0 --checkpoint-every 0 "${init[@]}" --out "$run" --overwrite \
        | grep -E "MAE|initialised" || true
    done
  done
done

# 3. Mean ± std over seeds, as a table and a chart.
cargo run --release --quiet --example transfer_table -- "$OUT" test_mae "TPSA test MAE (Å²)"
