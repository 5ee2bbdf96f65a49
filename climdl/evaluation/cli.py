"""``climdl evaluate``: the command-line face of :func:`climdl.evaluation.evaluate_files`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from climdl.errors import ConfigError

#: The name the prediction given with --pred takes in the tables and files.
EMULATOR = "emulator"


def register(sub: Any) -> None:
    """Add the ``evaluate`` subcommand."""
    e = sub.add_parser(
        "evaluate",
        help="compare predictions with the RCM truth: CORDEX ML-Bench indices and diagnostics, "
        "NetCDF fields, JSON/CSV summary and an HTML/Markdown report",
        description="Evaluate an emulator (and baselines) against the truth on their common days: "
        "RMSE, bias, correlations, std ratio, index biases/ratios (mean, P01/P99, SU, "
        "TXx, TXn, Rx1day, SDII, CDD, CWD, lag-1 autocorrelation, interannual "
        "variability), PSD and RALSD, Wasserstein distances, tasmax-pr correlation "
        "and, with a historical period, the climate-change signal. A prediction with a "
        "member dimension is an ensemble: each diagnostic per member (mean ± std over "
        "members), its ensemble mean as '<name> (ens. mean)', and fair CRPS, spread-skill "
        "ratio and rank histogram.",
    )
    e.add_argument(
        "--truth",
        nargs="+",
        required=True,
        help="truth (RCM) NetCDF files or globs; the future period with --hist-truth",
    )
    e.add_argument(
        "--pred",
        nargs="+",
        required=True,
        help="emulator prediction files or globs (e.g. written by climdl downscale)",
    )
    e.add_argument(
        "--name", default=EMULATOR, help=f"name of the --pred model (default {EMULATOR})"
    )
    e.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a baseline to compare, e.g. interpolation=baseline.nc (repeatable; "
        "globs allowed, several files separated by commas)",
    )
    e.add_argument(
        "--hist-truth",
        nargs="+",
        default=None,
        help="truth of the historical period (enables the climate-change signal)",
    )
    e.add_argument(
        "--hist-pred", nargs="+", default=None, help="emulator prediction of the historical period"
    )
    e.add_argument(
        "--hist-baseline",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a baseline's historical-period prediction (repeatable)",
    )
    e.add_argument(
        "--variables",
        nargs="+",
        default=None,
        help="canonical variables to evaluate (default: those truth and predictions share)",
    )
    e.add_argument(
        "--seasons",
        nargs="*",
        default=["DJF", "MAM", "JJA", "SON"],
        help="seasons of the per-season RMSE and bias (default all four; none: only annual)",
    )
    e.add_argument(
        "--summer-threshold",
        default="25 degC",
        metavar="QUANTITY",
        help="summer days (SU) count tasmax above this (default '25 degC')",
    )
    e.add_argument(
        "--wet-threshold",
        default="1 mm/day",
        metavar="QUANTITY",
        help="wet day for SDII, CDD, CWD (default '1 mm/day'; any units, converted)",
    )
    e.add_argument(
        "--window",
        default="none",
        choices=["none", "hann"],
        help="window of the spectra (default none, as the benchmark)",
    )
    e.add_argument(
        "--bbox",
        nargs=4,
        type=float,
        default=None,
        metavar=("LON_MIN", "LON_MAX", "LAT_MIN", "LAT_MAX"),
        help="evaluate the cells whose centres lie in this box only (degrees; cut before "
        "anything is read; LON_MIN > LON_MAX crosses the antimeridian)",
    )
    e.add_argument("--out", required=True, type=Path, help="output folder (created)")
    e.add_argument("--no-report", action="store_true", help="write numbers and fields, no report")
    e.add_argument(
        "--sensitivity",
        type=Path,
        default=None,
        metavar="FILE.nc",
        help="add the section of a `climdl sensitivity` file (adversarial vs random change, "
        "saliency maps) to the report",
    )
    e.add_argument(
        "--overwrite", action="store_true", help="replace an existing evaluation in --out"
    )
    e.add_argument(
        "--no-range-check",
        dest="range_check",
        action="store_false",
        help="accept truth and prediction values outside their variable's plausible range "
        "(by default such values, e.g. degC labelled K, stop the evaluation)",
    )
    e.add_argument("-q", "--quiet", action="store_true", help="no progress or summary table")
    e.set_defaults(func=_cmd_evaluate)


def parse_named(items: list[str], option: str) -> dict[str, list[str]]:
    """``NAME=FILE[,FILE...]`` items into ``{name: [files]}``; ConfigError when malformed."""
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, files = item.partition("=")
        name = name.strip()
        if not sep or not name or not files.strip():
            raise ConfigError(f"{option} {item!r} is not NAME=FILE (e.g. interpolation=base.nc).")
        if name in out:
            raise ConfigError(f"{option} names {name!r} twice; give each baseline one name.")
        out[name] = [f.strip() for f in files.split(",") if f.strip()]
    return out


def _seasons(items: list[str]) -> list[str]:
    """``--seasons`` values; ``none`` alone (or no value) means the annual numbers only."""
    if any(s.strip().lower() == "none" for s in items):
        if len(items) > 1:
            raise ConfigError(
                f"--seasons {' '.join(items)} mixes none with seasons; give none alone "
                "(annual numbers only) or the seasons."
            )
        return []
    return list(items)


class _RichProgress:
    """Progress of the evaluation on a rich progress bar (stage text and Dask tasks)."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.task = bar.add_task("opening inputs", total=None)

    def stage(self, text: str) -> None:
        from rich.markup import escape  # model names and files are text, never rich markup

        self.bar.update(self.task, description=escape(text), completed=0, total=None)

    def tasks(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from climdl.evaluation.engine import evaluate_files
    from climdl.evaluation.indices import Thresholds
    from climdl.evaluation.output import check_out_dir, write_outputs
    from climdl.evaluation.summary import cell, models_of
    from climdl.io.oserrors import check_writable

    console = Console(stderr=True, quiet=args.quiet)
    baselines = parse_named(args.baseline, "--baseline")
    hist_baselines = parse_named(args.hist_baseline, "--hist-baseline")
    if args.name in baselines:
        raise ConfigError(f"--baseline {args.name!r} has the name of the emulator; rename one.")
    if (args.hist_truth is None) != (args.hist_pred is None):
        raise ConfigError(
            "--hist-truth and --hist-pred go together (the historical period of "
            "the truth and of the emulator)."
        )
    if hist_baselines and args.hist_truth is None:
        raise ConfigError("--hist-baseline needs --hist-truth and --hist-pred.")
    unknown = sorted(set(hist_baselines) - set(baselines))
    if unknown:
        raise ConfigError(f"--hist-baseline {', '.join(unknown)} has no matching --baseline.")
    seasons = _seasons(args.seasons)
    if args.sensitivity is not None:
        from climdl.evaluation.sensitivity_file import check_sensitivity_file

        if args.no_report:
            raise ConfigError("--sensitivity adds a section to the report; drop --no-report.")
        check_sensitivity_file(args.sensitivity)
    thresholds = Thresholds(args.summer_threshold, args.wet_threshold).check()
    if args.bbox is not None:
        from climdl.data.reader import check_bbox_values

        check_bbox_values(args.bbox)
    check_out_dir(args.out, args.overwrite)
    check_writable(args.out / "summary.json")  # a read-only folder, before the evaluation runs
    preds: dict[str, list[str]] = {args.name: list(args.pred), **baselines}
    hist_preds = (
        {args.name: list(args.hist_pred), **hist_baselines} if args.hist_pred is not None else None
    )
    started = time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=args.quiet) as bar:
        progress = _RichProgress(bar)
        result = evaluate_files(
            args.truth,
            preds,
            variables=args.variables,
            seasons=seasons,
            hist_truth=args.hist_truth,
            hist_preds=hist_preds,
            window=None if args.window == "none" else args.window,
            thresholds=thresholds,
            progress=progress,
            bbox=args.bbox,
            range_check=args.range_check,
        )
        progress.stage("writing fields and report")
        paths = write_outputs(
            result,
            args.out,
            overwrite=args.overwrite,
            report=not args.no_report,
            sensitivity=args.sensitivity,
        )
    if not args.quiet:
        models = models_of(result.rows)
        # names come from the command line and the files: shown as text, never as rich markup
        table = Table(
            "variable", "diagnostic", "units", *map(escape, models), title="evaluation summary"
        )
        for r in result.rows:
            best = set(r.best())
            table.add_row(
                escape(r.variable),
                escape(r.label),
                escape(r.units),
                *(f"[bold green]{cell(r, m)}[/]" if m in best else cell(r, m) for m in models),
            )
        console.print(table)
        step = str(result.meta.get("time_step", "daily"))
        steps = "days" if step == "daily" else f"{step} steps"
        console.print(
            f"{len(result.meta.get('variables', []))} variable(s), "
            f"{result.meta.get('n_days')} {steps}, {len(models)} model(s) in "
            f"{time.perf_counter() - started:.1f} s"
        )
    print(paths.get("report_html", paths["summary_json"]))
    return 0
