#!/usr/bin/env bash
# One prepared device check (run on a lent GPU machine, well under 10 minutes):
# the GPU tests, CUDA training with bf16 through the real CLI, training/loader throughput with
# FLOPs and MFU for the sample and full-size UNet (bench/train_throughput.py), downscale end to
# end vs the bare forward (bench/downscale_throughput.py), DDP/FSDP2/pipeline presets with
# NCCL, GPU preprocessing (climdl prepare --device cuda), tiled cloud segmentation, climdl
# sensitivity CUDA vs CPU, a generative stage 2 trained and sampled on CUDA, domain parallelism's
# large grid on one GPU (bench/domain_parallel.py, the domain preset with NCCL), and full-size
# UNet throughput.
# Usage on the device: bash bench/gpu_check.sh   (expects .venv or torch+deps importable)
set -uo pipefail
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
if [ -d .whl ]; then $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD; fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
WORK=${WORK:-/tmp/gpu_check}
mkdir -p "$WORK"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

echo "== GPU tests (pytest -m gpu) =="
$PY -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -5

echo "== CUDA training, bf16-mixed, through climdl train =="
export CLIMDL_CACHE="$WORK/cache"
start=$(date +%s)
$PY -m climdl.cli train --config configs/emulator/sample.yaml --trainer.accelerator gpu --trainer.precision bf16-mixed \
  --trainer.max_epochs 8 --trainer.default_root_dir "$WORK/run" --trainer.logger false --quiet \
  --model.base_filters 32 --model.max_filters 512 --model.extra_filters 64 2>&1 | tail -3
echo "train wall: $(( $(date +%s) - start )) s (sample generation included)"
cat "$WORK"/run/summary.json 2>/dev/null || find "$WORK/run" -name summary.json -exec cat {} \;

echo "== climdl sensitivity on CUDA vs CPU (the model just trained; same 8 days, same seed) =="
CKPT=$(find "$WORK/run" -name "*.ckpt" | sort | tail -1)
for D in cuda cpu; do
  start=$(date +%s)
  $PY -m climdl.cli sensitivity -c "$CKPT" --catalog sample-alps --period historical --kind perfect \
    --days 8 --device $D --out "$WORK/sens-$D" --overwrite -q > /dev/null 2>&1
  echo "sensitivity --device $D: exit $?, $(( $(date +%s) - start )) s for 8 days"
done
$PY -c "import csv; r=[{(x['target'],x['attack']): x['median_abs_mean_change'] for x in csv.DictReader(open(f'$WORK/sens-{d}/summary.csv'))} for d in ('cuda','cpu')]; print('median |mean change| cuda vs cpu:', {k: (r[0][k], r[1][k]) for k in r[0]})" 2>&1 | tail -1

echo "== generative stage 2 on CUDA (bf16-mixed, 3 epochs on the model just trained as stage 1), 10 members of 1981 vs the deterministic pass =="
if [ -n "$CKPT" ] && [ -f "$CKPT" ]; then
  start=$(date +%s)
  CLIMDL_CACHE="$WORK/cache" $PY -m climdl.cli train --config configs/emulator/sample_generative.yaml \
    --model.init_args.mean_checkpoint "$CKPT" --data.targets '[tasmax]' --trainer.accelerator gpu \
    --trainer.precision bf16-mixed --trainer.max_epochs 3 --trainer.default_root_dir "$WORK/gen" \
    --trainer.logger false --quiet --data.test_period null > "$WORK/gen.log" 2>&1
  echo "generative train (3 epochs, bf16): exit $?, $(( $(date +%s) - start )) s"
  GEN=$(ls "$WORK"/gen/checkpoints/last.ckpt 2>/dev/null)
  for M in 0 10; do
    start=$(date +%s)
    if [ "$M" = 0 ]; then ARGS=(-c "$CKPT"); else ARGS=(-c "$GEN" --members "$M"); fi
    CLIMDL_CACHE="$WORK/cache" $PY -m climdl.cli downscale "${ARGS[@]}" --catalog sample-alps \
      --period historical --kind perfect --device cuda --batch-size 256 -o "$WORK/gen_$M.nc" --overwrite -q
    echo "downscale 1981 on cuda, members $M (0: deterministic): exit $?, $(( $(date +%s) - start )) s"
  done
fi

echo "== bench/train_throughput.py on CUDA: Lightning vs hand loop, sample and full-size UNet, FLOPs and MFU (< 2 min) =="
# bf16 both models with climdl's automatic speed options (fused Adam, channels_last); fp32 the
# sample model; then the full model in bf16 without fused Adam and channels_last (their effect)
TT="bench/train_throughput.py --device cuda --steps 40 --warmup 5"
for ARGS in "--precision bf16 --models sample full" "--precision 32 --models sample --no-loader" \
            "--precision bf16 --models full --fused off --channels-last off --no-loader"; do
  start=$(date +%s)
  timeout 120 $PY $TT $ARGS 2>&1 | grep -E "^(device|==|model FLOPs|hand-written|climdl|achieved|plain NumPy|loader|peak)"
  echo "train_throughput $ARGS: exit ${PIPESTATUS[0]}, $(( $(date +%s) - start )) s"
done

echo "== bench/downscale_throughput.py on CUDA: downscale end to end vs bare forward, fp32 and bf16 =="
$PY bench/downscale_throughput.py --device cuda --years 1 10 --batch-size 256 --folder "$WORK/ds" 2>&1 | grep -v -E "Warning|warn|INFO|^ *$"
$PY bench/downscale_throughput.py --device cuda --precision bf16 --years 10 --batch-size 256 --folder "$WORK/ds" 2>&1 | grep -v -E "Warning|warn|INFO|^ *$"

echo "== climdl.parallel on one GPU: fp32/bf16/channels-last, torch.compile off/on, DDP and FSDP2 with NCCL =="
$PY bench/scaling.py --device cuda --batch-size 64 --steps 20 --warmup 5 2>&1 | grep -E "^(device|train|peak)"

echo "== climdl train with the ddp / fsdp / pipeline presets on one GPU (NCCL, bf16-mixed) =="
for S in ddp fsdp pipeline; do
  start=$(date +%s)
  $PY -m climdl.cli train --config configs/emulator/sample.yaml --config configs/strategy/$S.yaml \
    --trainer.accelerator gpu --trainer.devices 1 --trainer.precision bf16-mixed --trainer.max_epochs 2 \
    --trainer.default_root_dir "$WORK/strategy-$S" --trainer.logger false --quiet --data.test_period null \
    > "$WORK/strategy-$S.log" 2>&1
  rc=$?
  echo "climdl train $S (1 GPU, nccl, bf16-mixed): exit $rc, $(( $(date +%s) - start )) s, val_rmse $($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['val_rmse'])" "$WORK/strategy-$S/summary.json" 2>/dev/null || tail -1 "$WORK/strategy-$S.log")"
done

echo "== GPU preprocessing: climdl prepare (conservative upscaling, sparse matmul) on cuda vs cpu =="
FINE=$(find "$CLIMDL_CACHE" -path "*train*target*" -name "*.nc" | head -1)
for D in cpu cuda; do
  start=$($PY -c "import time; print(time.time())")
  $PY -m climdl.cli prepare "$FINE" --out "$WORK/prep_$D.nc" --device $D --overwrite -q 2>&1 | tail -1
  echo "prepare --device $D: exit $?, $($PY -c "import time,sys; print(f'{time.time()-float(sys.argv[1]):.1f}')" "$start") s for $FINE"
done
$PY -c "import xarray as xr, numpy as np; a=xr.open_dataset('$WORK/prep_cpu.nc'); b=xr.open_dataset('$WORK/prep_cuda.nc'); print('prepare cuda vs cpu max |diff|:', {v: float(np.nanmax(np.abs(a[v]-b[v]))) for v in a.data_vars if a[v].ndim == 3})"

echo "== cloud segmentation on CUDA: climdl segment end to end vs the bare forward, 2000^2 and 8000^2 =="
$PY bench/segment_throughput.py --device cuda --sizes 2000 8000 --batch-size 32 --folder "$WORK/seg" 2>&1 | grep -v -E "Warning|warn|INFO|^ *$" | tail -8

echo "== domain parallelism on one GPU: Doury UNet 32x32 -> 512x512, 1 block (activation memory, step time), bf16 and fp32 =="
for P in bf16 fp32; do
  $PY bench/domain_parallel.py --device cuda --blocks 1 --batch 16 --steps 10 --warmup 3 --precision $P 2>&1 | grep -v -E "Warning|warn|INFO|^ *$"
done
start=$(date +%s)
$PY -m climdl.cli train --config configs/emulator/sample.yaml --config configs/strategy/domain.yaml \
  --trainer.accelerator gpu --trainer.devices 1 --trainer.strategy.init_args.domain_size 1 --trainer.precision bf16-mixed \
  --trainer.max_epochs 2 --trainer.default_root_dir "$WORK/strategy-domain" --trainer.logger false --quiet \
  --data.test_period null > "$WORK/strategy-domain.log" 2>&1
rc=$?
echo "climdl train domain (1 GPU, 1 strip, nccl, bf16-mixed): exit $rc, $(( $(date +%s) - start )) s, val_rmse $($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['val_rmse'])" "$WORK/strategy-domain/summary.json" 2>/dev/null || tail -1 "$WORK/strategy-domain.log")"

echo "== throughput: full-size Doury UNet forward/backward, bf16 vs fp32 =="
$PY - <<'PYEOF'
import time, torch
from climdl.models import DouryUNet
dev = "cuda"
net = DouryUNet(15, 1, n_scalars=32).to(dev)
x = torch.randn(64, 15, 16, 16, device=dev); s = torch.randn(64, 32, device=dev)
opt = torch.optim.Adam(net.parameters(), 1e-4)
for dtype in (torch.float32, torch.bfloat16):
    for i in range(13):
        if i == 3:
            torch.cuda.synchronize(); t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            loss = net(x, s).float().square().mean()
        opt.zero_grad(); loss.backward(); opt.step()
    torch.cuda.synchronize()
    print(f"train step {dtype}: {64 * 10 / (time.perf_counter() - t0):.0f} samples/s")
net.eval()
with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
    xb = torch.randn(512, 15, 16, 16, device=dev); sb = torch.randn(512, 32, device=dev)
    for i in range(13):
        if i == 3:
            torch.cuda.synchronize(); t0 = time.perf_counter()
        net(xb, sb)
    torch.cuda.synchronize()
    print(f"inference bf16: {512 * 10 / (time.perf_counter() - t0):.0f} days/s at 128x128")
print("peak GPU memory", torch.cuda.max_memory_allocated() / 1e9, "GB")
PYEOF
