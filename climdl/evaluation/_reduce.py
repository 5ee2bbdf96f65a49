"""Streaming reductions over time that stay lazy and bounded in memory on Dask.

Two building blocks keep multi-decade daily series out of memory (the pair statistics are in
:mod:`climdl.evaluation._pairs`):

* :func:`per_group` reduces each year (or season-year) separately: the time axis is rechunked
  to the group boundaries (a local rechunk: neighbouring chunks only) and a NumPy function is
  mapped over the blocks, so one year of fields is in memory per task.
* :func:`quantile` takes tail quantiles exactly from a tree reduction of the k largest (or
  smallest) values per grid point (``dask.array.topk``), falling back to a full-time rechunk only
  for central quantiles.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr

#: Target size of one block when the whole time axis must be in one chunk (bytes).
TIME_CORE_BLOCK_BYTES = 48 * 2**20
#: Above this fraction of the series, tail-quantile top-k stops paying off.
_TOPK_MAX_FRACTION = 0.15

BlockFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def is_dask(da: xr.DataArray) -> bool:
    """Whether ``da`` is backed by a dask array."""
    return isinstance(da.data, dsa.Array)


def spatial_dims(da: xr.DataArray) -> tuple[Hashable, ...]:
    """All dimensions but time, in order."""
    return tuple(d for d in da.dims if d != "time")


def time_first(da: xr.DataArray) -> xr.DataArray:
    """``da`` with time as its first dimension."""
    return da.transpose("time", *spatial_dims(da))


def time_core(da: xr.DataArray, block_bytes: int = TIME_CORE_BLOCK_BYTES) -> xr.DataArray:
    """``da`` with the whole time axis in one chunk and the first spatial dim split to fit.

    A no-op for NumPy data and for dask data already chunked that way (e.g. opened with
    ``chunks={"time": -1, "y": n}``); otherwise a dask rechunk, which holds the series of the
    rechunked region in memory while it runs.
    """
    if not is_dask(da):
        return da
    da = time_first(da)
    if len(da.chunks[0]) == 1:  # type: ignore[index]
        return da
    dims = spatial_dims(da)
    if not dims:
        return da.chunk({"time": -1})
    row_bytes = da.sizes["time"] * da.dtype.itemsize * int(np.prod([da.sizes[d] for d in dims[1:]]))
    rows = max(1, min(da.sizes[dims[0]], block_bytes // max(row_bytes, 1)))
    return da.chunk({"time": -1, dims[0]: rows, **{d: -1 for d in dims[1:]}})


@dataclass(frozen=True)
class Groups:
    """Contiguous groups of time steps (years or season-years)."""

    labels: np.ndarray  #: one label per group (e.g. the year)
    sizes: tuple[int, ...]  #: number of steps per group, in time order

    @classmethod
    def from_steps(cls, per_step: np.ndarray) -> Groups:
        """Groups from one label per time step; labels must be contiguous runs in time."""
        if per_step.size == 0:
            return cls(np.zeros(0, dtype=np.int64), ())
        starts = np.r_[0, np.flatnonzero(np.diff(per_step)) + 1]
        sizes = np.diff(np.r_[starts, per_step.size])
        labels = per_step[starts]
        if np.unique(labels).size != labels.size:
            raise ValueError("group labels must form contiguous runs in time")
        return cls(labels, tuple(int(s) for s in sizes))

    @property
    def bounds(self) -> list[tuple[int, int]]:
        """(start, stop) of every group along time."""
        ends = np.cumsum(self.sizes)
        return [(int(e - s), int(e)) for s, e in zip(self.sizes, ends, strict=True)]


def per_group(
    da: xr.DataArray,
    groups: Groups,
    fn: BlockFn,
    extra: np.ndarray,
    *,
    dim: str = "year",
    dtype: Any = np.float64,
) -> xr.DataArray:
    """Apply ``fn(block, extra_block)`` to each group of time steps of ``da``.

    ``block`` is the group's data with time first (NumPy), ``extra_block`` the matching slice of
    ``extra`` (a per-step NumPy array, e.g. spell breaks); ``fn`` returns the reduced spatial
    field. The result has dimension ``dim`` (labelled by ``groups.labels``) then the spatial dims.
    """
    da = time_first(da)
    sdims = spatial_dims(da)
    coords = {k: v for k, v in da.coords.items() if "time" not in v.dims}
    bounds = groups.bounds
    if is_dask(da):
        arr = da.data.rechunk({0: groups.sizes})

        def block(x: np.ndarray, block_info: dict[Any, Any] | None = None) -> np.ndarray:
            assert block_info is not None
            i = block_info[0]["chunk-location"][0]
            start, stop = bounds[i]
            return np.asarray(fn(x, extra[start:stop]), dtype=dtype)[None]

        out: Any = arr.map_blocks(block, chunks=((1,) * len(bounds), *arr.chunks[1:]), dtype=dtype)
    else:
        values = np.asarray(da.values)
        out = (
            np.stack([np.asarray(fn(values[a:b], extra[a:b]), dtype=dtype) for a, b in bounds])
            if bounds
            else np.zeros((0, *values.shape[1:]), dtype=dtype)
        )
    return xr.DataArray(out, dims=(dim, *sdims), coords={**coords, dim: groups.labels})


# ----------------------------------------------------------------------------- block functions
def nan_reduce(kind: str) -> BlockFn:
    """Block function: NaN-aware max/min/mean/sum over time; all-NaN points give NaN."""
    ops = {"max": np.fmax.reduce, "min": np.fmin.reduce}

    def fn(x: np.ndarray, _: np.ndarray) -> np.ndarray:
        valid = np.isfinite(x)
        n = valid.sum(axis=0)
        if kind in ops:
            out = ops[kind](x, axis=0) if x.shape[0] else np.full(x.shape[1:], np.nan)
        elif kind == "sum":
            out = np.where(valid, x, 0.0).sum(axis=0, dtype=np.float64)
        elif kind == "mean":
            out = np.where(valid, x, 0.0).sum(axis=0, dtype=np.float64) / np.maximum(n, 1)
        else:  # pragma: no cover - programming error
            raise ValueError(kind)
        return np.where(n > 0, out, np.nan)

    return fn


def count_where(predicate: Callable[[np.ndarray], np.ndarray]) -> BlockFn:
    """Block function: number of steps where ``predicate`` holds; NaN where all are missing."""

    def fn(x: np.ndarray, _: np.ndarray) -> np.ndarray:
        valid = np.isfinite(x)
        hits = (predicate(np.where(valid, x, 0.0)) & valid).sum(axis=0)
        return np.where(valid.any(axis=0), hits, np.nan)

    return fn


def longest_spell(predicate: Callable[[np.ndarray], np.ndarray]) -> BlockFn:
    """Block function: longest run of consecutive steps where ``predicate`` holds.

    ``extra`` is True at steps that do not follow the previous step by one day (a gap in the
    series, or the start of a season), where a run is cut. Missing values also cut a run: a
    spell is only counted on days known to be dry (or wet). All-missing points give NaN.
    """

    def fn(x: np.ndarray, breaks: np.ndarray) -> np.ndarray:
        valid = np.isfinite(x)
        hit = predicate(np.where(valid, x, 0.0)) & valid
        run = np.zeros(x.shape[1:], dtype=np.int64)
        best = np.zeros(x.shape[1:], dtype=np.int64)
        for t in range(x.shape[0]):
            run = np.where(hit[t], (0 if breaks[t] else run) + 1, 0)
            np.maximum(best, run, out=best)
        return np.where(valid.any(axis=0), best, np.nan)

    return fn


# ----------------------------------------------------------------------------- quantiles
def _pick(sorted_vals: np.ndarray, n: np.ndarray, q: float, largest: bool) -> np.ndarray:
    """Linear-interpolated quantile (NumPy's default) from the k extreme sorted values."""
    n = n.astype(np.int64)
    h = (np.maximum(n, 1) - 1) * q
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    frac = h - lo
    k = sorted_vals.shape[0]
    if largest:  # descending: ascending index j is at position n - 1 - j
        i_lo, i_hi = n - 1 - lo, n - 1 - hi
    else:
        i_lo, i_hi = lo, hi
    i_lo = np.clip(i_lo, 0, k - 1)
    i_hi = np.clip(i_hi, 0, k - 1)
    v_lo = np.take_along_axis(sorted_vals, i_lo[None], axis=0)[0].astype(np.float64)
    v_hi = np.take_along_axis(sorted_vals, i_hi[None], axis=0)[0].astype(np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf at points without values: NaN below
        out = v_lo + (v_hi - v_lo) * frac
    return np.where(n > 0, out, np.nan)


def quantile(da: xr.DataArray, q: float) -> xr.DataArray:
    """Quantile ``q`` over time at every point (NumPy "linear" definition, NaNs skipped).

    Tail quantiles of dask data use ``dask.array.topk`` (the k = (1 - q)(T - 1) + 2 largest values,
    or the smallest for q < 0.5), which is exact and needs only k values per point at a time.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is outside [0, 1]")
    da = time_first(da)
    nt = da.sizes["time"]
    largest = q >= 0.5
    k = math.floor((nt - 1) * ((1.0 - q) if largest else q)) + 2
    if not is_dask(da) or k > _TOPK_MAX_FRACTION * nt or nt < 4:
        core = time_core(da).astype(np.float64)  # interpolate in float64, as the top-k path
        with warnings.catch_warnings():  # points without values give NaN, as documented
            warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
            out = core.quantile(q, dim="time", skipna=True)
        return out.drop_vars("quantile")
    k = min(k, nt)
    sdims = spatial_dims(da)
    coords = {k_: v for k_, v in da.coords.items() if "time" not in v.dims}
    arr = da.data.rechunk({i: -1 for i in range(1, da.ndim)})
    dtype = np.float32 if arr.dtype == np.float32 else np.float64
    parts = arr.map_blocks(
        _extremes_block,
        k=k,
        largest=largest,
        dtype=dtype,
        chunks=(tuple(min(k, c) for c in arr.chunks[0]), *arr.chunks[1:]),
    )
    while parts.numblocks[0] > 1:  # tree merge: memory bounded by a few blocks of k values
        sizes = parts.chunks[0]
        merged = tuple(sum(sizes[i : i + _MERGE]) for i in range(0, len(sizes), _MERGE))
        parts = parts.rechunk({0: merged}).map_blocks(
            _extremes_block,
            k=k,
            largest=largest,
            dtype=dtype,
            chunks=(tuple(min(k, c) for c in merged), *parts.chunks[1:]),
        )
    counts = da.notnull().sum("time").data
    out = dsa.map_blocks(
        lambda s, c: _pick(s, c[0], q, largest),
        parts,
        counts[None],
        drop_axis=0,
        dtype=np.float64,
    )
    return xr.DataArray(out, dims=sdims, coords=coords)


#: Blocks of extremes merged per task in the tree reduction of :func:`quantile`.
_MERGE = 4


def _extremes_block(x: np.ndarray, k: int, largest: bool, piece: int = 4096) -> np.ndarray:
    """The ``k`` largest (descending) or smallest (ascending) values along axis 0, NaNs last.

    Partitions along a contiguous last axis (a transposed copy of ``piece`` points at a time),
    which is several times faster than along the strided time axis.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    n = x.shape[0]
    k = min(k, n)
    flat_in = x.reshape(n, -1)
    out = np.empty((k, flat_in.shape[1]), dtype=x.dtype)
    for start in range(0, flat_in.shape[1], piece):
        flat = np.ascontiguousarray(flat_in[:, start : start + piece].T)  # (points, time)
        flat[np.isnan(flat)] = -np.inf if largest else np.inf
        if largest:
            np.negative(flat, out=flat)
        if k < n:
            flat = np.partition(flat, k - 1, axis=1)[:, :k]
        flat.sort(axis=1)
        if largest:
            np.negative(flat, out=flat)
        out[:, start : start + piece] = flat.T
    return out.reshape(k, *x.shape[1:])
