#!/usr/bin/env bash
# The demo behind `make demo`: the main job of climdl on the embedded sample.
# Stages: sample -> train -> downscale -> evaluate -> maps, then the cloud-segmentation job.
set -euo pipefail
OUT="${1:-demo_out}"
mkdir -p "$OUT"
start=$(date +%s)

echo "== 1/6 embedded sample (CORDEX ML-Bench layout, ALPS Lambert grid) =="
climdl sample "$OUT/sample" --domain ALPS --overwrite

echo
echo "== 2/6 train a small Doury UNet on the sample (CPU minutes), compare with the interpolation baseline =="
# the catalog entry sample-alps finds the sample just written through CLIMDL_CACHE
mkdir -p "$OUT/cache/sample/years1-seed0"
ln -sfn "$(cd "$OUT/sample/ALPS" && pwd)" "$OUT/cache/sample/years1-seed0/ALPS"
# logs, checkpoints and summary.json go to runs/sample-alps/csv/version_N (printed at the end)
CLIMDL_CACHE="$OUT/cache" PYTHONWARNINGS=ignore climdl train --config configs/emulator/sample.yaml \
  --trainer.max_epochs "${DEMO_EPOCHS:-4}" --trainer.enable_progress_bar false

RUN=$(ls -d runs/sample-alps/csv/version_* | sort -V | tail -1)
CKPT=$(ls "$RUN"/checkpoints/best-*.ckpt | sort | tail -1)

echo
echo "== 3/6 downscale the held-out year 1981: perfect (upscaled RCM) and imperfect (GCM) predictors =="
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
echo "== 4/6 evaluate the emulator and the interpolation baseline against the RCM truth (ML-Bench diagnostics) =="
# the target folder also holds the transfer GCM's run of the same years: pick the training GCM's
REPORT=$(climdl evaluate \
  --truth "$OUT/sample/ALPS/ALPS_domain/test/historical/target/"*CNRM-CM5*.nc \
  --pred "$DS/tasmax_historical_perfect_CNRM-CM5.nc" \
  --baseline interpolation="$DS/tasmax_historical_perfect_CNRM-CM5_baseline.nc" \
  --out "$OUT/evaluation" --overwrite)

echo
echo "== 5/6 maps on the native Lambert grid (coastlines shipped with climdl, nothing downloaded) =="
MAPS="$OUT/maps"
mkdir -p "$MAPS"
TRUTHS=("$OUT/sample/ALPS/ALPS_domain/test/historical/target/"*CNRM-CM5*.nc)  # no pipe into head
TRUTH=${TRUTHS[0]}  # (under pipefail a writer outliving head dies of SIGPIPE)
climdl plot "$DS/tasmax_historical_perfect_CNRM-CM5.nc" --var tasmax --mean --vs "$TRUTH" \
  --title "tasmax 1981 mean: emulator vs RCM" --out "$MAPS/tasmax_mean_emulator_vs_rcm.png" --overwrite -q
climdl plot "$DS/tasmax_historical_imperfect_MPI-ESM-LR.nc" --var tasmax --time 1981-07-15 \
  --out "$MAPS/tasmax_1981-07-15_MPI-ESM-LR.png" --overwrite -q

echo
echo "== 6/6 cloud segmentation: train a small UNet on labelled synthetic scenes, segment new ones =="
CLIMDL_CACHE="$OUT/cache" PYTHONWARNINGS=ignore climdl train --config configs/clouds/sample.yaml \
  --trainer.max_epochs "${DEMO_CLOUD_EPOCHS:-10}" --trainer.enable_progress_bar false
CRUN=$(ls -d runs/clouds-sample/csv/version_* | sort -V | tail -1)
CCKPT=$(ls "$CRUN"/checkpoints/best-*.ckpt | sort | tail -1)
CL="$OUT/clouds"
climdl sample-clouds "$CL/scenes" --n-scenes 2 --size 512 512 --seed 2026 --overwrite -q >/dev/null
for s in scene_000 scene_001; do
  climdl segment -c "$CCKPT" -i "$CL/scenes/$s.nc" -o "$CL/${s}_mask.nc" --probabilities --overwrite -q >/dev/null
  climdl plot "$CL/scenes/$s.nc" --mask "$CL/${s}_mask.nc" --out "$CL/${s}.png" --overwrite -q
done

echo
echo "Demo finished in $(( $(date +%s) - start )) s. Outputs:"
echo "  sample data:  $OUT/sample/ALPS/ALPS_domain  (see its README.txt)"
echo "  training run: $RUN (checkpoints, metrics.csv, summary.json)"
echo "  downscaled:   $DS/*.nc (CF-1.10 NetCDF on the 12.5 km ALPS Lambert grid)"
ls -1 "$DS"/*.nc | sed 's/^/                /'
echo "  evaluation:   $REPORT (summary.json/csv/md, fields_*.nc, figures/)"
echo "  maps:         $MAPS/*.png"
echo "  clouds:       $CRUN (checkpoints, summary.json: CNN vs threshold test on held-out scenes)"
echo "                $CL/scene_00?_mask.nc (CF cloud masks), $CL/scene_00?.png (RGB, label, prediction)"
