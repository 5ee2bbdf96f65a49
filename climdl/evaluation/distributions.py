"""Distances between the value distributions of truth and prediction (ML-Bench Wasserstein).

A diagnostic of its own kind beside :mod:`climdl.evaluation.diagnostics` (errors, correlations,
index biases): here the values are compared as distributions, not day by day. The scalar
distance pools space and time into histograms on a fine fixed grid per variable
(:data:`HISTOGRAM_GRIDS`), counted chunk by chunk so the series streams; the evaluation passes
(:mod:`climdl.evaluation.passes`) keep those counts for the report and compute the distance from
them (:func:`wasserstein_from_histograms`). The per-point distance sorts each point's series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr

from climdl.errors import DataError
from climdl.evaluation import _pairs, _reduce

#: Histogram grids (low, high, bin width) in canonical units for the scalar Wasserstein distance:
#: fine enough that the binning error (at most one bin width) is negligible.
HISTOGRAM_GRIDS: dict[str, tuple[float, float, float]] = {
    "tasmax": (150.0, 350.0, 0.005),
    "tasmin": (150.0, 350.0, 0.005),
    "tas": (150.0, 350.0, 0.005),
    "pr": (0.0, 2000.0, 0.01),
}
_DEFAULT_BINS = 2**16


@dataclass(frozen=True)
class Histogram:
    """Counts of values on a regular grid of bins (lazy until computed)."""

    edges: np.ndarray
    counts: Any  #: NumPy or dask array of int64, one per bin

    def compute(self) -> Histogram:
        """The same histogram with its counts computed (a NumPy array)."""
        counts = self.counts.compute() if isinstance(self.counts, dsa.Array) else self.counts
        return Histogram(self.edges, np.asarray(counts))


def histogram_edges(
    variable: str | None, *arrays: xr.DataArray, bins: int = _DEFAULT_BINS
) -> np.ndarray:
    """Bin edges: the fixed grid for known variables, else ``bins`` bins over the data's range.

    The range of an unknown variable is computed eagerly (one pass over the data).
    """
    if variable in HISTOGRAM_GRIDS:
        lo, hi, width = HISTOGRAM_GRIDS[variable]
        return np.linspace(lo, hi, round((hi - lo) / width) + 1)
    lows = [a.min(skipna=True) for a in arrays]
    highs = [a.max(skipna=True) for a in arrays]
    vals = xr.concat([*lows, *highs], dim="k").compute().values.astype(np.float64)
    lo, hi = float(np.nanmin(vals[: len(lows)])), float(np.nanmax(vals[len(lows) :]))
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise DataError("the data have no valid values; nothing to compare.")
    if hi <= lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, bins + 1)


def _bin_counts(x: np.ndarray, lo: float, width: float, nbins: int) -> np.ndarray:
    """Counts of the valid values of ``x`` in ``nbins`` bins from ``lo``; outside -> end bins."""
    flat = np.asarray(x).ravel()
    counts = np.zeros(nbins, dtype=np.int64)
    for start in range(0, flat.size, 2**21):  # bounded temporaries
        v = flat[start : start + 2**21]
        v = v[np.isfinite(v)]
        idx = np.clip(np.floor((v.astype(np.float64) - lo) / width), 0, nbins - 1)
        counts += np.bincount(idx.astype(np.int64), minlength=nbins)
    return counts[None]


def histogram(da: xr.DataArray, edges: np.ndarray) -> Histogram:
    """Histogram of all valid values of ``da`` on regular ``edges``; values outside go to the
    end bins (one bincount per chunk, summed)."""
    nbins = edges.size - 1
    lo, width = float(edges[0]), float(edges[-1] - edges[0]) / nbins
    data = da.data
    if isinstance(data, dsa.Array):
        flat = data.reshape(data.shape[0], -1) if data.ndim > 1 else data[:, None]
        flat = flat.rechunk({1: -1})
        parts = flat.map_blocks(
            _bin_counts,
            lo=lo,
            width=width,
            nbins=nbins,
            dtype=np.int64,
            chunks=((1,) * flat.numblocks[0], (nbins,)),
        )
        return Histogram(edges, parts.sum(axis=0))
    return Histogram(edges, _bin_counts(np.asarray(data), lo, width, nbins)[0])


def wasserstein_from_histograms(h0: Histogram, h1: Histogram) -> float:
    """1-Wasserstein distance between two histograms on the same edges: ``int |F0 - F1| dx``."""
    if not np.array_equal(h0.edges, h1.edges):
        raise ValueError("histograms on different bins")
    c0 = np.asarray(h0.compute().counts, dtype=np.float64)
    c1 = np.asarray(h1.compute().counts, dtype=np.float64)
    if c0.sum() == 0 or c1.sum() == 0:
        return float("nan")
    f0 = np.cumsum(c0) / c0.sum()
    f1 = np.cumsum(c1) / c1.sum()
    return float(np.sum(np.abs(f0 - f1)[:-1] * np.diff(h0.edges)[:-1]))


def wasserstein_above(h0: Histogram, h1: Histogram, threshold: float) -> float:
    """1-Wasserstein distance between the parts of two histograms at or above ``threshold``,
    each normalised by its own count there: for pr the distance between the wet-day intensity
    distributions, which a wet-day frequency error does not mask (the all-values distance is
    dominated by the dry days)."""
    h0, h1 = h0.compute(), h1.compute()
    lower = h0.edges[:-1]
    keep = np.flatnonzero(lower >= threshold - 1e-9 * max(1.0, abs(threshold)))
    if keep.size == 0:
        return float("nan")
    first = int(keep[0])
    return wasserstein_from_histograms(
        Histogram(h0.edges[first:], np.asarray(h0.counts)[first:]),
        Histogram(h1.edges[first:], np.asarray(h1.counts)[first:]),
    )


def wasserstein_distance(
    truth: xr.DataArray,
    pred: xr.DataArray,
    *,
    season: str | None = None,
    spatial: bool = False,
    variable: str | None = None,
) -> xr.DataArray:
    """1-Wasserstein distance between the value distributions of truth and prediction (ML-Bench).

    ``spatial=False``: one number over all values (space and time pooled), from histograms on a
    fine fixed grid (binning error at most one bin width: 0.005 K, 0.01 mm/day; ``variable``
    picks the grid, default the DataArray's name); this streams over chunks. ``spatial=True``:
    a field, the exact distance between the time series' distributions at each grid point
    (mean absolute difference of the sorted values over the days both sides have), which needs
    each point's whole series in one chunk (see :func:`climdl.evaluation._reduce.time_core`).

    Args:
        truth: the reference (RCM) series.
        pred: the prediction, on the same days and grid.
        spatial: a map of per-point distances instead of one pooled number.
        variable: the histogram grid's variable (default: the DataArray's name).
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        A 0-d DataArray (``spatial=False``) or a map (``spatial=True``), in the data's units.

    Raises:
        DataError: truth and prediction differ in shape (align them first), or no valid values.
        ConfigError: an unknown season.
    """
    t, p = _pairs.aligned(truth, pred, season)
    units = truth.attrs.get("units", "")
    if not spatial:
        name = variable if variable is not None else (str(truth.name) if truth.name else None)
        edges = histogram_edges(name, t, p)
        value = wasserstein_from_histograms(histogram(t, edges), histogram(p, edges))
        return _pairs.named(xr.DataArray(value), "wasserstein", units, "Wasserstein distance")
    t, p = _reduce.time_core(t), _reduce.time_core(p)
    if _reduce.is_dask(t) and _reduce.is_dask(p):
        p = p.chunk(t.chunksizes)
    out = xr.apply_ufunc(
        _wasserstein_series,
        t,
        p,
        input_core_dims=[["time"], ["time"]],
        dask="parallelized",
        output_dtypes=[np.float64],
    )
    return _pairs.named(out, "wasserstein_map", units, "Wasserstein distance over time")


def _wasserstein_series(a: np.ndarray, b: np.ndarray, piece: int = 512) -> np.ndarray:
    """Exact W1 along the last axis over the steps where both are valid (equal sample sizes).

    Works on ``piece`` points at a time (bounded temporaries); sorts in the data's own
    precision (float32 sorts several times faster) and sums the differences in float64.
    """
    a, b = np.asarray(a), np.asarray(b)
    dtype = np.result_type(a.dtype, b.dtype, np.float32)
    shape = a.shape[:-1]
    fa = a.reshape(-1, a.shape[-1])
    fb = b.reshape(-1, b.shape[-1])
    out = np.full(fa.shape[0], np.nan)
    for start in range(0, fa.shape[0], piece):
        pa = fa[start : start + piece].astype(dtype)
        pb = fb[start : start + piece].astype(dtype)
        valid = np.isfinite(pa) & np.isfinite(pb)
        n = valid.sum(axis=-1)
        if not valid.all():
            pa[~valid] = np.inf  # sorted to the end, at the same places on both sides
            pb[~valid] = np.inf
        pa.sort(axis=-1)
        pb.sort(axis=-1)
        both = np.isfinite(pa) & np.isfinite(pb)  # the first n sorted values of each side
        pa[~both] = 0
        pb[~both] = 0
        total = np.abs(pa.astype(np.float64) - pb.astype(np.float64)).sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + piece] = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    return out.reshape(shape)
