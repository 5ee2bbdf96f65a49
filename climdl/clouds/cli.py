"""``climdl sample-clouds``: the command-line face of the cloud sample generator.

The command parses its options and calls one library function
(:func:`climdl.clouds.sample.write_cloud_sample`); heavy modules are imported when
the command runs, not when ``climdl --help`` is built.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add the ``sample-clouds`` subcommand."""
    s = sub.add_parser(
        "sample-clouds",
        help="write labelled synthetic multispectral scenes (clouds, shadows, snow) as NetCDF",
        description="Write deterministic labelled scenes: Landsat-like bands (blue .. swir22, "
        "thermal 10.9 um) or, with --sensor sentinel2, Sentinel-2 MSI bands (blue, green, red, "
        "nir, cirrus 1.375 um, swir16, swir22; no thermal band) over real Blue Marble surfaces "
        "with procedural convective, stratiform and cirrus clouds, their shadows, and "
        "snow/desert confusers.",
    )
    s.add_argument("out_dir", type=Path, help="folder to write scene_000.nc ... into (created)")
    s.add_argument("--n-scenes", type=int, default=16, help="number of scenes (default 16)")
    s.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(256, 256),
        metavar=("H", "W"),
        help="scene size in pixels (default 256 256)",
    )
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument(
        "--sensor",
        choices=("landsat", "sentinel2"),
        default="landsat",
        help="whose bands the scenes have: landsat (8/9 OLI/TIRS, default) or sentinel2 (MSI); "
        "the same seed gives the same clouds and labels for both",
    )
    s.add_argument("--overwrite", action="store_true", help="replace existing files")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    s.set_defaults(func=_cmd_sample_clouds)


def _cmd_sample_clouds(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from climdl.clouds.sample import write_cloud_sample

    console = Console(stderr=True, quiet=args.quiet)
    with Progress(console=console, transient=True, disable=args.quiet) as bar:
        task = bar.add_task("scenes", total=args.n_scenes)
        res = write_cloud_sample(
            args.out_dir,
            args.n_scenes,
            tuple(args.size),
            args.seed,
            overwrite=args.overwrite,
            progress=lambda d, t: bar.update(task, completed=d, total=t),
            sensor=args.sensor,
        )
    console.print(
        f"{len(res.files)} scenes of {args.size[0]} x {args.size[1]}, "
        f"{res.nbytes / 1e6:.1f} MB in {res.seconds:.1f} s"
    )
    print(res.root)
    return 0
