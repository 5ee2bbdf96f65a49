#!/usr/bin/env bash
# The demo behind `make demo`: the main job of climdl on the embedded sample.
# Later stages (train, downscale, evaluate) are added here as they land.
set -euo pipefail
OUT="${1:-demo_out}"
mkdir -p "$OUT"
start=$(date +%s)

echo "== 1/4 embedded sample (CORDEX ML-Bench layout, ALPS Lambert grid) =="
climdl sample "$OUT/sample" --domain ALPS --overwrite

echo
echo "== 2/4 train a small Doury UNet on the sample (CPU minutes), compare with the interpolation baseline =="
# the catalog entry sample-alps finds the sample just written through CLIMDL_CACHE
mkdir -p "$OUT/cache/sample/years1-seed0"
ln -sfn "$(cd "$OUT/sample/ALPS" && pwd)" "$OUT/cache/sample/years1-seed0/ALPS"
# logs, checkpoints and summary.json go to runs/sample-alps/csv/version_N (printed at the end)
CLIMDL_CACHE="$OUT/cache" PYTHONWARNINGS=ignore climdl train --config configs/emulator/sample.yaml \
  --trainer.max_epochs "${DEMO_EPOCHS:-4}" --trainer.enable_progress_bar false

RUN=$(ls -d runs/sample-alps/csv/version_* | sort -V | tail -1)
CKPT=$(ls "$RUN"/checkpoints/best-*.ckpt | sort | tail -1)

echo
echo "== 3/4 downscale the held-out year 1981: perfect (upscaled RCM) and imperfect (GCM) predictors =="
DS="$OUT/downscaled"
run_downscale() {  # name, extra arguments
  local name=$1; shift
  CLIMDL_CACHE="$OUT/cache" PYTHONWARNINGS=ignore climdl downscale -c "$CKPT" --catalog sample-alps \
    --period historical -o "$DS/$name.nc" --overwrite "$@"
}
run_downscale tasmax_historical_perfect_CNRM-CM5 --kind perfect
run_downscale tasmax_historical_imperfect_CNRM-CM5 --kind imperfect
run_downscale tasmax_historical_imperfect_MPI-ESM-LR --kind imperfect --gcm MPI-ESM-LR  # 360_day calendar
# the checkpoint's fitted interpolation + lapse-rate baseline on the same days, for comparison
run_downscale tasmax_historical_perfect_CNRM-CM5_baseline --kind perfect --baseline

echo
echo "== 4/4 evaluate the emulator and the interpolation baseline against the RCM truth (ML-Bench diagnostics) =="
# the target folder also holds the transfer GCM's run of the same years: pick the training GCM's
REPORT=$(climdl evaluate \
  --truth "$OUT/sample/ALPS/ALPS_domain/test/historical/target/"*CNRM-CM5*.nc \
  --pred "$DS/tasmax_historical_perfect_CNRM-CM5.nc" \
  --baseline interpolation="$DS/tasmax_historical_perfect_CNRM-CM5_baseline.nc" \
  --out "$OUT/evaluation" --overwrite)

echo
echo "Demo finished in $(( $(date +%s) - start )) s. Outputs:"
echo "  sample data:  $OUT/sample/ALPS/ALPS_domain  (see its README.txt)"
echo "  training run: $RUN (checkpoints, metrics.csv, summary.json)"
echo "  downscaled:   $DS/*.nc (CF-1.10 NetCDF on the 12.5 km ALPS Lambert grid)"
ls -1 "$DS"/*.nc | sed 's/^/                /'
echo "  evaluation:   $REPORT (summary.json/csv/md, fields_*.nc, figures/)"
