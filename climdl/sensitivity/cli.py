"""``climdl sensitivity``: how far a bounded, adversarial nudge of the inputs moves a model.

The checkpoint says what is attacked: an emulator (predictor series, :func:`climdl.sensitivity.
emulator.run_emulator_sensitivity`) or the cloud segmenter (one scene, :func:`climdl.
sensitivity.segmenter.run_segmenter_sensitivity`). Either run writes ``DIR/sensitivity.nc``;
the stand-alone report (``report.html``, ``report.md``, ``figures/``) is made from it by
:func:`climdl.evaluation.sensitivity_report.write_sensitivity_report`. The whole set is written
in a temporary folder whose entries become ``--out``'s once complete
(:mod:`climdl.io.staged_folder`): a full disk or Ctrl-C leaves no half-finished run. The summary
table goes to the terminal (stderr), the paths of the files written to stdout.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from climdl.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from climdl.sensitivity.output import SummaryRow

DEFAULT_DAYS = 64


def register(sub: Any) -> None:
    """Add the ``sensitivity`` subcommand.

    Args:
        sub: the ``climdl`` parser's subparsers.
    """
    s = sub.add_parser(
        "sensitivity",
        help="how far a bounded, adversarial nudge of the inputs moves an emulator's (or the "
        "cloud CNN's) answer: FGSM, PGD vs random perturbations, saliency maps",
        description="Perturb the inputs of a trained model within physical bounds (FGSM, PGD, "
        "random corners of the same box), measure how far the output moves, and map which "
        "inputs drive it (integrated gradients). Writes DIR/sensitivity.nc (CF-1.10), "
        "DIR/summary.csv (emulators) and a stand-alone report.",
    )
    s.add_argument(
        "--checkpoint",
        "-c",
        action="append",
        required=True,
        type=Path,
        help="deterministic emulator checkpoint (repeat for one emulator per target; for a "
        "generative model, its stage-1 checkpoint), or one cloud segmenter checkpoint",
    )
    src = s.add_argument_group("inputs (predictor files, a catalog entry, or a scene)")
    src.add_argument(
        "--input",
        "-i",
        nargs="+",
        default=None,
        help="predictor NetCDF files or globs (emulator), or the scene (segmenter)",
    )
    src.add_argument("--catalog", default=None, help="catalog entry (emulator)")
    src.add_argument(
        "--period", default=None, help="catalog test period: historical | mid_century | end_century"
    )
    src.add_argument(
        "--kind",
        default="perfect",
        choices=["perfect", "imperfect"],
        help="catalog predictors: perfect (upscaled RCM, default) or imperfect (GCM)",
    )
    src.add_argument("--gcm", default=None, help="catalog GCM (default: the entry's training GCM)")
    src.add_argument("--start", default=None, help="first day (YYYY[-MM[-DD]])")
    src.add_argument("--end", default=None, help="last day (inclusive)")
    src.add_argument(
        "--regrid",
        default=None,
        choices=["conservative", "bilinear"],
        help="remapping of predictors on another grid, as in downscale (default conservative)",
    )
    src.add_argument(
        "--forcing",
        type=Path,
        default=None,
        help="CSV of yearly forcing series (if the emulator uses one), as in downscale",
    )
    att = s.add_argument_group("perturbations")
    att.add_argument(
        "--eps",
        default=None,
        metavar="TEXT",
        help="bounds in physical units, e.g. 't=0.5 K, q=5 %%, z=20 m2 s-2, u=v=0.5 m s-1' "
        "(the emulator default) or 'red=0.01 1, tir=0.5 K' (scene bands); a key is a channel "
        "(t_850) or a family (t); channels not named are held fixed",
    )
    att.add_argument(
        "--days",
        default=None,
        metavar="N|all",
        help=f"days analysed, evenly spaced over the series (default {DEFAULT_DAYS}; emulator)",
    )
    att.add_argument("--pgd-steps", type=int, default=5, help="PGD steps (default 5)")
    att.add_argument(
        "--random-draws", type=int, default=8, help="random perturbations per day (default 8)"
    )
    att.add_argument(
        "--ig-steps", type=int, default=16, help="integrated-gradient steps (default 16)"
    )
    att.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random draws, 0 to 2**63-1 (default 0)",
    )
    run = s.add_argument_group("execution")
    run.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="days per batch (default 8 on the CPU, 64 on a GPU) or tiles per batch (default 4)",
    )
    run.add_argument("--tile", type=int, default=None, help="tile size (segmenter; default 256)")
    run.add_argument(
        "--overlap", type=int, default=None, help="tile overlap (segmenter; default tile/8)"
    )
    run.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    s.add_argument("--out", "-o", required=True, type=Path, help="output folder")
    s.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    s.add_argument("-q", "--quiet", action="store_true", help="print only the paths written")
    s.set_defaults(func=_cmd_sensitivity)


def parse_days(text: str | None) -> int | None:
    """``--days``: a positive count, or ``all`` (None).

    Args:
        text: the option's value (None: the default).

    Returns:
        The number of days, or None for every day.
    """
    if text is None:
        return DEFAULT_DAYS
    if text.strip().lower() == "all":
        return None
    try:
        days = int(text)
    except ValueError:
        raise ConfigError(f"--days {text!r} is neither a number of days nor 'all'.") from None
    if days < 1:
        raise ConfigError(f"--days must be at least 1 (or all), got {days}.")
    return days


def checkpoint_kind(path: Path) -> str:
    """``emulator`` or ``segmenter``: what a checkpoint holds (DataError for other files).

    Args:
        path: the checkpoint file.

    Returns:
        The kind.

    Raises:
        ConfigError: a generative (ensemble) emulator: its stage-1 checkpoint is analysed.
    """
    from climdl.sensitivity.emulator import GENERATIVE_REFUSAL
    from climdl.tasks.checkpoint import read_checkpoint

    kind = read_checkpoint(path)["climdl"].get("kind")
    if kind == "generative_emulator":
        raise ConfigError(GENERATIVE_REFUSAL.format(path=path))
    return "emulator" if kind is None else "segmenter"


def _segmenter_args(args: argparse.Namespace) -> Path:
    """The scene of a segmenter run; ConfigError for emulator-only options."""
    if len(args.checkpoint) > 1:
        raise ConfigError(
            f"{args.checkpoint[0]} is a cloud segmenter checkpoint, which is attacked alone; "
            "give one --checkpoint."
        )
    given = [
        opt
        for opt, value in (
            ("--catalog", args.catalog),
            ("--period", args.period),
            ("--gcm", args.gcm),
            ("--start", args.start),
            ("--end", args.end),
            ("--regrid", args.regrid),
            ("--forcing", args.forcing),
            ("--days", args.days),
        )
        if value is not None
    ]
    if given:
        raise ConfigError(
            f"{', '.join(given)} apply to emulator checkpoints; a cloud segmenter is attacked "
            "on one scene (--input SCENE)."
        )
    if not args.input or len(args.input) != 1:
        raise ConfigError("give the scene to attack with --input SCENE (one file).")
    return Path(args.input[0])


def _emulator_table(rows: Sequence[SummaryRow], title: str, bounds: str) -> Any:
    from rich.table import Table
    from rich.text import Text

    wet = any(r.median_abs_wet_fraction_change is not None for r in rows)
    table = Table(title=Text(title), caption=Text(f"bounds: {bounds}"), title_justify="left")
    table.add_column("target", no_wrap=True)
    table.add_column("attack", no_wrap=True)
    heads = ["|Δ mean|", "|Δ mean|", "max |Δ|", "max |Δ|", "RMS Δ", "RMS Δ"]
    heads += ["|Δ wet frac.|", "|Δ wet frac.|"] if wet else []
    for k, head in enumerate(heads):
        table.add_column(f"{head}\n{'median' if k % 2 == 0 else 'max'}", justify="right")
    for r in rows:
        cells: list[float | None] = [
            r.median_abs_mean_change,
            r.max_abs_mean_change,
            r.median_max_abs_change,
            r.max_max_abs_change,
            r.median_rms_change,
            r.max_rms_change,
        ]
        if wet:
            cells += [r.median_abs_wet_fraction_change, r.max_abs_wet_fraction_change]
        text = ["-" if v is None else f"{v:.3g}" for v in cells]
        table.add_row(f"{r.target} ({r.units})", r.attack, *text)
    return table


def _segmenter_table(changed: dict[str, float], title: str) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table("attack", "pixels whose class changed", title=Text(title), title_justify="left")
    for attack, fraction in changed.items():
        table.add_row(attack, f"{100 * fraction:.3g} %")
    return table


def _cmd_sensitivity(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from climdl.inference.members import check_option_values

    # before the checkpoints are read: the seed is stored as a 64-bit attribute, as downscale's
    check_option_values(None, args.seed, None)
    kinds = {checkpoint_kind(p) for p in args.checkpoint}
    if len(kinds) > 1:
        raise ConfigError(
            "the checkpoints mix emulators and a cloud segmenter; attack them in separate runs."
        )
    segmenter = kinds == {"segmenter"}
    from climdl.sensitivity.output import check_out_dir

    # both kinds write the report beside the NetCDF: an earlier run's (or an evaluation's)
    # report.html, report.md or figures/ are replaced only with --overwrite
    check_out_dir(args.out, args.overwrite)
    scene = _segmenter_args(args) if segmenter else None
    days = None if segmenter else parse_days(args.days)
    console = Console(stderr=True, quiet=args.quiet)
    if not console.is_terminal:  # a log file: the whole table, not 80 columns of ellipses
        console.width = max(console.width, 150)
    unit = "tiles" if segmenter else "days"
    with Progress(
        TextColumn(f"attacking {unit}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=args.quiet or not console.is_terminal,  # no bar (nor its blank line) in logs
    ) as bar:
        task = bar.add_task(unit, total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        if scene is not None:
            from climdl.sensitivity.segmenter import run_segmenter_sensitivity

            seg = run_segmenter_sensitivity(
                args.checkpoint[0],
                scene,
                out_dir=args.out,
                eps=args.eps,
                pgd_steps=args.pgd_steps,
                random_draws=args.random_draws,
                ig_steps=args.ig_steps,
                seed=args.seed,
                device=args.device,
                tile=args.tile,
                overlap=args.overlap,
                batch_size=4 if args.batch_size is None else args.batch_size,
                overwrite=args.overwrite,
                progress=progress,
                history="climdl " + shlex.join(getattr(args, "argv", ["sensitivity"])),
                report=True,
            )
            paths = [seg.path, *seg.report_paths]
            title = (
                f"{seg.shape[0]} x {seg.shape[1]} px, {seg.n_tiles} tiles on {seg.device} in "
                f"{seg.seconds:.1f} s; bounds {seg.bounds}"
            )
            table = _segmenter_table(seg.changed_fraction, title)
        else:
            from climdl.sensitivity.emulator import run_emulator_sensitivity

            if args.tile is not None or args.overlap is not None:
                raise ConfigError("--tile and --overlap apply to cloud segmenter checkpoints.")
            emu = run_emulator_sensitivity(
                args.checkpoint,
                inputs=args.input,
                catalog=args.catalog,
                period=args.period,
                kind=args.kind,
                gcm=args.gcm,
                start=args.start,
                end=args.end,
                regrid=args.regrid or "conservative",
                forcing=args.forcing,
                eps=args.eps,
                days=days,
                pgd_steps=args.pgd_steps,
                random_draws=args.random_draws,
                ig_steps=args.ig_steps,
                seed=args.seed,
                batch_size=args.batch_size,
                device=args.device,
                out_dir=args.out,
                overwrite=args.overwrite,
                history="climdl " + shlex.join(getattr(args, "argv", ["sensitivity"])),
                progress=progress,
                report=True,
            )
            paths = [emu.path, emu.summary_path, *emu.report_paths]
            title = f"{emu.n_days} days on {emu.device} in {emu.seconds:.1f} s"
            table = _emulator_table(emu.summary, title, emu.bounds)
    _print(console, table, paths)
    return 0


def _print(console: Console, table: Any, paths: Sequence[Path]) -> None:
    """The summary table (stderr, unless quiet), then the paths written (stdout)."""
    console.print(table)
    for p in paths:
        print(p)
