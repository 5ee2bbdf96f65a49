"""``climdl prepare``: the perfect-model pipeline — upscale fine RCM fields to a coarse grid.

Doury et al. (2023) train the emulator on the RCM's own fields conservatively upscaled to the
GCM grid and smoothed by a moving average; :func:`prepare` makes those predictors from any
CF NetCDF the reader accepts. The conservative weights (fine lat/lon or projected grid to a
coarse lat/lon grid, :func:`climdl.preprocess.conservative_weights`) are built once and applied
as sparse matmuls on the chosen device, one block of ``chunk_days`` time steps at a time; each
block is written to the output as soon as it is done, so memory stays bounded by one block
whatever the length of the series, and the output only appears, complete, at the end.

Coverage: a coarse cell must be covered by the fine domain at least ``min_coverage`` (default
0.999), else :class:`DataError`. The ALPS Lambert domain does not cover its 16 x 16 two-degree
predictor box, so either use :func:`~climdl.data.prepare_grids.covered_coarse_grid`
(``coarse_grid="covered"``: the largest regular grid whose cells lie wholly inside the fine
domain) or lower ``min_coverage``: a partly covered cell then holds the mean over its covered
part and a cell with no fine data is NaN. The covered fraction of every cell is written as
``climdl_coverage``.

This module is the pipeline (checks, time blocks, output, statistics); the grids are in
:mod:`climdl.data.prepare_grids`, the computation of one block in :mod:`climdl.data.upscale`
(shared with the Dask workers of :mod:`climdl.data.prepare_dask`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr

from climdl import __version__
from climdl.data._prepare_io import (
    CoarseGrid,
    CoarseWriter,
    PrepareStats,
    VariableStats,
    ZarrCoarseWriter,
    load_stats,
    stats_format,
    write_stats,
)
from climdl.data.files import PathArg, describe, resolve_paths
from climdl.data.prepare_grids import FineGrid, resolve_coarse_grid
from climdl.data.upscale import UpscaledBlock, Upscaler, day_text, open_fine
from climdl.data.variables import canonical_attrs
from climdl.errors import ConfigError, DataError, OutputError
from climdl.io.netcdf import atomic_path
from climdl.io.provenance import CF_CONVENTIONS, chain_history, climdl_source, stamped
from climdl.io.zarr_store import atomic_store, check_replaceable, is_zarr
from climdl.preprocess import LatLonGrid, StreamingStats
from climdl.preprocess.device import resolve_device

__all__ = ["PrepareResult", "PrepareStats", "VariableStats", "load_stats", "prepare"]

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
_DATE = re.compile(r"^(\d{1,4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?$")


@dataclass(frozen=True)
class PrepareResult:
    """What :func:`prepare` wrote and computed.

    Attributes:
        path: the coarse NetCDF written.
        variables: the canonical names upscaled.
        n_times: time steps written.
        shape: coarse grid (lat, lon) size.
        coverage: covered fraction of each coarse cell, ``[lat, lon]``.
        stats: statistics of the coarse and the fine fields.
        stats_path: where the statistics were written, or None.
        device: the device the upscaling ran on.
        seconds: wall time.
    """

    path: Path
    variables: list[str]
    n_times: int
    shape: tuple[int, int]
    """Coarse grid (lat, lon) size."""
    coverage: np.ndarray
    """Covered fraction of each coarse cell, ``[lat, lon]``."""
    stats: PrepareStats
    stats_path: Path | None
    device: str
    seconds: float


# ----------------------------------------------------------------------------- time
def _norm_date(text: str) -> str:
    m = _DATE.match(str(text).strip())
    if not m:
        raise ConfigError(f"train period bound {text!r} is not of the form YYYY[-MM[-DD]].")
    month, day = (int(g) if g else 1 for g in m.groups()[1:3])
    if not (1 <= month <= 12 and 1 <= day <= 31):  # day 30 of February is a 360_day date
        raise ConfigError(f"train period bound {text!r} is not a date (month 1-12, day 1-31).")
    return "-".join(f"{int(g):0{4 if i == 0 else 2}d}" for i, g in enumerate(m.groups()) if g)


def _train_slice(days: Sequence[str], period: tuple[str, str] | None, where: str) -> slice:
    """Time positions inside ``period`` (inclusive bounds, partial dates allowed)."""
    if period is None:
        return slice(0, len(days))
    start, end = (_norm_date(p) for p in period)
    if start > end:
        raise ConfigError(f"the train period starts ({start}) after it ends ({end}).")
    hit = [i for i, d in enumerate(days) if d[: len(start)] >= start and d[: len(end)] <= end]
    if not hit:
        raise DataError(
            f"the train period {start}..{end} lies outside the data ({where} covers {days[0]} to "
            f"{days[-1]}); choose a period within it."
        )
    if days[0][: len(start)] > start or days[-1][: len(end)] < end:
        log.warning(
            "the train period %s..%s is only partly covered by the data; statistics use %s..%s",
            start, end, days[hit[0]], days[hit[-1]],
        )  # fmt: skip
    return slice(hit[0], hit[-1] + 1)


# ----------------------------------------------------------------------------- metadata
def _as_stats(acc: StreamingStats, names: list[str]) -> dict[str, VariableStats]:
    r = acc.result()
    return {
        n: VariableStats(float(r.mean[i]), float(r.std[i]), int(r.count[i]))
        for i, n in enumerate(names)
    }


def _var_attrs(name: str, smoothing: int) -> dict[str, str]:
    attrs = canonical_attrs(name)
    methods = attrs.get("cell_methods", "")
    attrs["cell_methods"] = f"{methods} area: mean".strip()
    comment = "conservatively upscaled from the fine grid"
    if smoothing > 1:
        comment += (
            f", then smoothed by a {smoothing} x {smoothing}-cell area-weighted moving average"
        )
    attrs["comment"] = comment
    attrs["coordinates"] = "lat lon"
    return attrs


def _global_attrs(
    attrs: dict[Any, Any],
    files: list[Path],
    out: Path,
    src: FineGrid,
    coarse: CoarseGrid,
    cov: np.ndarray,
    smoothing: int,
    min_coverage: float,
    subcells: int,
) -> tuple[str, dict[str, object]]:
    """The history line and the output's global attributes (the input's, updated)."""
    listed = [str(f) for f in files]
    summary = stamped(
        f"climdl {__version__} prepare {describe(files)} -> {out.name} "
        f"(conservative, {coarse.lat.size} x {coarse.lon.size} cells, smoothing {smoothing})",
        sep=": ",
    )
    more = f" and {len(listed) - 20} more" if len(listed) > 20 else ""
    method = (
        f"conservative ({subcells} x {subcells} sub-cells per fine cell)"
        if not isinstance(src, LatLonGrid)  # projected and rotated-pole grids: sub-cells
        else "conservative (exact spherical overlaps)"
    )
    coverage = (
        f"lowest {cov.min():.4f}; {int((cov < 1 - 1e-9).sum())} of {cov.size} cells partly "
        f"covered, {int((cov == 0).sum())} uncovered; see variable climdl_coverage"
    )
    return summary, {
        **{k: v for k, v in attrs.items() if k not in ("history", "source", "title")},
        "Conventions": CF_CONVENTIONS,
        "title": "Fine fields conservatively upscaled to a coarse grid (perfect-model predictors)",
        "source": climdl_source(f"prepare from {', '.join(listed[:20])}{more}"),
        "history": chain_history(summary, attrs.get("history")),
        "climdl_version": __version__,
        "climdl_input_files": "\n".join(listed),
        "climdl_regrid_method": method,
        "climdl_smoothing": np.int32(smoothing),
        "climdl_min_coverage": np.float64(min_coverage),
        "climdl_coverage": coverage,
    }


def _refuse_empty(stats: PrepareStats, where: str, *, whole: bool) -> None:
    """DataError when a variable has no valid value in the training period, fine or coarse.

    Its output would be all NaN and its statistics NaN with count 0: nothing to train on.
    ``whole``: the training period is the whole series (then the input itself is all NaN).
    """
    span = "" if whole else f" in the training period {stats.period[0]} to {stats.period[1]}"
    empty = [v for v in stats.variables if stats.fine[v].count == 0]
    if empty:
        raise DataError(
            f"{', '.join(empty)} in {where} {'has' if len(empty) == 1 else 'have'} no valid value"
            f"{span} (all NaN or fill values), so the output would be all NaN with statistics of "
            "count 0; check the input file, or leave the variable out with --variables."
        )
    blank = [v for v in stats.variables if stats.coarse[v].count == 0]
    if blank:
        raise DataError(
            f"{', '.join(blank)} in {where} {'has' if len(blank) == 1 else 'have'} valid values"
            f"{span} only outside the coarse grid's cells, so the output would be all NaN with "
            "statistics of count 0; choose a coarse grid over the valid data."
        )


def _dask_device(device: str) -> str:
    """The device Dask workers use: ``auto`` means cpu; cuda is checked on the workers."""
    if device == "auto":
        return "cpu"
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda.") from exc
    return device


# ----------------------------------------------------------------------------- pipeline
def prepare(
    fine: PathArg | Sequence[PathArg],
    out: PathArg,
    *,
    coarse_grid: xr.Dataset | str | os.PathLike[str],
    variables: Sequence[str] | None = None,
    smoothing: int = 0,
    train_period: tuple[str, str] | None = None,
    stats_out: PathArg | None = None,
    device: Device | str = "auto",
    chunk_days: int = 365,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    min_coverage: float = 0.999,
    subcells: int = 8,
    scheduler: str | int | None = None,
    range_check: bool = True,
) -> PrepareResult:
    """Upscale fine fields conservatively to ``coarse_grid`` and write CF NetCDF to ``out``.

    With a ``scheduler`` (N local Dask worker processes, one thread each, or the address of an
    existing Dask cluster, e.g. one started on SLURM with dask-jobqueue), each block is a
    task (:mod:`climdl.data.prepare_dask`); the workers read the input files themselves, so
    these must be on a file system they share, and the client writes the blocks in time order
    and merges their statistics: the output is the in-process one and the statistics agree to
    rounding. Results are identical to the in-process run because each worker uses this
    process's torch thread count (the same rounding); on one machine N local workers therefore
    run N x cores threads and oversubscribe the cores, which is why Dask pays off across nodes.
    On Dask, ``device="auto"`` means cpu; for GPUs pass cuda and run one worker per GPU (e.g.
    dask-cuda's ``LocalCUDACluster``).

    A variable with no valid value in the training period (all NaN: an all-NaN output and
    statistics of count 0) is always refused, and no output is left.

    Args:
        fine: files/globs the reader accepts (regular lat/lon or projected x/y grid).
        out: the coarse NetCDF file to write (a path ending in ``.zarr``: a Zarr store with
            the same content, :mod:`climdl.io.zarr_store`).
        coarse_grid: a domain name (its 16 x 16 predictor grid), ``"covered[:STEP]"``
            (:func:`~climdl.data.prepare_grids.covered_coarse_grid`), a NetCDF path or a
            Dataset with 1-D lat/lon (and bounds).
        variables: canonical names (default: all recognised).
        smoothing: odd moving-average window in coarse cells, 0 = none (see
            :func:`climdl.data.upscale.smooth` for the edges).
        train_period: inclusive (start, end) dates, 'YYYY[-MM[-DD]]'; statistics of the coarse
            and the fine fields over it (the whole series if None) are returned and written to
            ``stats_out``.
        stats_out: where to write the statistics (.json/.nc); None: not written.
        device: auto = cuda if available.
        chunk_days: time steps per block (memory bound).
        overwrite: replace an existing ``out`` (and ``stats_out``).
        progress: ``progress(done, total)``, called after each block.
        min_coverage: least covered fraction allowed for any coarse cell (see the module doc).
        subcells: k x k sub-cells per projected fine cell for the weights.
        scheduler: None computes the blocks in this process; N (an ``int``) starts N local
            Dask worker processes; an address (``tcp://HOST:8786``) uses an existing cluster.
        range_check: refuse fine values outside their variable's plausible range after unit
            conversion (:data:`climdl.data.variables.PLAUSIBLE_RANGES`), checked block by
            block; False skips the check (``--no-range-check``).

    Returns:
        Where the output and statistics went, the grid's shape and coverage, the statistics
        and the time taken.

    Raises:
        ConfigError: an unknown coarse grid or device, an even smoothing window, a malformed
            training period, ``chunk_days`` or ``min_coverage`` out of range, or an output
            that is one of the inputs.
        DataError: unreadable inputs, values outside their plausible range, a coarse cell
            covered less than ``min_coverage``, or a variable with no valid value.
        OutputError: ``out`` exists (without ``overwrite``), is a folder that is not a Zarr
            store (a ``.zarr`` output), or cannot be written.
    """
    t0 = time.perf_counter()
    out = Path(out)
    if chunk_days < 1:
        raise ConfigError(f"--chunk-days must be at least 1, got {chunk_days}.")
    if smoothing < 0 or (smoothing > 1 and smoothing % 2 == 0):
        raise ConfigError(f"--smoothing must be 0 or an odd window size, got {smoothing}.")
    if not 0.0 <= min_coverage <= 1.0:
        raise ConfigError(f"--min-coverage must lie between 0 and 1, got {min_coverage}.")
    if stats_out is not None and Path(stats_out).resolve() == out.resolve():
        raise ConfigError(f"--stats and --out both name {out}; give the statistics their own file.")
    for target in (out, None if stats_out is None else Path(stats_out)):
        if target is not None and target.exists() and not overwrite:
            raise OutputError(f"{target} already exists; pass --overwrite to replace it.")
    if is_zarr(out):  # a folder of other files is never replaced, even with overwrite
        check_replaceable(out)
    if stats_out is not None:
        stats_format(stats_out)
    on_dask = scheduler is not None
    worker_device = _dask_device(str(device)) if on_dask else ""
    dev = torch.device("cpu") if on_dask else resolve_device(str(device))
    files = resolve_paths(fine)
    for target in (out, None if stats_out is None else Path(stats_out)):
        if target is not None and any(target.resolve() == f.resolve() for f in files):
            raise ConfigError(
                f"the output {target} is one of the input files; write somewhere else."
            )
    ds, src, dims, names = open_fine(files, variables, chunk_days)
    where = describe(files)
    coarse = resolve_coarse_grid(coarse_grid, ds)
    upscaler = Upscaler.build(
        ds, src, dims, names, coarse, subcells=subcells, smoothing=smoothing, device=dev,
        where=where, range_check=range_check,
    )  # fmt: skip
    cov = upscaler.weights.coverage.numpy()
    if (cov < min_coverage).any():
        raise DataError(
            f"the fine domain covers {int((cov < min_coverage).sum())} of {cov.size} coarse cells "
            f"less than {min_coverage:.1%} (lowest {cov.min():.1%}); use --coarse-grid covered "
            "(cells wholly inside the fine domain) or lower --min-coverage (partly covered cells "
            "then hold the mean of their covered part, uncovered cells NaN)."
        )
    dates = ds["time"].values
    days = [day_text(d) for d in dates]
    train = _train_slice(days, train_period, where)
    enc = ds["time"].encoding
    calendar = str(enc.get("calendar") or getattr(dates[0], "calendar", None) or "standard")
    time_units = str(enc.get("units") or f"days since {days[0][:4]}-01-01")
    acc_coarse, acc_fine = StreamingStats(channel_dim=1), StreamingStats(channel_dim=1)
    summary, gattrs = _global_attrs(
        ds.attrs, files, out, src, coarse, cov, smoothing, min_coverage, subcells
    )
    n = len(dates)
    bounds = [(a, min(n, a + chunk_days)) for a in range(0, n, chunk_days)]
    with contextlib.ExitStack() as stack:
        client = None
        if scheduler is not None:  # reach or start the cluster before any output exists
            from climdl.dask_cluster import client_for

            client = stack.enter_context(client_for(scheduler))
        zarr_out = is_zarr(out)  # a store: built in a hidden folder, renamed when complete
        tmp = stack.enter_context(
            (atomic_store if zarr_out else atomic_path)(out, overwrite=overwrite)
        )
        make: type[CoarseWriter] | type[ZarrCoarseWriter] = (
            ZarrCoarseWriter if zarr_out else CoarseWriter
        )
        writer: CoarseWriter | ZarrCoarseWriter = make(
            tmp, names=names, var_attrs={v: _var_attrs(v, smoothing) for v in names},
            lat=coarse.lat, lon=coarse.lon, lat_bnds=coarse.lat_bnds, lon_bnds=coarse.lon_bnds,
            dates=dates, time_units=time_units, calendar=calendar, coverage=cov,
            global_attrs=gattrs, chunk_t=min(chunk_days, 365),
        )  # fmt: skip
        stack.enter_context(writer)

        def take(block: UpscaledBlock) -> None:
            """Write one block and merge its statistics: blocks must come in time order."""
            writer.write(block.start, block.values)
            acc_fine.merge(block.fine)
            acc_coarse.merge(block.coarse)

        if client is None:
            for a, b in bounds:
                take(upscaler.block(a, b, train))
                if progress is not None:
                    progress(b, n)
        else:
            from climdl.data.prepare_dask import BlockSource, run_blocks

            source = BlockSource(
                run=uuid.uuid4().hex, files=tuple(str(f.resolve()) for f in files),
                names=tuple(names), n_times=n, coarse=coarse, subcells=subcells,
                smoothing=smoothing, device=worker_device, chunk_days=chunk_days,
                torch_threads=torch.get_num_threads(), range_check=range_check,
            )  # fmt: skip
            run_blocks(client, source, bounds, train, take, progress=progress)
            dev = torch.device(worker_device)
        stats = PrepareStats(
            variables=tuple(names),
            units={v: str(ds[v].attrs.get("units", canonical_attrs(v)["units"])) for v in names},
            period=(days[train.start], days[train.stop - 1]),
            n_times=train.stop - train.start,
            coarse=_as_stats(acc_coarse, names),
            fine=_as_stats(acc_fine, names),
            attrs={"source": summary, "population_std": "ddof=0, NaN ignored"},
        )
        _refuse_empty(stats, where, whole=train == slice(0, n))  # before any file is kept
        stats_path = None
        if stats_out is not None:
            stats_path = write_stats(stats, stats_out, overwrite=overwrite)
    log.info("prepare: %d steps of %s -> %s", n, ", ".join(names), out)
    return PrepareResult(
        out, names, n, (coarse.lat.size, coarse.lon.size), cov, stats, stats_path, str(dev),
        time.perf_counter() - t0,
    )  # fmt: skip
