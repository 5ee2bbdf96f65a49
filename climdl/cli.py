"""The ``climdl`` command.

Each subcommand parses its options and calls one library function; there is no logic here.
Predictable mistakes surface as :class:`climdl.errors.ClimdlError` and are printed as one
sentence with a non-zero exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import atexit
import errno
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from climdl import __version__
from climdl.errors import ClimdlError

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger("climdl")

# Subcommands defined beside the library they drive: each module has ``register(subparsers)``
# that adds its parser(s) with ``set_defaults(func=...)`` and imports heavy modules lazily.
_SUBCOMMAND_MODULES = (
    "climdl.inference.cli",
    "climdl.evaluation.cli",
    "climdl.plot.cli",
    "climdl.clouds.cli",
    "climdl.inference.segment_cli",
    "climdl.parallel.cli",
    "climdl.sensitivity.cli",
)


def _console(quiet: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=True, quiet=quiet)


# ----------------------------------------------------------------------------- sample
def _describe(bar: Any, task: Any, domain: str) -> Callable[[str], None]:
    return lambda name: bar.update(task, description=f"{domain}: {name}")


def _cmd_sample(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from climdl.data.sample import write_sample

    console = _console(args.quiet)
    for domain in args.domain:
        with Progress(console=console, transient=True, disable=args.quiet) as bar:
            task = bar.add_task(f"sample {domain}", total=None)
            res = write_sample(
                args.out_dir,
                domain=domain,
                years=args.years,
                seed=args.seed,
                overwrite=args.overwrite,
                progress=_describe(bar, task, domain),
                size=args.size,
            )
        console.print(
            f"[bold]{res.root.parent.name}[/]: {len(res.files)} files, {res.nbytes / 1e6:.1f} MB "
            f"in {res.seconds:.1f} s"
        )
        print(res.root)
    return 0


# ----------------------------------------------------------------------------- prepare
def _cmd_prepare(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from climdl.dask_cluster import dask_target
    from climdl.data.prepare import prepare

    console = _console(args.quiet)
    period = tuple(args.train_period) if args.train_period else None
    scheduler = dask_target(args.dask_scheduler, args.workers)  # a malformed one: one line
    with Progress(console=console, transient=True, disable=args.quiet) as bar:
        task = bar.add_task("upscaling", total=None)
        res = prepare(
            args.fine,
            args.out,
            coarse_grid=args.coarse_grid,
            variables=args.variables,
            smoothing=args.smoothing,
            train_period=period,
            stats_out=args.stats,
            device=args.device,
            chunk_days=args.chunk_days,
            overwrite=args.overwrite,
            min_coverage=args.min_coverage,
            scheduler=scheduler,
            range_check=args.range_check,
            progress=lambda d, t: bar.update(task, completed=d, total=t),
        )
    console.print(
        f"{len(res.variables)} variable(s), {res.n_times} steps on {res.device} "
        f"in {res.seconds:.1f} s"
    )
    print(res.path)
    if res.stats_path:
        print(res.stats_path)
    return 0


# ----------------------------------------------------------------------------- catalog
def _cmd_catalog_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from climdl.data.catalog import load_catalog

    table = Table("name", "layout", "domain", "description")
    for entry in load_catalog().values():
        table.add_row(entry.name, entry.layout, entry.domain or "-", entry.description)
    _console().print(table)
    return 0


def _cmd_catalog_show(args: argparse.Namespace) -> int:
    from climdl.data.catalog import get_entry

    print(get_entry(args.name).describe())
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(
        prog="climdl", description="Deep-learning climate downscaling and cloud segmentation."
    )
    p.add_argument("--version", action="version", version=f"climdl {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "train",
        help="train an emulator or a cloud segmenter: climdl train --config "
        "configs/emulator/sample.yaml | configs/clouds/sample.yaml, or a packaged preset "
        "(sample, clouds/sample, strategy/ddp) from any folder (LightningCLI options)",
    )

    s = sub.add_parser(
        "sample", help="write the embedded sample dataset in the CORDEX ML-Bench layout"
    )
    s.add_argument("out_dir", type=Path, help="folder to write into (created)")
    s.add_argument(
        "--domain",
        nargs="+",
        default=["ALPS"],
        type=str.upper,
        choices=["ALPS", "SA", "EUR12-ROT"],
        help="domain(s) to generate (default ALPS): the benchmark's ALPS (Lambert) and SA "
        "(regular lat/lon) domains, or EUR12-ROT, a EURO-CORDEX rotated-pole grid",
    )
    s.add_argument(
        "--size",
        type=int,
        default=None,
        help="target cells per side: 128 (default, the benchmark grid), or 256 / 512 for a wider "
        "ALPS domain on the same 12.5 km Lambert grid, written as ALPS256 / ALPS512",
    )
    s.add_argument("--years", type=int, default=1, help="years per period (default 1)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--overwrite", action="store_true", help="replace existing files")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    s.set_defaults(func=_cmd_sample)

    pp = sub.add_parser(
        "prepare",
        help="perfect-model predictors: conservative upscaling of RCM "
        "fields to a coarse grid, and training-period statistics",
    )
    pp.add_argument(
        "fine", nargs="+", help="RCM NetCDF files or globs (any CF layout the reader accepts)"
    )
    pp.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output NetCDF file, or a Zarr store (ending in .zarr)",
    )
    pp.add_argument(
        "--coarse-grid",
        default="covered",
        help="ALPS | SA (climdl's 16x16 2-degree "
        "grids), covered[:STEP] (largest grid inside the fine domain), or a NetCDF file",
    )
    pp.add_argument(
        "--variables", nargs="+", default=None, help="canonical names (default: all found)"
    )
    pp.add_argument(
        "--smoothing", type=int, default=0, help="moving-average window in coarse cells (odd)"
    )
    pp.add_argument(
        "--train-period", nargs=2, metavar=("START", "END"), help="statistics over this period"
    )
    pp.add_argument("--stats", type=Path, default=None, help="write statistics (.json or .nc)")
    pp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    pp.add_argument("--chunk-days", type=int, default=365, help="time steps per block")
    pp.add_argument(
        "--min-coverage", type=float, default=0.999, help="coarse cells less covered are errors"
    )
    pp.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    pp.add_argument(
        "--no-range-check",
        dest="range_check",
        action="store_false",
        help="accept values outside a variable's plausible range after unit conversion "
        "(e.g. tasmax 150-350 K); by default they stop the run as a likely units mistake",
    )
    dask = pp.add_mutually_exclusive_group()
    dask.add_argument(
        "--dask-scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the blocks on an existing Dask cluster (tcp://HOST:8786); the input "
        "files must be readable by the workers at the same paths",
    )
    dask.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="run the blocks on N local Dask worker processes; results are identical to the "
        "in-process run because each worker uses this process's torch thread count, which on "
        "one machine oversubscribes the cores (N x cores threads): Dask pays off across nodes",
    )
    pp.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    pp.set_defaults(func=_cmd_prepare)

    c = sub.add_parser("catalog", help="list or show data catalog entries")
    csub = c.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    cl = csub.add_parser("list", help="list the catalog entries")
    cl.set_defaults(func=_cmd_catalog_list)
    cs = csub.add_parser("show", help="show one entry: layout, experiments, paths")
    cs.add_argument("name")
    cs.set_defaults(func=_cmd_catalog_show)
    for module in _SUBCOMMAND_MODULES:
        try:
            importlib.import_module(module).register(sub)
        except ModuleNotFoundError as exc:  # a subcommand not in this build
            if exc.name is None or not module.startswith(exc.name):
                raise
    return p


def _quiet_teardown() -> None:
    """After the one reported error the process ends: zarr's writes still queued on its event
    loop (a Zarr output on a full disk) would each log "Task was destroyed but it is pending!"
    as the interpreter exits, and their coroutines, collected unfinished, "Exception ignored
    in": hundreds of lines under the one sentence that matters. Silenced at exit only, so that a
    caller that goes on (a notebook, a test session) keeps its own logging and hooks."""
    atexit.unregister(_silence_abandoned_tasks)  # once, however many errors a caller saw
    atexit.register(_silence_abandoned_tasks)


def _silence_abandoned_tasks() -> None:
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    sys.unraisablehook = lambda unraisable: None


def _run_guarded(func: Callable[[], int], debug: bool) -> int:
    try:
        return func()
    except ClimdlError as exc:
        if debug:
            raise
        print(f"climdl: error: {exc}", file=sys.stderr)
        _quiet_teardown()
        return exc.exit_code
    except KeyboardInterrupt:
        print("climdl: interrupted", file=sys.stderr)
        _quiet_teardown()
        return 130
    except OSError as exc:  # a read-only folder, a full disk, ... where no writer translated it
        from climdl.io.oserrors import describe_os_error

        cause = describe_os_error(exc)
        if cause is None or debug:
            raise
        verb = "access" if exc.errno in (errno.EACCES, errno.EPERM) else "write"
        where = f" {exc.filename}" if exc.filename else ""
        if exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):  # the cause names the path
            where = ""
        print(f"climdl: error: cannot {verb}{where}: {cause}.", file=sys.stderr)
        _quiet_teardown()
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``climdl`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    if argv and argv[0] == "train":  # LightningCLI owns the options of train
        logging.basicConfig(
            level=logging.DEBUG if debug else logging.WARNING,  # Lightning logs its own INFO
            format="%(levelname)s %(name)s: %(message)s",
        )
        from climdl.tasks.train_cli import run_train

        rest = argv[1:]
        return _run_guarded(lambda: run_train(rest), debug)
    if debug:
        argv.insert(0, "--debug")
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = [a for a in argv if a != "--debug"]  # for the history attribute of outputs
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    return _run_guarded(lambda: func(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
