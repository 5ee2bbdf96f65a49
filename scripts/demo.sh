#!/usr/bin/env bash
# The demo behind `make demo`: the main job of climdl on the embedded sample.
# Later stages (train, downscale, evaluate) are added here as they land.
set -euo pipefail
OUT="${1:-demo_out}"
mkdir -p "$OUT"
start=$(date +%s)

echo "== 1/2 embedded sample (CORDEX ML-Bench layout, ALPS Lambert grid) =="
climdl sample "$OUT/sample" --domain ALPS --overwrite

echo
echo "== 2/2 train a small Doury UNet on the sample (CPU minutes), compare with the interpolation baseline =="
# the catalog entry sample-alps finds the sample just written through CLIMDL_CACHE
mkdir -p "$OUT/cache/sample/years1-seed0"
ln -sfn "$(cd "$OUT/sample/ALPS" && pwd)" "$OUT/cache/sample/years1-seed0/ALPS"
# logs, checkpoints and summary.json go to runs/sample-alps/csv/version_N (printed at the end)
CLIMDL_CACHE="$OUT/cache" PYTHONWARNINGS=ignore climdl train --config configs/emulator/sample.yaml \
  --trainer.max_epochs "${DEMO_EPOCHS:-4}" --trainer.enable_progress_bar false

echo
echo "Demo finished in $(( $(date +%s) - start )) s. Outputs:"
echo "  sample data:  $OUT/sample/ALPS/ALPS_domain  (see its README.txt)"
echo "  training run: $(ls -d runs/sample-alps/csv/version_* | sort -V | tail -1) (checkpoints, metrics.csv, summary.json)"
