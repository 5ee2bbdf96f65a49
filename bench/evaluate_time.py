"""Wall time and peak memory of a full ``climdl evaluate`` over 10 simulated years.

Truth: 10 years of daily 128 x 128 ALPS target fields (tasmax, pr) from the embedded sample's
generator, written like the sample's target files (zlib, 32-day chunks). Prediction: the truth
with a warm bias, noise and smoothed precipitation, written like ``climdl downscale`` output
(chunks of 365 days x 16 x 16 points). The evaluation runs in a fresh process through the real
CLI (every diagnostic, NetCDF fields, JSON/CSV and the HTML report); that process reports its
own wall time, CPU time (user + system, steadier than wall time on a shared machine) and peak
resident memory (``VmHWM``: its own, see ``_memory.py``), so data generation does not count.

    .venv/bin/python bench/evaluate_time.py [--years 10] [--baseline] [--no-report] [--data DIR]

Prints one line per measurement; add them with the machine to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _memory import peak_rss_bytes

FIRST_YEAR = 1981


def make_data(root: Path, years: int) -> None:
    """Write truth, prediction and baseline NetCDF files for ``years`` years under ``root``."""
    import numpy as np
    import xarray as xr
    from scipy.ndimage import uniform_filter

    from climdl.data.sample import SampleWriter

    writer = SampleWriter("ALPS", root / "sample", years, seed=0, overwrite=True)
    truth = writer.target_dataset(writer.runs["train"], list(range(FIRST_YEAR, FIRST_YEAR + years)))
    rng = np.random.default_rng(1)

    def enc(ds: xr.Dataset, chunks: tuple[int, int, int]) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {
            v: {
                "zlib": True,
                "complevel": 4,
                "shuffle": True,
                "dtype": "f4",
                "_FillValue": np.float32(np.nan),
                "chunksizes": tuple(min(c, n) for c, n in zip(chunks, ds[v].shape, strict=True)),
            }
            for v in ("tasmax", "pr")
        }
        out["time"] = {"units": "days since 1949-12-01", "calendar": "standard"}
        return out

    truth.to_netcdf(root / "truth.nc", encoding=enc(truth, (32, 128, 128)))
    for name, noise, size in (("pred", 0.8, 3), ("baseline", 1.5, 9)):
        pred = truth.copy()
        tas = truth["tasmax"].values
        pred["tasmax"] = truth["tasmax"].copy(
            data=(tas + 0.3 + rng.normal(0.0, noise, tas.shape)).astype("f4")
        )
        pred["pr"] = truth["pr"].copy(
            data=uniform_filter(truth["pr"].values, size=(1, size, size), mode="nearest").astype(
                "f4"
            )
        )
        pred.to_netcdf(root / f"{name}.nc", encoding=enc(pred, (365, 16, 16)))


def run_evaluation(root: Path, baseline: bool, report: bool) -> None:
    """Evaluate through the CLI in this process and print wall time and peak RSS as JSON."""
    from climdl.cli import main

    args = [
        "evaluate",
        "--truth",
        str(root / "truth.nc"),
        "--pred",
        str(root / "pred.nc"),
        "--out",
        str(root / "evaluation"),
        "--overwrite",
        "--quiet",
    ]
    if baseline:
        args += ["--baseline", f"interpolation={root / 'baseline.nc'}"]
    if not report:
        args.append("--no-report")
    start = time.perf_counter()
    rc = main(args)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = peak_rss_bytes() / 2**20  # its own peak, not the parent's (see _memory)
    cpu = usage.ru_utime + usage.ru_stime  # steadier than wall time on a shared machine
    print(json.dumps({"rc": rc, "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--years", type=int, default=10)
    p.add_argument("--baseline", action="store_true", help="also evaluate a baseline")
    p.add_argument("--no-report", action="store_true", help="numbers and fields only")
    p.add_argument("--dir", type=Path, default=None, help="work folder (default: temporary)")
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="keep the generated files in this folder and reuse them when present",
    )
    p.add_argument("--_make", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--_evaluate", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._make is not None:
        make_data(args._make, args.years)
        return 0
    if args._evaluate is not None:
        run_evaluation(args._evaluate, args.baseline, not args.no_report)
        return 0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = args.data if args.data is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        names = ("truth.nc", "pred.nc", "baseline.nc")
        if not all((root / n).is_file() for n in names):
            subprocess.run(
                [sys.executable, __file__, "--_make", str(root), "--years", str(args.years)],
                check=True,
            )
        size = sum((root / n).stat().st_size for n in names[: 3 if args.baseline else 2]) / 1e6
        print(
            f"data: {args.years} years of 128x128 daily tasmax+pr, truth + prediction"
            f"{' + baseline' if args.baseline else ''} ({size:.0f} MB on disk, "
            f"ready in {time.perf_counter() - t0:.0f} s)"
        )
        cmd = [sys.executable, __file__, "--_evaluate", str(root)]
        cmd += ["--baseline"] if args.baseline else []
        cmd += ["--no-report"] if args.no_report else []
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        models = "emulator + interpolation baseline" if args.baseline else "emulator"
        print(
            f"climdl evaluate ({models}, {'no report' if args.no_report else 'with report'}): "
            f"wall {res['seconds']:.1f} s, CPU {res['cpu_seconds']:.1f} s, "
            f"peak RSS {res['peak_rss_mb']:.0f} MB "
            f"[{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}]"
        )
        return int(res["rc"])


if __name__ == "__main__":
    sys.exit(main())
