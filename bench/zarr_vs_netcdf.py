"""``downscale`` output as NetCDF vs Zarr: write time, read time (full and one point), memory.

    python bench/zarr_vs_netcdf.py [--years 10] [--repeats 2] [--folder DIR] [--steps ...]

Data as in ``bench/downscale_throughput.py``: the sample config's UNet (one training step) and
the sample's perfect 1981 predictors repeated into an N-year noleap series; its output is
tasmax on the 128 x 128 ALPS grid (float32, chunks of 73 days x 16 x 16, compressed: zlib 1 +
shuffle in NetCDF, Blosc zstd 1 + shuffle in Zarr).

Measured side by side in one run, the two formats alternated (best of ``--repeats``), each
measurement in its own process so that its peak RSS is its own:
* ``downscale``: the whole run to ``out.nc`` vs ``out.zarr`` (the streamed writer: each 73 days
  are compressed and stored while the network computes the next ones), all timed;
* write (join): the N-year output, read lazily from the NetCDF, written again as the join of a
  resumed run writes it (:func:`climdl.io.netcdf.write_netcdf` vs
  :func:`climdl.io.zarr_store.write_zarr`): the writer's own cost, without the network;
* read, full: open and load every value;
* read, point: open and load one grid point's whole series (64, 64).
Ratios are Zarr time / NetCDF time (below 1: Zarr is faster).
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

from _memory import peak_rss_bytes
from downscale_throughput import make_checkpoint, make_inputs

FORMATS = ("nc", "zarr")
STEPS = ("downscale", "write", "read_full", "read_point")


def _open(path: Path) -> object:
    import xarray as xr

    engine = {"engine": "zarr", "consolidated": True} if path.suffix == ".zarr" else {}
    return xr.open_dataset(
        path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True), chunks={}, **engine
    )


def _size_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def child(folder: Path, years: int, step: str, fmt: str) -> dict[str, float]:
    """One measurement in this process; returns its seconds and peak RSS."""
    import numpy as np
    import xarray as xr

    out = folder / f"out_{years}y.{fmt}"
    result: dict[str, float] = {}
    if step == "downscale":
        from climdl.inference import downscale

        t0 = time.perf_counter()
        res = downscale(
            folder / "bench.ckpt",
            [str(folder / f"predictors_{years}y.nc")],
            out,
            device="cpu",
            batch_size=16,
            overwrite=True,
        )
        result["seconds"] = time.perf_counter() - t0
        res.dataset.close()
        result["size_mb"] = _size_mb(out)
    elif step == "write":
        from climdl.inference.output import encoding
        from climdl.io.netcdf import write_netcdf
        from climdl.io.zarr_store import write_zarr

        source = folder / f"out_{years}y.nc"
        with xr.open_dataset(
            source, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True), chunks={"time": 73}
        ) as opened:
            calendar = str(opened.time.encoding["calendar"])
            ds = opened.drop_encoding()  # the NetCDF file's own encoding: neither side keeps it
            targets = [str(v) for v in ds.data_vars if ds[v].ndim == 3]
            enc = encoding(ds, targets, calendar, "cf")
            again = folder / f"again_{years}y.{fmt}"
            t0 = time.perf_counter()
            if fmt == "zarr":
                write_zarr(ds, again, encoding=enc, overwrite=True)
            else:
                write_netcdf(ds, again, encoding=enc, overwrite=True)
            result["seconds"] = time.perf_counter() - t0
            result["size_mb"] = _size_mb(again)
    else:
        t0 = time.perf_counter()
        ds = _open(out)
        assert isinstance(ds, xr.Dataset)
        with ds:
            if step == "read_full":
                total = sum(float(np.nansum(ds[v].values)) for v in ds.data_vars)
            else:
                total = float(np.nansum(ds["tasmax"][:, 64, 64].values))
        result["seconds"] = time.perf_counter() - t0
        result["checksum"] = total
    result["peak_rss_mb"] = peak_rss_bytes() / 1e6
    return result


def run_child(folder: Path, years: int, step: str, fmt: str) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", step, fmt, "--folder", str(folder)]
    cmd += ["--years", str(years)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--years", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2, help="runs of each (the best is kept)")
    p.add_argument("--folder", default=None, help="scratch folder (kept; default: a new one)")
    p.add_argument(
        "--steps",
        nargs="+",
        choices=STEPS,
        default=list(STEPS),
        help="what to measure (the reads and the join need the downscale outputs in --folder)",
    )
    p.add_argument("--child", nargs=2, metavar=("STEP", "FORMAT"), default=None)
    args = p.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="climdl-bench-zarr-"))
    if args.child:
        print(json.dumps(child(folder, args.years, args.child[0], args.child[1])))
        return
    import torch

    os.environ.setdefault("CLIMDL_CACHE", str(folder / "cache"))
    make_checkpoint(folder)
    make_inputs(folder, args.years)
    print(f"{args.years} years, torch threads {torch.get_num_threads()}, scratch {folder}")
    best: dict[tuple[str, str], dict[str, float]] = {}
    runs: dict[tuple[str, str], list[float]] = {}
    steps = [s for s in STEPS if s in args.steps]
    for step in steps:  # the downscale runs first: they write what the others read
        for _ in range(args.repeats):
            for fmt in FORMATS:  # alternated: robust to other load on the machine
                r = run_child(folder, args.years, step, fmt)
                runs.setdefault((step, fmt), []).append(r["seconds"])
                if (step, fmt) not in best or r["seconds"] < best[step, fmt]["seconds"]:
                    best[step, fmt] = r
                best[step, fmt]["peak_rss_mb"] = max(
                    best[step, fmt]["peak_rss_mb"], r["peak_rss_mb"]
                )
    for step in [s for s in ("read_full", "read_point") if s in steps]:
        a, b = best[step, "nc"]["checksum"], best[step, "zarr"]["checksum"]
        if abs(a - b) > 1e-6 * max(abs(a), 1.0):
            sys.exit(f"{step}: the two formats read different values ({a} vs {b})")
    for (step, fmt), seconds in runs.items():  # the spread says how busy the machine was
        print(f"{step} {fmt}: " + ", ".join(f"{t:.2f}" for t in seconds) + " s")
    print("| step | NetCDF s | Zarr s | Zarr / NetCDF | peak RSS NetCDF | peak RSS Zarr | size |")
    print("|---|---|---|---|---|---|---|")
    for step in steps:
        nc, zr = best[step, "nc"], best[step, "zarr"]
        size = f"{nc['size_mb']:.0f} MB / {zr['size_mb']:.0f} MB" if "size_mb" in nc else "-"
        print(
            f"| {step} | {nc['seconds']:.2f} | {zr['seconds']:.2f} | "
            f"**{zr['seconds'] / nc['seconds']:.2f}x** | {nc['peak_rss_mb']:.0f} MB | "
            f"{zr['peak_rss_mb']:.0f} MB | {size} |"
        )


if __name__ == "__main__":
    main()
