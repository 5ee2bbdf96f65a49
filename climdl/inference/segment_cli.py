"""``climdl segment``: the command-line face of :func:`climdl.inference.segment.segment`.

The command parses its options and calls the library function; heavy modules (torch, rasterio)
are imported when the command runs, not when ``climdl --help`` is built.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from climdl.inference.cli import CHANNELS_LAST_CHOICES


def register(sub: Any) -> None:
    """Add the ``segment`` subcommand."""
    g = sub.add_parser(
        "segment",
        help="cloud mask of a multispectral scene with a trained checkpoint (tiled, any size)",
        description="Tiled inference with overlapping, smoothly blended tiles (or, with --tiling "
        "exact, tiles with a halo as wide as the network's receptive field: the whole scene's "
        "result), in memory bounded by tile x width; writes a CF NetCDF flag variable (and "
        "class probabilities) or a tiled, DEFLATE-compressed GeoTIFF on the scene's grid.",
    )
    g.add_argument(
        "--checkpoint",
        "-c",
        required=True,
        type=Path,
        help="cloud-segmentation checkpoint (climdl train --config configs/clouds/...)",
    )
    g.add_argument(
        "--input",
        "-i",
        required=True,
        type=Path,
        help="scene NetCDF (an image (band, y, x) with band names and wavelengths), a Landsat "
        "8/9 Collection 2 Level-1 *_MTL.txt/json file (or its folder), or a multi-band GeoTIFF "
        "whose band descriptions name the bands",
    )
    g.add_argument(
        "--output",
        "-o",
        required=True,
        type=Path,
        help="output mask: .nc (CF NetCDF) or .tif/.tiff (GeoTIFF: uint8 classes, 255 = no "
        "data, colour table, the scene's CRS and grid; needs a grid mapping and regular 1-D x/y)",
    )
    g.add_argument(
        "--probabilities",
        action="store_true",
        help="also write the class probabilities (class, y, x); with a .tif output they go to "
        "a second GeoTIFF <stem>_probability.tif (float32, one band per class), since a "
        "GeoTIFF's bands share one data type",
    )
    g.add_argument(
        "--tile",
        type=int,
        default=512,
        help="tile side in pixels, a multiple of the network's 2**depth (default 512)",
    )
    g.add_argument(
        "--overlap",
        type=int,
        default=64,
        help="pixels shared by neighbouring tiles, blended (default 64; --tiling blend)",
    )
    g.add_argument(
        "--tiling",
        default="blend",
        choices=["blend", "exact"],
        help="blend (default): overlapping tiles, blended, close to the whole scene's result; "
        "exact: each tile carries a halo of the network's receptive radius (e.g. 112 px for "
        "depth 4) that is dropped, giving the whole scene's result in the same memory, at the "
        "cost of more tiles (the tile must exceed twice the halo)",
    )
    g.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass (default 8)")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    g.add_argument(
        "--channels-last",
        default="auto",
        choices=list(CHANNELS_LAST_CHOICES),
        help="NHWC network weights: auto (default) uses them on the CPU, where the "
        "convolutions run ~1.8x faster; the values agree to rounding",
    )
    g.add_argument("--overwrite", action="store_true", help="replace an existing output")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    g.set_defaults(func=_cmd_segment)


def _cmd_segment(args: argparse.Namespace) -> int:
    import os

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from climdl.inference.segment import segment

    # under torchrun, rank 0 speaks for the job (the others share its rows silently)
    console = Console(stderr=True, quiet=args.quiet or os.environ.get("RANK", "0") != "0")
    with Progress(
        TextColumn("tiles"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=console.quiet,
    ) as bar:
        task = bar.add_task("tiles", total=None)
        res = segment(
            args.checkpoint,
            args.input,
            args.output,
            probabilities=args.probabilities,
            tile=args.tile,
            overlap=args.overlap,
            tiling=args.tiling,
            batch_size=args.batch_size,
            device=args.device,
            overwrite=args.overwrite,
            progress=lambda d, t: bar.update(task, completed=d, total=t),
            channels_last=CHANNELS_LAST_CHOICES[args.channels_last],
        )
    if res.rank != 0:
        return 0
    shares = ", ".join(f"{c} {100 * f:.1f}%" for c, f in res.class_fractions.items())
    console.print(
        f"{res.shape[0]} x {res.shape[1]} px, {res.n_tiles} tiles on {res.device} in "
        f"{res.seconds:.1f} s ({res.megapixels_per_second:.2f} Mpx/s): {shares}",
        markup=False,  # names from files and checkpoints are text
    )
    print(res.path)
    if res.probability_path is not None and res.probability_path != res.path:
        print(res.probability_path)
    return 0
