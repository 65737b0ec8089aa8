#!/usr/bin/env bash
# The main job on the bundled sample photos: train a width-reduced decoder for
# EfficientNet-Lite0's stage2 features for a few minutes on the CPU,
# reconstruct the held-out photos, write the PNG grid and print the
# reconstruction error beside the mean-image baselines.
# Running it again resumes (or reuses) the run in runs/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
WORK_DIR=${WORK_DIR:-runs/demo}
.venv/bin/python -m launch.train --preset=demo --work_dir="$WORK_DIR" "$@"
.venv/bin/python -m launch.reconstruct --model="$WORK_DIR" --data=samples --split=test \
  --out="$WORK_DIR/reconstructions.png" --metrics_out="$WORK_DIR/metrics.json"
echo
echo "Reconstructions of the held-out photos: $WORK_DIR/reconstructions.png"
