"""``climdl plot``: the command-line face of :func:`climdl.plot.quicklook.plot_file`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from climdl.plot.figures import MAX_DPI

_KINDS = ("auto", "sequential", "diverging", "precip", "temperature")


def register(sub: Any) -> None:
    """Add the ``plot`` subcommand."""
    p = sub.add_parser(
        "plot",
        help="map a variable of a NetCDF file on its native grid, or a scene with its cloud "
        "mask (PNG/PDF/SVG)",
        description="Draw one variable of a CF NetCDF file on its native grid (Lambert, rotated "
        "pole or lat/lon) with coastlines, lakes and borders shipped with climdl (no "
        "download), a colour map suited to the variable and a colour bar with units. "
        "With --vs, three panels: FILE, OTHER and FILE minus OTHER. A multispectral "
        "scene (climdl sample-clouds) is drawn as an RGB composite with its label "
        "and, with --mask, a cloud mask (climdl segment output) over it.",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="NetCDF file")
    p.add_argument(
        "--var", "-v", default=None, help="variable to draw (default: the file's only variable)"
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--time",
        "-t",
        default=None,
        metavar="DATE|INDEX",
        help="time step: a date YYYY-MM-DD (the step on that day, any calendar and stamp "
        "hour), a date and time 'YYYY-MM-DD HH:MM' (the nearest step; sub-daily data) or an "
        "index (0 first, -1 last); default: the only step, dated in the title",
    )
    when.add_argument("--mean", action="store_true", help="average over time")
    p.add_argument(
        "--vs",
        type=Path,
        default=None,
        metavar="OTHER",
        help="second file on the same grid: panels FILE, OTHER and FILE - OTHER",
    )
    p.add_argument(
        "--mask",
        type=Path,
        default=None,
        metavar="MASK",
        help="FILE is a scene (NetCDF, Landsat MTL product or GeoTIFF): draw this cloud mask "
        "(climdl segment output, .nc or .tif) over its RGB composite, beside the scene's own "
        "label; scenes over 2048 px a side are drawn every n-th pixel",
    )
    p.add_argument(
        "--out",
        "-o",
        type=Path,
        required=True,
        metavar="FIG",
        help="figure to write: .png, .pdf or .svg",
    )
    p.add_argument(
        "--kind",
        default="auto",
        choices=_KINDS,
        help="colour map family (default auto: from the variable and its values)",
    )
    p.add_argument("--vmin", type=float, default=None, help="lower colour limit (below --vmax)")
    p.add_argument("--vmax", type=float, default=None, help="upper colour limit")
    p.add_argument(
        "--title",
        default=None,
        help="figure title (default: variable and date); $...$ is drawn as matplotlib "
        "mathtext where it parses, and as typed where it does not",
    )
    p.add_argument(
        "--dpi",
        type=float,
        default=None,
        help=f"resolution of PNG output, 1 to {MAX_DPI} (default 150)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing figure")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the figure's path")
    p.set_defaults(func=_cmd_plot)


def _cmd_plot(args: argparse.Namespace) -> int:
    from climdl.plot.quicklook import plot_file

    path = plot_file(
        args.file,
        args.out,
        var=args.var,
        time=args.time,
        mean=args.mean,
        vs=args.vs,
        kind=args.kind,
        vmin=args.vmin,
        vmax=args.vmax,
        title=args.title,
        dpi=args.dpi,
        overwrite=args.overwrite,
        mask=args.mask,
    )
    if not args.quiet:
        print(path)
    return 0
