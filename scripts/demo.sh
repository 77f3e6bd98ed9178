#!/usr/bin/env bash
# The main job end to end on the built-in demo dataset (called by `make demo`).
# Usage: scripts/demo.sh [OUT_DIR] [EPOCHS]
set -euo pipefail
OUT=${1:-demo_run}
EPOCHS=${2:-8}
BIN=${VENV:-.venv}/bin
mkdir -p "$OUT"
"$BIN/tfuad" data demo --out "$OUT/data" --figure "$OUT/demo_overview.png"
"$BIN/tfuad" train svae --data "$OUT/data" --modality flair --out "$OUT/svae" --epochs "$EPOCHS" --overwrite
if "$BIN/tfuad" calibrate --help >/dev/null 2>&1; then
  "$BIN/tfuad" calibrate "$OUT/svae" --data "$OUT/data"
  "$BIN/tfuad" detect "$OUT"/data/sub-test000/sub-test000_flair.nii.gz --model "$OUT/svae" --out "$OUT/detect" --fpr 0.05
  "$BIN/tfuad" evaluate --model "$OUT/svae" --data "$OUT/data" --modality flair --out "$OUT/report"
  cat "$OUT/report/summary.md"
fi
echo "demo finished: $OUT"
