#!/usr/bin/env bash
# The demo behind `make demo`: the main job of climdl on the embedded sample.
# Later stages (train, downscale, evaluate) are added here as they land.
set -euo pipefail
OUT="${1:-demo_out}"
mkdir -p "$OUT"
start=$(date +%s)

echo "== 1/1 embedded sample (CORDEX ML-Bench layout, ALPS Lambert grid) =="
climdl sample "$OUT/sample" --domain ALPS --overwrite
climdl catalog show sample-alps | head -3

echo
echo "Demo finished in $(( $(date +%s) - start )) s. Outputs:"
echo "  sample data:  $OUT/sample/ALPS/ALPS_domain  (see its README.txt)"
