#!/usr/bin/env bash
# What pretraining buys a text classifier (README "Transfer"): tell which
# corpus (Moby-Dick, Shakespeare, State of the Union) a 48-word passage
# comes from, with 50 labelled passages per class. Passages come from the
# last 10% of each corpus, which no model pretrains on; the test set is a
# fixed 20% of them. For GPT-2 and BERT, three rows with the same
# fine-tuning budget:
#   pretrained   pretrained on the first 90% of the three corpora (causal LM
#                for GPT-2, masked LM for BERT), then fine-tuned;
#   scratch      the same architecture and tokenizer, random weights;
#   other-domain pretrained as long on the built-in synthetic corpus (made-up
#                words from a Markov chain: the negative-transfer control;
#                GPT-2 only by default, NEG_MODELS="gpt2 bert" for both).
# Three seeds per cell. Sized for lavapipe (CPU, ~1 h); on a GPU raise
# PRE_STEPS, --embd and --layers (pretraining is what gets better).
#
#   cargo build --release && examples/text_transfer.sh
#
# Writes runs under $OUT (default runs/text-transfer), then $OUT/table-*.md.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-target/release/kiln}
OUT=${OUT:-runs/text-transfer}
TEXT=${TEXT:-../shared/data/text}
SEEDS=${SEEDS:-"1 2 3"}
PRE_STEPS=${PRE_STEPS:-800}
FT_STEPS=${FT_STEPS:-200}
PER_CLASS=${PER_CLASS:-"50"}
MODELS=${MODELS:-"gpt2 bert"}
NEG_MODELS=${NEG_MODELS:-"gpt2"}
mkdir -p "$OUT"

# 0. The passages and the pretraining text (from ../shared, outside the repository).
if [ ! -f "$OUT/data/pretrain.txt" ]; then
  cargo run --release --quiet --example corpus_passages -- "$TEXT" "$OUT/data" 300 48
fi

# 1. Pretraining (kept when already there): in-domain and other-domain.
for m in $MODELS; do
  case $m in
    gpt2) tok=(--tokenizer bpe --bpe-vocab 1024) ;;
    bert) tok=(--tokenizer wordpiece --bpe-vocab 2048) ;;
  esac
  common=(--model "$m" "${tok[@]}" --layers 2 --heads 4 --embd 128 --batch 16 --seq 64
          --steps "$PRE_STEPS" --lr 1e-3 --min-lr 1e-4 --warmup 50 --eval-every 200
          --checkpoint-every 0 --sample-tokens 0)
  [ -f "$OUT/pre-$m/results.json" ] ||
    "$KILN" train "${common[@]}" --data "$OUT/data/pretrain.txt" --out "$OUT/pre-$m" --overwrite
  if [[ " $NEG_MODELS " == *" $m "* ]] && [ ! -f "$OUT/other-$m/results.json" ]; then
    "$KILN" train "${common[@]}" --out "$OUT/other-$m" --overwrite
  fi
done

# 2. Fine-tuning: the same budget for every row.
mkdir -p "$OUT/ft"
for m in $MODELS; do
  for k in $PER_CLASS; do
    for s in $SEEDS; do
      for row in pretrained scratch other-domain; do
        [ "$row" = other-domain ] && [[ " $NEG_MODELS " != *" $m "* ]] && continue
        run="$OUT/ft/${m}_$row-$k-$s"
        [ -f "$run/results.json" ] && continue
        case $row in
          pretrained) from=(--from "$OUT/pre-$m") ;;
          scratch) from=(--from "$OUT/pre-$m" --scratch) ;;
          other-domain) from=(--from "$OUT/other-$m") ;;
        esac
        "$KILN" finetune "${from[@]}" --data "$OUT/data/passages" --per-class "$k" --seq 64 \
          --batch 16 --steps "$FT_STEPS" --lr 5e-4 --min-lr 5e-5 --warmup 20 --eval-every 25 \
          --keep-best --seed "$s" --out "$run" --overwrite | grep -E "test accuracy|best" || true
      done
    done
  done
done

# 3. Mean ± std over seeds.
cargo run --release --quiet --example transfer_table -- "$OUT/ft" test_accuracy "test accuracy" per-class
cargo run --release --quiet --example val_curves -- "$OUT/ft" "$OUT/val-accuracy.svg" \
  "validation accuracy" - val_accuracy
