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
predictor box, so either use :func:`covered_coarse_grid` (``coarse_grid="covered"``: the largest
regular grid whose cells lie wholly inside the fine domain) or lower ``min_coverage``: a partly
covered cell then holds the mean over its covered part and a cell with no fine data is NaN.
The covered fraction of every cell is written as ``climdl_coverage``.
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

import dask
import numpy as np
import pyproj
import torch
import torch.nn.functional as F
import xarray as xr
from torch import Tensor

from climdl import __version__
from climdl.data._coords import lon_origin
from climdl.data._prepare_io import (
    CoarseGrid,
    CoarseWriter,
    PrepareStats,
    VariableStats,
    coarse_from_dataset,
    latlon_grid_dataset,
    load_stats,
    stats_format,
    write_stats,
)
from climdl.data.files import PathArg, describe, resolve_paths
from climdl.data.grids import DOMAINS
from climdl.data.grids import coarse_grid as domain_coarse_grid
from climdl.data.reader import open_dataset
from climdl.data.units import check_plausible, value_range
from climdl.data.variables import canonical_attrs
from climdl.errors import ConfigError, DataError, OutputError
from climdl.io.netcdf import atomic_path
from climdl.preprocess import (
    LatLonGrid,
    ProjectedGrid,
    RegridWeights,
    StreamingStats,
    apply_regrid,
    conservative_weights,
)

__all__ = [
    "PrepareResult",
    "PrepareStats",
    "VariableStats",
    "covered_coarse_grid",
    "fine_grid",
    "load_stats",
    "prepare",
    "smooth",
]

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
_DATE = re.compile(r"^(\d{1,4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?$")


@dataclass(frozen=True)
class PrepareResult:
    """What :func:`prepare` wrote and computed."""

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


# ----------------------------------------------------------------------------- grids
def fine_grid(ds: xr.Dataset) -> tuple[LatLonGrid | ProjectedGrid, tuple[str, str]]:
    """The fine grid of a reader dataset and its (y, x) dimension names.

    Projected grids (1-D ``projection_x/y_coordinate`` axes and a CF grid-mapping variable,
    e.g. Lambert) and regular lat/lon grids (1-D ``lat``/``lon``) are supported.
    """
    axes = {ds[c].attrs.get("standard_name"): c for c in ds.coords if ds[c].ndim == 1}
    if "projection_x_coordinate" in axes and "projection_y_coordinate" in axes:
        ydim = str(ds[axes["projection_y_coordinate"]].dims[0])
        xdim = str(ds[axes["projection_x_coordinate"]].dims[0])
        return ProjectedGrid.from_dataset(ds), (ydim, xdim)
    if "lat" in ds.dims and "lon" in ds.dims:
        return LatLonGrid.from_centres(ds["lat"].values, ds["lon"].values), ("lat", "lon")
    raise DataError(
        "the fine fields are neither on a regular lat/lon grid nor on a projected x/y grid with "
        "a CF grid mapping (rotated-pole and curvilinear grids are not supported by prepare); "
        "remap them to one of those first."
    )


def _resolve_coarse(spec: xr.Dataset | str | os.PathLike[str], fine: xr.Dataset) -> CoarseGrid:
    if isinstance(spec, xr.Dataset):
        return coarse_from_dataset(spec, "the coarse grid dataset")
    text = os.fspath(spec)
    m = re.fullmatch(r"covered(?::([0-9.]+))?", text.strip(), re.IGNORECASE)
    if m:
        return coarse_from_dataset(covered_coarse_grid(fine, float(m[1] or 2.0)), text)
    if text.upper() in DOMAINS:
        return coarse_from_dataset(domain_coarse_grid(text), f"the {text.upper()} coarse grid")
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"coarse grid {text!r} is neither a domain ({', '.join(DOMAINS)}), 'covered[:STEP]' "
            "nor an existing NetCDF file."
        )
    try:
        with xr.open_dataset(path, decode_times=False) as ds:
            return coarse_from_dataset(ds.load(), str(path))
    except (OSError, ValueError, RuntimeError) as exc:  # netCDF-C: RuntimeError
        raise DataError(f"the coarse grid file {path} cannot be read ({exc}).") from exc


def _max_rectangle(ok: np.ndarray) -> tuple[int, int, int, int, int]:
    """Largest all-True rectangle of a 2-D mask: (area, row0, row1, col0, col1), ends exclusive."""
    best = (0, 0, 0, 0, 0)
    heights = np.zeros(ok.shape[1], dtype=int)
    for r in range(ok.shape[0]):
        heights = np.where(ok[r], heights + 1, 0)
        stack: list[int] = []
        for c in range(ok.shape[1] + 1):
            h = heights[c] if c < ok.shape[1] else 0
            while stack and heights[stack[-1]] >= h:
                top = stack.pop()
                left = stack[-1] + 1 if stack else 0
                area = int(heights[top]) * (c - left)
                if area > best[0]:
                    best = (area, r + 1 - int(heights[top]), r + 1, left, c)
            stack.append(c)
    return best


def _aligned_edges(lo: float, hi: float, offset: float, step: float) -> np.ndarray:
    """Edges ``offset + k * step`` spanning [lo, hi]."""
    k0, k1 = np.floor((lo - offset) / step), np.ceil((hi - offset) / step)
    return offset + step * np.arange(k0, k1 + 1)


def _domain_test(
    grid: LatLonGrid | ProjectedGrid,
) -> tuple[
    Callable[[np.ndarray, np.ndarray], np.ndarray], tuple[float, float], tuple[float, float]
]:
    """A point-in-domain test ``inside(lon, lat)`` and the domain's lat and lon ranges."""
    if isinstance(grid, LatLonGrid):
        lat_b, lon_b = np.sort(grid.lat_bounds[[0, -1]]), grid.lon_bounds[[0, -1]]
        tol = 1e-9

        def inside_ll(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
            in_lat = (lat >= lat_b[0] - tol) & (lat <= lat_b[1] + tol)
            return in_lat & (lon >= lon_b[0] - tol) & (lon <= lon_b[1] + tol)

        return inside_ll, (lat_b[0], lat_b[1]), (lon_b[0], lon_b[1])
    (x0, x1), (y0, y1) = np.sort(grid.x_bounds[[0, -1]]), np.sort(grid.y_bounds[[0, -1]])
    t = np.linspace(0.0, 1.0, 257)
    ones = np.ones_like(t)
    ring_x = np.concatenate([x0 + t * (x1 - x0), x1 * ones, x1 - t * (x1 - x0), x0 * ones])
    ring_y = np.concatenate([y0 * ones, y0 + t * (y1 - y0), y1 * ones, y1 - t * (y1 - y0)])
    to_geo = pyproj.Transformer.from_crs(grid.crs, grid.crs.geodetic_crs, always_xy=True)
    to_xy = pyproj.Transformer.from_crs(grid.crs.geodetic_crs, grid.crs, always_xy=True)
    ring_lon, ring_lat = (np.asarray(a) for a in to_geo.transform(ring_x, ring_y))
    origin = lon_origin(ring_lon)  # keep domains across the antimeridian contiguous
    ring_lon = origin + np.mod(ring_lon - origin, 360.0)

    def inside_xy(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        x, y = (np.asarray(a) for a in to_xy.transform(lon, lat))
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)

    return inside_xy, (ring_lat.min(), ring_lat.max()), (ring_lon.min(), ring_lon.max())


def covered_coarse_grid(fine: xr.Dataset, step: float = 2.0, samples: int = 16) -> xr.Dataset:
    """The largest regular ``step``-degree lat/lon grid whose cells lie wholly in the fine domain.

    Candidate grids aligned at quarter-steps are tested on ``samples`` points per cell side
    (edges included) against the fine grid's outer cell edges (x/y for projected grids,
    lat/lon for regular ones); the one with most cells wins. Returns coordinates with CF
    bounds, like :func:`climdl.data.grids.coarse_grid`.
    """
    grid, _ = fine_grid(fine)
    if step <= 0:
        raise ConfigError(f"the coarse grid step must be positive, got {step}.")
    inside, (lat_lo, lat_hi), (lon_lo, lon_hi) = _domain_test(grid)
    best: tuple[int, np.ndarray, np.ndarray] | None = None
    for oy in np.arange(4) * step / 4:
        for ox in np.arange(4) * step / 4:
            lat_e = _aligned_edges(lat_lo, lat_hi, oy, step)
            lat_e = lat_e[(lat_e >= -90) & (lat_e <= 90)]
            lon_e = _aligned_edges(lon_lo, lon_hi, ox, step)
            if lat_e.size < 2 or lon_e.size < 2:
                continue
            ny, nx = lat_e.size - 1, lon_e.size - 1
            lon_g, lat_g = np.meshgrid(
                lon_e[0] + step / samples * np.arange(nx * samples + 1),
                lat_e[0] + step / samples * np.arange(ny * samples + 1),
            )
            # number of outside samples per cell, edges included, from 2-D cumulative sums
            c = np.pad(
                (~inside(lon_g, lat_g)).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0))
            )
            r0, c0 = np.arange(ny) * samples, np.arange(nx) * samples
            r1, c1 = r0 + samples + 1, c0 + samples + 1
            bad = c[r1][:, c1] - c[r0][:, c1] - c[r1][:, c0] + c[r0][:, c0]
            area, j0, j1, i0, i1 = _max_rectangle(bad == 0)
            if area and (best is None or area > best[0]):
                best = (area, lat_e[j0 : j1 + 1], lon_e[i0 : i1 + 1])
    if best is None:
        raise DataError(
            f"the fine domain is too small to hold a single {step:g}-degree cell; use a smaller step."
        )
    return latlon_grid_dataset(best[1], best[2])


# ----------------------------------------------------------------------------- on the device
def smooth(x: Tensor, window: int, area: Tensor | None = None) -> Tensor:
    """Moving average of ``x[..., H, W]`` over ``window`` x ``window`` cells (odd window).

    Area-weighted (``area[H, W]``, e.g. cos-lat cell areas; default equal) and NaN-aware. At the
    grid's edges the window is truncated to the cells that exist (no padding values enter the
    mean); cells that are NaN stay NaN. ``window`` 0 or 1 returns ``x`` unchanged.
    """
    if window <= 1:
        return x
    if window % 2 == 0:
        raise ConfigError(f"the smoothing window must be odd (centred), got {window}.")
    h, w = x.shape[-2:]
    flat = x.reshape(-1, 1, h, w)
    wts = torch.ones((h, w), dtype=x.dtype, device=x.device) if area is None else area.to(x)
    valid = ~torch.isnan(flat)
    wv = torch.where(valid, wts, 0.0)
    kernel = torch.ones((1, 1, window, window), dtype=x.dtype, device=x.device)
    pad = window // 2
    num = F.conv2d(torch.where(valid, flat, 0.0) * wv, kernel, padding=pad)
    den = F.conv2d(wv, kernel, padding=pad)
    out = torch.where(valid & (den > 0), num / den, torch.nan)
    return out.reshape(x.shape)


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA device is available; use cpu.")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda.") from exc


# ----------------------------------------------------------------------------- time
def _day(d: object) -> str:
    """'YYYY-MM-DD' of a cftime/datetime/np.datetime64 date."""
    if isinstance(d, np.datetime64):
        return str(d.astype("datetime64[D]"))
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"  # type: ignore[attr-defined]


def _norm_date(text: str) -> str:
    m = _DATE.match(str(text).strip())
    if not m:
        raise ConfigError(f"train period bound {text!r} is not of the form YYYY[-MM[-DD]].")
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
    src: LatLonGrid | ProjectedGrid,
    coarse: CoarseGrid,
    cov: np.ndarray,
    smoothing: int,
    min_coverage: float,
    subcells: int,
) -> tuple[str, dict[str, object]]:
    """The history line and the output's global attributes (the input's, updated)."""
    listed = [str(f) for f in files]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    summary = (
        f"{now}: climdl {__version__} prepare {describe(files)} -> {out.name} "
        f"(conservative, {coarse.lat.size} x {coarse.lon.size} cells, smoothing {smoothing})"
    )
    more = f" and {len(listed) - 20} more" if len(listed) > 20 else ""
    method = (
        f"conservative ({subcells} x {subcells} sub-cells per fine cell)"
        if isinstance(src, ProjectedGrid)
        else "conservative (exact spherical overlaps)"
    )
    coverage = (
        f"lowest {cov.min():.4f}; {int((cov < 1 - 1e-9).sum())} of {cov.size} cells partly "
        f"covered, {int((cov == 0).sum())} uncovered; see variable climdl_coverage"
    )
    return summary, {
        **{k: v for k, v in attrs.items() if k not in ("history", "source", "title")},
        "Conventions": "CF-1.10",
        "title": "Fine fields conservatively upscaled to a coarse grid (perfect-model predictors)",
        "source": f"climdl {__version__} prepare from {', '.join(listed[:20])}{more}",
        "history": summary + (f"\n{attrs['history']}" if attrs.get("history") else ""),
        "climdl_version": __version__,
        "climdl_input_files": "\n".join(listed),
        "climdl_regrid_method": method,
        "climdl_smoothing": np.int32(smoothing),
        "climdl_min_coverage": np.float64(min_coverage),
        "climdl_coverage": coverage,
    }


# ----------------------------------------------------------------------------- blocks
def open_fine(
    files: Sequence[PathArg], variables: Sequence[str] | None, chunk_days: int
) -> tuple[xr.Dataset, LatLonGrid | ProjectedGrid, tuple[str, str], list[str]]:
    """The fine dataset, its grid, its (y, x) dimensions and variable names, checked for prepare.

    Used by :func:`prepare` and, on a Dask cluster, by every worker, so that both read the same
    fields the same way.
    """
    ds = open_dataset(files, variables, chunks={"time": chunk_days})
    where = describe([Path(f) for f in files])
    if "time" not in ds.dims:
        raise DataError(f"{where} has no time axis; prepare upscales time series.")
    src, (ydim, xdim) = fine_grid(ds)
    names = [str(n) for n in ds.data_vars]
    for name in names:
        if set(ds[name].dims) != {"time", ydim, xdim}:
            raise DataError(
                f"{name} in {where} has dimensions {ds[name].dims}, not (time, {ydim}, {xdim}); "
                "prepare only the time-varying fields of one grid."
            )
    return ds, src, (ydim, xdim), names


@dataclass(frozen=True)
class UpscaledBlock:
    """One block of time steps upscaled: what is written, and its share of the statistics.

    ``coarse`` and ``fine`` hold the statistics of the block's training-period steps only
    (nothing accumulated when it has none), on the CPU, to be merged in time order.
    """

    start: int
    values: np.ndarray
    """Coarse fields ``[T, C, lat, lon]``, float32, C in the order of the variable names."""
    coarse: StreamingStats
    fine: StreamingStats

    @property
    def stop(self) -> int:
        return self.start + int(self.values.shape[0])


@dataclass(frozen=True)
class Upscaler:
    """Everything a block needs but its time steps; built once per process (client or worker).

    :meth:`block` is the one computation of a block, whether :func:`prepare` runs it in process
    or as a Dask task, so both give the same output bit for bit.
    """

    ds: xr.Dataset
    names: list[str]
    dims: tuple[str, str]
    weights: RegridWeights
    area: Tensor
    """Coarse cell areas on the device, the smoothing's weights."""
    smoothing: int
    device: torch.device
    where: str = ""
    """The input files, for messages."""
    range_check: bool = True
    """Refuse a block whose values leave their variable's plausible range."""

    @classmethod
    def build(
        cls,
        ds: xr.Dataset,
        src: LatLonGrid | ProjectedGrid,
        dims: tuple[str, str],
        names: list[str],
        coarse: CoarseGrid,
        *,
        subcells: int,
        smoothing: int,
        device: torch.device,
        where: str = "",
        range_check: bool = True,
    ) -> Upscaler:
        """Conservative weights from ``src`` to ``coarse`` (cached per process) and cell areas."""
        weights = conservative_weights(src, coarse.grid, k=subcells, min_coverage=None)
        area = torch.as_tensor(coarse.grid.cell_areas(), dtype=torch.float64, device=device)
        return cls(ds, names, dims, weights, area, smoothing, device, where, range_check)

    def block(self, start: int, stop: int, train: slice) -> UpscaledBlock:
        """Read time steps ``start:stop``, remap (and smooth) them; statistics over ``train``.

        The fine values are checked against their plausible ranges first (unless
        ``range_check`` is off), so a units mistake stops the run at its first block.
        """
        ydim, xdim = self.dims
        # the threaded scheduler, also inside a Dask worker: the read must not become tasks
        # queued behind this one on the cluster
        with dask.config.set(scheduler="threads"):
            block = np.stack(
                [self.ds[v].transpose("time", ydim, xdim).isel(time=slice(start, stop)).values
                 for v in self.names],
                axis=1,
            )  # fmt: skip
        if self.range_check:
            lo, hi = value_range(block, axis=(0, 2, 3))
            first, last = (_day(d) for d in self.ds["time"].values[[start, stop - 1]])
            check_plausible(
                self.names, lo, hi, attrs={v: self.ds[v].attrs for v in self.names},
                where=self.where or None,
                when=f"on {first}" if first == last else f"time steps {first} to {last}",
            )  # fmt: skip
        x = torch.from_numpy(block).to(self.device, torch.float64)
        # NaN-aware remapping (renormalised over valid sources) only where needed: 4x cheaper
        y = apply_regrid(self.weights, x, nan_aware=bool(torch.isnan(x).any()))
        y = smooth(y, self.smoothing, self.area)
        coarse, fine = StreamingStats(channel_dim=1), StreamingStats(channel_dim=1)
        lo, hi = max(start, train.start) - start, min(stop, train.stop) - start
        if hi > lo:
            fine.update(x[lo:hi])
            coarse.update(y[lo:hi])
        values = y.to(torch.float32).cpu().numpy()
        return UpscaledBlock(start, values, coarse.to("cpu"), fine.to("cpu"))


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

    ``fine``: files/globs the reader accepts (regular lat/lon or projected x/y grid).
    ``coarse_grid``: a domain name (its 16 x 16 predictor grid), ``"covered[:STEP]"``
    (:func:`covered_coarse_grid`), a NetCDF path or a Dataset with 1-D lat/lon (and bounds).
    ``variables``: canonical names (default: all recognised). ``smoothing``: odd moving-average
    window in coarse cells, 0 = none (see :func:`smooth` for the edges). ``train_period``:
    inclusive (start, end) dates, 'YYYY[-MM[-DD]]'; statistics of the coarse and the fine fields
    over it (the whole series if None) are returned and written to ``stats_out`` (.json/.nc).
    ``device``: auto = cuda if available. ``chunk_days``: time steps per block (memory bound).
    ``progress(done, total)``: called after each block. ``min_coverage``: least covered
    fraction allowed for any coarse cell (see the module doc). ``subcells``: k x k sub-cells
    per projected fine cell for the weights.

    ``scheduler``: None computes the blocks in this process; N (an ``int``) starts N local Dask
    worker processes (one thread each); an address (``tcp://HOST:8786``, a string) uses an
    existing Dask cluster, e.g. one started on SLURM with dask-jobqueue. Each block is then a
    task (:mod:`climdl.data.prepare_dask`); the workers read the input files themselves, so
    these must be on a file system they share, and the client writes the blocks in time order
    and merges their statistics: the output is the in-process one and the statistics agree to
    rounding. Results are identical to the in-process run because each worker uses this
    process's torch thread count (the same rounding); on one machine N local workers therefore
    run N x cores threads and oversubscribe the cores, which is why Dask pays off across nodes.
    On Dask, ``device="auto"`` means cpu; for GPUs pass cuda and run one worker per GPU (e.g.
    dask-cuda's ``LocalCUDACluster``).

    ``range_check``: refuse fine values outside their variable's plausible range after unit
    conversion (:data:`climdl.data.variables.PLAUSIBLE_RANGES`), checked block by block; False
    skips the check (``--no-range-check``). A variable with no valid value in the training
    period (all NaN: an all-NaN output and statistics of count 0) is always refused, and no
    output is left.
    """
    t0 = time.perf_counter()
    out = Path(out)
    if chunk_days < 1:
        raise ConfigError(f"chunk_days must be at least 1, got {chunk_days}.")
    if smoothing < 0 or (smoothing > 1 and smoothing % 2 == 0):
        raise ConfigError(f"smoothing must be 0 or an odd window size, got {smoothing}.")
    if not 0.0 <= min_coverage <= 1.0:
        raise ConfigError(f"min_coverage must lie between 0 and 1, got {min_coverage}.")
    for target in (out, None if stats_out is None else Path(stats_out)):
        if target is not None and target.exists() and not overwrite:
            raise OutputError(f"{target} already exists; pass --overwrite to replace it.")
    if stats_out is not None:
        stats_format(stats_out)
    on_dask = scheduler is not None
    worker_device = _dask_device(str(device)) if on_dask else ""
    dev = torch.device("cpu") if on_dask else _device(str(device))
    files = resolve_paths(fine)
    if any(out.resolve() == f.resolve() for f in files):
        raise ConfigError(f"the output {out} is one of the input files; write somewhere else.")
    ds, src, dims, names = open_fine(files, variables, chunk_days)
    where = describe(files)
    coarse = _resolve_coarse(coarse_grid, ds)
    upscaler = Upscaler.build(
        ds, src, dims, names, coarse, subcells=subcells, smoothing=smoothing, device=dev,
        where=where, range_check=range_check,
    )  # fmt: skip
    cov = upscaler.weights.coverage.numpy()
    if (cov < min_coverage).any():
        raise DataError(
            f"the fine domain covers {int((cov < min_coverage).sum())} of {cov.size} coarse cells "
            f"less than {min_coverage:.1%} (lowest {cov.min():.1%}); use coarse_grid='covered' "
            "(cells wholly inside the fine domain) or lower min_coverage (partly covered cells "
            "then hold the mean of their covered part, uncovered cells NaN)."
        )
    dates = ds["time"].values
    days = [_day(d) for d in dates]
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
        tmp = stack.enter_context(atomic_path(out, overwrite=overwrite))
        writer = stack.enter_context(CoarseWriter(
            tmp, names=names, var_attrs={v: _var_attrs(v, smoothing) for v in names},
            lat=coarse.lat, lon=coarse.lon, lat_bnds=coarse.lat_bnds, lon_bnds=coarse.lon_bnds,
            dates=dates, time_units=time_units, calendar=calendar, coverage=cov,
            global_attrs=gattrs, chunk_t=min(chunk_days, 365),
        ))  # fmt: skip

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
