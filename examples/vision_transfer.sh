#!/usr/bin/env bash
# What pretraining buys an image classifier (README "Transfer"), on
# Fashion-MNIST with few labels. The same ViT (2 layers × 64 dims, 7×7
# patches) and the same fine-tuning budget (FT_STEPS = 150 steps of 32 images)
# for every row; test accuracy on the 10,000 test images; three seeds.
#   scratch        random weights (the ViT of the masked-patch checkpoint);
#   masked-patch   pretrained by masked image modelling on all 60,000
#                  training images without labels (half the patches masked,
#                  their pixels predicted, MSE), then fine-tuned;
#   clip_probe     CLIP's image tower pretrained on image–caption pairs,
#                  frozen, a linear classifier on its mean patch state;
#   clip_finetune  the same tower fine-tuned;
# and, in a second table, transfer to unseen classes: a ViT pretrained with
# labels on classes 0–4, fine-tuned on classes 5–9 (against scratch).
# Sized for lavapipe (CPU, about an hour); on a GPU raise PRE_STEPS and use
# the GPU defaults (6 layers × 192, 4×4 patches).
#
#   cargo build --release && examples/vision_transfer.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-target/release/kiln}
OUT=${OUT:-runs/vision-transfer}
SEEDS=${SEEDS:-"1 2 3"}
PRE_STEPS=${PRE_STEPS:-800}
FT_STEPS=${FT_STEPS:-150}
mkdir -p "$OUT/ft" "$OUT/ft5"
pre=(--steps "$PRE_STEPS" --eval-every "$PRE_STEPS" --eval-batches 8 --checkpoint-every 0)

# 1. Pretraining (kept when already there).
[ -f "$OUT/pre-mim/results.json" ] ||
  "$KILN" train --model vit --objective masked-patch "${pre[@]}" --out "$OUT/pre-mim" --overwrite
[ -f "$OUT/pre-sup5/results.json" ] ||
  "$KILN" train --model vit --classes 0,1,2,3,4 "${pre[@]}" --out "$OUT/pre-sup5" --overwrite
[ -f "$OUT/pre-clip/results.json" ] ||
  "$KILN" train --model clip "${pre[@]}" --out "$OUT/pre-clip" --overwrite

ft() {
  local out=$1
  shift
  [ -f "$out/results.json" ] && return 0
  "$KILN" finetune "$@" --steps "$FT_STEPS" --batch 32 --lr "${LR:-1e-3}" --min-lr "${MIN_LR:-1e-4}" --warmup 20 \
    --eval-every 0 --eval-batches 8 --out "$out" --overwrite | grep -E "^test accuracy" || true
}

# 2. Fine-tuning, the 1% column first (every row), then transfer to
#    unseen classes, then 10% and 100% for scratch and masked-patch.
for s in $SEEDS; do
  ft "$OUT/ft/scratch-0.01-$s" --from "$OUT/pre-mim" --scratch --label-fraction 0.01 --seed "$s"
  ft "$OUT/ft/masked-patch-0.01-$s" --from "$OUT/pre-mim" --label-fraction 0.01 --seed "$s"
  ft "$OUT/ft/clip_probe-0.01-$s" --from "$OUT/pre-clip" --linear-probe --label-fraction 0.01 --seed "$s"
  ft "$OUT/ft/clip_finetune-0.01-$s" --from "$OUT/pre-clip" --label-fraction 0.01 --seed "$s"
  # A probe trains one linear layer: it takes a larger rate (the same steps).
  LR=1e-2 MIN_LR=1e-3 ft "$OUT/ft/clip_probe_lr1e-2-0.01-$s" --from "$OUT/pre-clip" \
    --linear-probe --label-fraction 0.01 --seed "$s"
done
for s in $SEEDS; do
  for row in scratch supervised_5_classes; do
    extra=()
    [ "$row" = scratch ] && extra=(--scratch)
    ft "$OUT/ft5/$row-0.01-$s" --from "$OUT/pre-sup5" "${extra[@]}" --replace-head \
      --classes 5,6,7,8,9 --label-fraction 0.01 --seed "$s"
  done
done
for f in 0.1 1; do
  for s in $SEEDS; do
    ft "$OUT/ft/scratch-$f-$s" --from "$OUT/pre-mim" --scratch --label-fraction "$f" --seed "$s"
    ft "$OUT/ft/masked-patch-$f-$s" --from "$OUT/pre-mim" --label-fraction "$f" --seed "$s"
  done
done

# 3. Mean ± std over seeds.
cargo run --release --quiet --example transfer_table -- "$OUT/ft" test_accuracy "test accuracy (10 classes)"
cargo run --release --quiet --example transfer_table -- "$OUT/ft5" test_accuracy "test accuracy (classes 5–9)"
