"""``downscale`` end to end vs the bare model forward, and its memory for 1 vs 10 years.

    python bench/downscale_throughput.py [--years 1 10] [--device cpu|cuda] [--precision 32|bf16]
        [--channels-last auto|true|false]

Model: the sample config's UNet (16/128/16 filters, orography head, residual to the baseline),
built from the embedded sample's data spec (weights after one training step: speed does not
depend on them). Inputs: the sample's perfect 1981 predictors repeated to make N-year series
(written once to NetCDF in a scratch folder).

Measured side by side in one run, on the same model, device and weight layout (channels_last
as ``downscale`` decides it, or as ``--channels-last`` says, on both sides):
* bare forward: the whole series already in memory as one tensor; the task's device-side
  normalisation + network + denormalisation in batches (what a hand-written loop would do);
* ``downscale``: loading the checkpoint, opening and checking the NetCDF, reading, regridding
  check, normalisation, forward, CF encoding, the parts (for resuming) and the compressed output
  (``climdl.inference.downscale`` to a file), all timed; the one-time start (checkpoint loaded,
  inputs opened and checked) is also printed on its own.
Each N runs in its own process so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _memory import peak_rss_bytes

from climdl.inference.cli import CHANNELS_LAST_CHOICES

MODEL = {
    "base_filters": 16,
    "max_filters": 128,
    "extra_filters": 16,
    "head_features": 16,
    "residual_to_baseline": True,
}


def make_checkpoint(folder: Path) -> Path:
    import lightning as L

    from climdl.data.emulator_data import EmulatorDataModule
    from climdl.tasks.downscaling import DownscalingTask

    path = folder / "bench.ckpt"
    if path.exists():
        return path
    torch.manual_seed(0)
    dm = EmulatorDataModule(catalog="sample-alps", experiment="Emulator_hist_future", batch_size=32)
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(DownscalingTask(**MODEL), datamodule=dm)
    trainer.save_checkpoint(path)
    return path


def make_inputs(folder: Path, years: int) -> Path:
    import xarray as xr

    from climdl.data.catalog import get_entry

    path = folder / f"predictors_{years}y.nc"
    if path.exists():
        return path
    entry = get_entry("sample-alps")
    one = xr.open_dataset(entry.files("predictors", period="historical", kind="perfect")[0]).load()
    one = one.isel(time=slice(0, 365))
    parts = []
    for k in range(years):
        times = xr.date_range(
            f"{1981 + 4 * k}-01-01", periods=365, freq="D", calendar="noleap", use_cftime=True
        )
        parts.append(one.assign_coords(time=times))
    xr.concat(parts, "time").to_netcdf(path)
    return path


def child(args: argparse.Namespace) -> None:
    from climdl.inference import downscale
    from climdl.tasks.checkpoint import load_emulator
    from climdl.tasks.speed import use_channels_last

    folder, years = Path(args.folder), args.years[0]
    ckpt, inputs = folder / "bench.ckpt", folder / f"predictors_{years}y.nc"
    dev = torch.device(args.device)
    amp = torch.bfloat16 if args.precision == "bf16" else None
    out = {"years": years}
    if args.bare:
        import xarray as xr

        from climdl.data.forcing import day_of_year_features

        task = load_emulator(ckpt).to(dev)
        if use_channels_last(dev, args.precision, CHANNELS_LAST_CHOICES[args.channels_last]):
            task = task.to(memory_format=torch.channels_last)
        ds = xr.open_dataset(inputs, use_cftime=True)
        x = torch.from_numpy(
            ds[list(task.spec.variables)]
            .to_array("c")
            .transpose("time", "c", ...)
            .values.astype(np.float32)
        ).to(dev)
        aux = torch.from_numpy(day_of_year_features(ds.time)).to(dev)
        t0 = time.perf_counter()
        with (
            torch.inference_mode(),
            torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None),
        ):
            for a in range(0, x.shape[0], args.batch_size):
                b = task.on_after_batch_transfer(
                    {"x": x[a : a + args.batch_size], "aux": aux[a : a + args.batch_size]}, 0
                )
                task.predict_physical(b).float().cpu()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        out["bare_s"] = time.perf_counter() - t0
        out["days"] = int(x.shape[0])
    else:
        from climdl.inference.emulators import EmulatorSet

        # where the time goes: when the first batch starts, the network's own time (the I/O
        # thread's work beside it slows it), and what follows the last batch
        spans: list[tuple[float, float]] = []
        network = EmulatorSet.predict

        def timed(self: EmulatorSet, *a: object, **k: object) -> torch.Tensor:
            s = time.perf_counter()
            r = network(self, *a, **k)  # type: ignore[arg-type]
            if dev.type == "cuda":  # the span is the network's work, not its launch
                torch.cuda.synchronize()
            spans.append((s, time.perf_counter()))
            return r

        EmulatorSet.predict = timed  # type: ignore[method-assign]
        target = folder / f"out_{years}y.nc"
        t0 = time.perf_counter()
        res = downscale(
            ckpt,
            [str(inputs)],
            target,
            device=args.device,
            precision=args.precision,
            batch_size=args.batch_size,
            overwrite=True,
            channels_last=CHANNELS_LAST_CHOICES[args.channels_last],
        )
        out["pipeline_s"] = time.perf_counter() - t0
        out["first_batch_s"] = spans[0][0] - t0
        out["network_s"] = sum(b - a for a, b in spans)
        out["after_last_s"] = t0 + out["pipeline_s"] - spans[-1][1]
        out["start_s"] = float(res.extra.get("start_seconds", 0.0))
        out["days"] = res.n_days
        out["file_mb"] = target.stat().st_size / 1e6
        res.dataset.close()
    out["peak_rss_gb"] = peak_rss_bytes() / 1e9
    if dev.type == "cuda":
        out["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1e9
    print(json.dumps(out))


def run_child(folder: Path, years: int, bare: bool, args: argparse.Namespace) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--folder",
        str(folder),
        "--years",
        str(years),
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--batch-size",
        str(args.batch_size),
        "--channels-last",
        args.channels_last,
    ]
    if bare:
        cmd.append("--bare")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--years", type=int, nargs="+", default=[1, 10])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="32", choices=["32", "bf16"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--channels-last",
        default="auto",
        choices=list(CHANNELS_LAST_CHOICES),
        help="NHWC weights on both sides (auto: as downscale decides for the device)",
    )
    p.add_argument("--repeats", type=int, default=3, help="runs of each (the best is kept)")
    p.add_argument("--folder", default=None)
    p.add_argument("--child", action="store_true")
    p.add_argument("--bare", action="store_true")
    args = p.parse_args()
    if args.child:
        child(args)
        return
    from climdl.tasks.speed import use_channels_last

    folder = Path(args.folder or tempfile.mkdtemp(prefix="climdl-bench-"))
    os.environ.setdefault("CLIMDL_CACHE", str(folder / "cache"))
    make_checkpoint(folder)
    layout = use_channels_last(
        torch.device(args.device), args.precision, CHANNELS_LAST_CHOICES[args.channels_last]
    )
    print(
        f"device {args.device}, precision {args.precision}, batch {args.batch_size}, "
        f"{'channels_last' if layout else 'NCHW'} weights, "
        f"torch threads {torch.get_num_threads()}, scratch {folder}"
    )
    for years in args.years:
        make_inputs(folder, years)
        # alternate the two, best of N each: robust to other load on the machine
        bares, pipes = [], []
        for _ in range(args.repeats):
            bares.append(run_child(folder, years, True, args))
            pipes.append(run_child(folder, years, False, args))
        bare_s = min(b["bare_s"] for b in bares)
        best = min(pipes, key=lambda p: p["pipeline_s"])
        pipe_s, start_s = best["pipeline_s"], best["start_s"]
        days = best["days"]
        print(
            f"{years:>3} years ({days} days, best of {len(pipes)}): bare forward {days / bare_s:.1f} days/s, "
            f"downscale {days / pipe_s:.1f} days/s, ratio {bare_s / pipe_s:.2f}x "
            f"({bare_s / (pipe_s - start_s):.2f}x after the one-time start of {start_s:.2f} s: "
            f"checkpoint loaded, inputs opened and checked); "
            f"first batch at {best['first_batch_s']:.2f} s, network {best['network_s']:.2f} s "
            f"(bare {bare_s:.2f} s), {best['after_last_s']:.2f} s after the last batch; "
            f"{days / 365.25 / pipe_s * 60:.1f} simulated years/min; "
            f"peak RSS downscale {max(p['peak_rss_gb'] for p in pipes):.2f} GB "
            f"(bare {max(b['peak_rss_gb'] for b in bares):.2f} GB); output {best['file_mb']:.0f} MB"
            + (f"; peak GPU {best['peak_gpu_gb']:.2f} GB" if "peak_gpu_gb" in best else "")
        )


if __name__ == "__main__":
    main()
