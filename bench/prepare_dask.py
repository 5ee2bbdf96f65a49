"""``climdl prepare`` in one process vs on a local Dask cluster of N worker processes.

    python bench/prepare_dask.py [--years 4] [--workers 1 2] [--chunk-days 365]

Input: the embedded sample's 12.5 km ALPS tasmax + pr (Lambert grid, 128 x 128), repeated to
make an N-year daily series (written once to NetCDF in a scratch folder). Each run upscales it
conservatively to the 2-degree cells wholly inside the domain with training statistics, through
``climdl.data.prepare.prepare`` (the function behind ``climdl prepare``), in its own process so
that its peak RSS is its own (the client's; Dask workers are separate processes and their
peaks are reported by the workers). Printed side by side: wall time, speed-up over the
in-process run, and whether the outputs are identical.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _memory import peak_rss_bytes


def make_input(folder: Path, years: int) -> Path:
    import xarray as xr

    from climdl.data.sample import write_sample

    path = folder / f"fine_{years}y.nc"
    if path.exists():
        return path
    root = write_sample(folder / "sample", "ALPS", years=1, seed=0).root
    src = sorted((root / "test" / "historical" / "target").glob("*CNRM-CM5*.nc"))[0]
    with xr.open_dataset(src) as ds:
        one = ds.load()
    n = one.sizes["time"]
    parts = []
    for k in range(years):
        part = one.copy()
        part["time"] = one["time"].values + np.timedelta64(365 * k, "D")
        parts.append(part)
    full = xr.concat(parts, "time")
    full.to_netcdf(path)
    print(
        f"input: {path.name}, {years * n} days of {', '.join(map(str, one.data_vars))} on "
        f"{one.sizes.get('y')} x {one.sizes.get('x')}",
        flush=True,
    )
    return path


def child(args: argparse.Namespace) -> None:
    import torch

    from climdl.data.prepare import prepare

    torch.set_num_threads(1 if args.workers_n else torch.get_num_threads())
    t0 = time.perf_counter()
    res = prepare(
        args.fine,
        args.out,
        coarse_grid="covered",
        stats_out=Path(args.out).with_suffix(".json"),
        chunk_days=args.chunk_days,
        overwrite=True,
        scheduler=args.workers_n if args.workers_n else None,
        device="cpu",
    )
    wall = time.perf_counter() - t0
    rss = peak_rss_bytes() / 1e9
    print(json.dumps({"wall": wall, "rss_gb": rss, "n": res.n_times}))


def run(fine: Path, out: Path, workers: int, chunk_days: int) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--fine",
        str(fine),
        "--out",
        str(out),
        "--workers-n",
        str(workers),
        "--chunk-days",
        str(chunk_days),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def same(a: Path, b: Path) -> bool:
    import xarray as xr

    with xr.open_dataset(a) as x, xr.open_dataset(b) as y:
        return all(np.array_equal(x[v].values, y[v].values, equal_nan=True) for v in x.data_vars)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--years", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--chunk-days", type=int, default=365)
    p.add_argument("--folder", type=Path, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fine", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workers-n", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    import os

    folder = args.folder or Path(tempfile.mkdtemp(prefix="climdl-prep-"))
    folder.mkdir(parents=True, exist_ok=True)
    fine = make_input(folder, args.years)
    print(f"machine: {os.cpu_count()} CPUs; chunk {args.chunk_days} days", flush=True)
    base = run(fine, folder / "in_process.nc", 0, args.chunk_days)
    print(
        f"in process            : {base['wall']:6.1f} s  client peak RSS {base['rss_gb']:.2f} GB "
        f"({base['n']} days)",
        flush=True,
    )
    for n in args.workers:
        r = run(fine, folder / f"dask_{n}.nc", n, args.chunk_days)
        print(
            f"Dask, {n} local worker(s): {r['wall']:6.1f} s  speed-up {base['wall'] / r['wall']:.2f}x  "
            f"client peak RSS {r['rss_gb']:.2f} GB  identical output: "
            f"{same(folder / 'in_process.nc', folder / f'dask_{n}.nc')}",
            flush=True,
        )


if __name__ == "__main__":
    main()
