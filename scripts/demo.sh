#!/usr/bin/env bash
# The main job, end to end and offline, on real data a package ships: scikit-learn's 1,797
# handwritten digits exported as an image folder, a GFNet trained on them from scratch (the
# best epoch chosen on 10 % of train held out for validation, never on test), evaluated on
# the test split it never saw, used to predict a few scans, and a dry-run push.
# About 2-4 minutes on 2 CPU cores; reaches >= 95 % test top-1 (docs/training.md).
set -euo pipefail
OUT=${OUT:-demo-output}
rm -rf "$OUT"
mkdir -p "$OUT"

python scripts/export_digits.py "$OUT/digits"            # train/ (1,437) and test/ (360)

gfnet finetune --model gfnet-ti --from-scratch --patch-size 4 --embed-dim 128 --depth 2 \
  --img-size 16 --crop-pct 1 --no-augment --epochs 10 --lr 2e-3 --batch-size 64 \
  --validation-split-percentage 10 --dataset "$OUT/digits" --output-dir "$OUT/digits-gfnet"

gfnet evaluate --model "$OUT/digits-gfnet" --dataset "$OUT/digits" --split test

gfnet predict $(for c in 1 4 7 9; do ls "$OUT/digits/test/$c/"*.png | head -n 1; done) --model "$OUT/digits-gfnet" --top-k 3

gfnet push "$OUT/digits-gfnet" your-name/gfnet-digits --dry-run
