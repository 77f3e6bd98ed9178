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
# The demo grid is 2 mm: a 3-voxel median spans about what the paper's 5 voxels span at 1 mm.
"$BIN/tfuad" calibrate "$OUT/svae" --data "$OUT/data" --method residual --method intensity --median-size 3
"$BIN/tfuad" detect "$OUT"/data/sub-test000/sub-test000_flair.nii.gz --model "$OUT/svae" --out "$OUT/detect" --fpr 0.05
"$BIN/tfuad" evaluate --model "$OUT/svae" --data "$OUT/data" --modality flair --out "$OUT/report"
echo "demo finished: report in $OUT/report (summary.md, examples.png, roc_pr.png), maps in $OUT/detect"
