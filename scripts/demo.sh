#!/usr/bin/env bash
# The main job, end to end and offline: convert an authors'-format checkpoint, inspect the zoo.
set -euo pipefail
OUT=${OUT:-demo-output}
rm -rf "$OUT"
mkdir -p "$OUT"
gfnet models
gfnet convert tests/data/tiny-gfnet.pth "$OUT/tiny-gfnet"
cat "$OUT/tiny-gfnet/config.json"
