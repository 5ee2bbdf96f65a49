"""``climdl downscale``: the command-line face of :func:`climdl.inference.downscale`."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

#: The ``--channels-last`` choices of ``downscale`` and ``segment``, and the ``channels_last``
#: each passes on (None: :func:`climdl.tasks.speed.use_channels_last` decides).
CHANNELS_LAST_CHOICES: dict[str, bool | None] = {"auto": None, "true": True, "false": False}


def register(sub: Any) -> None:
    """Add the ``downscale`` subcommand."""
    d = sub.add_parser(
        "downscale",
        help="apply trained emulator(s) to GCM or RCM predictors and write CF NetCDF",
        description="Stream a predictor series through trained emulator(s), chunk by chunk, to a "
        "CF-1.10 NetCDF file (or the CORDEX ML-Bench submission layout). Runs under "
        "torchrun/srun split the chunks across ranks. Generative checkpoints write an ensemble "
        "(a member dimension, see the ensemble options).",
    )
    d.add_argument(
        "--checkpoint",
        "-c",
        action="append",
        required=True,
        type=Path,
        help="emulator checkpoint (repeat for one emulator per target, e.g. tasmax and pr)",
    )
    src = d.add_argument_group("predictors (files or a catalog entry)")
    src.add_argument(
        "--input", "-i", nargs="+", default=None, help="predictor NetCDF files or globs"
    )
    src.add_argument("--catalog", default=None, help="catalog entry (climdl catalog list)")
    src.add_argument(
        "--period", default=None, help="catalog test period: historical | mid_century | end_century"
    )
    src.add_argument(
        "--kind",
        default="imperfect",
        choices=["perfect", "imperfect"],
        help="catalog predictors: perfect (upscaled RCM) or imperfect (GCM); default imperfect",
    )
    src.add_argument("--gcm", default=None, help="catalog GCM (default: the entry's training GCM)")
    src.add_argument("--start", default=None, help="first day (YYYY[-MM[-DD]])")
    src.add_argument("--end", default=None, help="last day (inclusive)")
    src.add_argument(
        "--regrid",
        default="conservative",
        choices=["conservative", "bilinear"],
        help="remapping of predictors on another grid (default conservative)",
    )
    src.add_argument(
        "--min-coverage",
        type=float,
        default=0.999,
        help="training cells covered less than this by the input are an error",
    )
    src.add_argument(
        "--forcing",
        type=Path,
        default=None,
        help="CSV of yearly forcing series (if the emulator uses one)",
    )
    src.add_argument(
        "--no-range-check",
        dest="range_check",
        action="store_false",
        help="accept predictors outside their plausible range after unit conversion "
        "(e.g. t_850 150-350 K); by default they stop the run as a likely units mistake",
    )
    out = d.add_argument_group("output")
    out.add_argument(
        "--output",
        "-o",
        required=True,
        type=Path,
        help="output .nc file, .zarr store (Zarr format 2, consolidated), or an existing folder "
        "(name derived; ML-Bench tree with --format mlbench)",
    )
    out.add_argument(
        "--format",
        dest="fmt",
        default="cf",
        choices=["cf", "mlbench", "cordex-cmip6"],
        help="cf (compressed CF-1.10, default), mlbench (benchmark submission layout) or "
        "cordex-cmip6 (the CORDEX-CMIP6 archive under the folder --output: DRS paths, one "
        "variable and five years per file; needs --metadata)",
    )
    out.add_argument(
        "--metadata",
        type=Path,
        default=None,
        metavar="RUN.yaml",
        help="--format cordex-cmip6: the attributes climdl cannot know (domain_id, "
        "institution_id, source_id, driving_source_id, driving_experiment_id, "
        "driving_variant_label, driving_institution_id, contact; optional version_realization, "
        "version, references, comment, cmor_tables), checked against the CORDEX-CMIP6 "
        "vocabulary before any work",
    )
    out.add_argument(
        "--baseline",
        action="store_true",
        help="write the checkpoint's fitted interpolation baseline instead of the emulator",
    )
    out.add_argument(
        "--resume", action="store_true", help="continue an interrupted run of this output"
    )
    out.add_argument("--overwrite", action="store_true", help="replace an existing output")
    run = d.add_argument_group("execution")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    run.add_argument(
        "--precision",
        default="32",
        choices=["32", "bf16", "16"],
        help="32, bf16 (autocast; for GPUs) or 16 (CUDA)",
    )
    run.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="days per forward pass (default 16 on the CPU, 256 on a GPU)",
    )
    run.add_argument(
        "--chunk-days",
        type=int,
        default=None,
        help="days read, computed and stored together; the resume unit (default 365, or "
        "365 // N with --members N so that a chunk's memory does not grow with N)",
    )
    run.add_argument(
        "--block-rows",
        type=int,
        default=None,
        metavar="N",
        help="run the networks' fine levels in strips of N output rows, each with a halo as "
        "wide as their receptive field: the same values as the whole grid, with the activation "
        "memory of one strip (for large grids); multiples of the output rows per coarse row "
        "(8 for 16x16 -> 128x128) waste least; Doury UNet emulators only (default: whole grid)",
    )
    run.add_argument(
        "--channels-last",
        default="auto",
        choices=list(CHANNELS_LAST_CHOICES),
        help="NHWC network weights: auto (default) uses them on the CPU, where the "
        "convolutions run ~1.7x faster, and on CUDA in bf16/16; the values agree to rounding",
    )
    ens = d.add_argument_group("ensemble (generative checkpoints only)")
    ens.add_argument(
        "--members",
        type=int,
        default=None,
        metavar="N",
        help="ensemble members to sample (at least 1; default: the members the first "
        "checkpoint was configured with; --format mlbench needs 10); refused with "
        "deterministic checkpoints",
    )
    ens.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="S",
        help="seed of the ensemble's noise (default 0): member k of a day is the same whatever "
        "--chunk-days, --batch-size, --start, the ranks or the workers",
    )
    ens.add_argument(
        "--sampler-steps",
        type=int,
        default=None,
        metavar="K",
        help="steps of the flow-matching sampler (Heun: 2K-1 network evaluations; default: "
        "the checkpoint's setting); fewer is faster, and less exact an integration of the flow",
    )
    dask = run.add_mutually_exclusive_group()
    dask.add_argument(
        "--dask-scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the chunks on an existing Dask cluster (tcp://HOST:8786); the output "
        "folder must be shared with the workers",
    )
    dask.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="run the chunks on N local Dask worker processes",
    )
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    d.set_defaults(func=_cmd_downscale)


def _cmd_downscale(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from climdl.dask_cluster import dask_target
    from climdl.inference import downscale

    console = Console(stderr=True, quiet=args.quiet)
    # checked before the run: a malformed address is one line, and no parts folder is made
    dask_scheduler = dask_target(args.dask_scheduler, args.workers)
    start = time.perf_counter()
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} days"),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=args.quiet) as bar:
        task = bar.add_task("downscaling", total=None, rate="")

        def report(done: int, total: int) -> None:
            rate = done / 365.25 / max(time.perf_counter() - start, 1e-9)
            bar.update(task, completed=done, total=total, rate=f"{rate:.2f} sim. years/s")

        res = downscale(
            args.checkpoint,
            args.input,
            args.output,
            catalog=args.catalog,
            period=args.period,
            kind=args.kind,
            gcm=args.gcm,
            start=args.start,
            end=args.end,
            regrid=args.regrid,
            min_coverage=args.min_coverage,
            device=args.device,
            precision=args.precision,
            batch_size=args.batch_size,
            chunk_days=args.chunk_days,
            fmt=args.fmt,
            emulator_output="baseline" if args.baseline else "emulator",
            forcing=args.forcing,
            range_check=args.range_check,
            resume=args.resume,
            overwrite=args.overwrite,
            dask_scheduler=dask_scheduler,
            history="climdl " + shlex.join(getattr(args, "argv", ["downscale"])),
            progress=report,
            members=args.members,
            seed=args.seed,
            sampler_steps=args.sampler_steps,
            block_rows=args.block_rows,
            channels_last=CHANNELS_LAST_CHOICES[args.channels_last],
            metadata=args.metadata,
        )
    if res.rank != 0:
        return 0
    res.dataset.close()
    resumed = f", {res.chunks_resumed} chunk(s) resumed" if res.chunks_resumed else ""
    ensemble = f"{res.members} member(s) ({res.sampler}); " if res.members else ""
    console.print(
        f"{res.n_days} days ({res.n_days / 365.25:.1f} simulated years) on {res.device} in "
        f"{res.seconds:.1f} s: {res.years_per_second * 60:.1f} simulated years/min; "
        f"{ensemble}{res.grid}{resumed}",
        markup=False,  # names from files and checkpoints are text
    )
    if "files" in res.extra:
        console.print(
            f"{len(res.extra['files'])} CORDEX-CMIP6 archive file(s) under:", markup=False
        )
    print(res.path)
    return 0
