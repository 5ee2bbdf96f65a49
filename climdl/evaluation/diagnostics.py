"""Diagnostics comparing a prediction with the truth (CORDEX ML-Bench ``evaluation`` diagnostics).

``truth`` is the reference simulation (the RCM, the benchmark's ``x0``), ``pred`` the emulator or
a baseline (``x1``); both are DataArrays on the same grid and days (see
:mod:`climdl.evaluation.inputs` for the alignment). Every function is lazy on Dask and streams
over time chunks except where noted; NaNs are skipped pairwise (a value counts only where both
sides have one). Each returns a field or a scalar DataArray; :mod:`climdl.evaluation.summary`
reduces every one to a single number. The distances between value distributions (histograms,
Wasserstein) are in :mod:`climdl.evaluation.distributions`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import xarray as xr

from climdl.errors import DataError
from climdl.evaluation import _pairs, _reduce, _time

IndexFn = Callable[..., xr.DataArray]


def _dims(da: xr.DataArray, dim: str | tuple[Hashable, ...] | None) -> tuple[Hashable, ...]:
    if dim is None:
        return tuple(da.dims)
    return (dim,) if isinstance(dim, str) else tuple(dim)


# ----------------------------------------------------------------------------- errors
def season_codes(time: xr.DataArray) -> np.ndarray:
    """0-3 for DJF, MAM, JJA, SON of each step (the groups of :func:`pair_statistics`)."""
    labels = np.asarray(time.dt.season.values)
    codes = np.full(labels.size, -1, dtype=np.int64)
    for i, s in enumerate(_time.SEASONS):
        codes[labels == s] = i
    return codes


def pair_statistics(
    truth: xr.DataArray, pred: xr.DataArray, *, by_season: bool = False
) -> xr.DataArray:
    """The one-pass sums behind RMSE, bias, temporal correlation and std ratio.

    Dims ``(stat, group, *spatial)``; one group (all steps), or the four seasons DJF, MAM, JJA,
    SON with ``by_season``. See :func:`climdl.evaluation._pairs.pair_sums`.
    """
    t, p = _pairs.aligned(truth, pred, None)
    if by_season:
        return _pairs.pair_sums(t, p, season_codes(t["time"]), len(_time.SEASONS))
    return _pairs.pair_sums(t, p, np.zeros(t.sizes["time"], dtype=np.int64), 1)


def _stats(truth: xr.DataArray, pred: xr.DataArray, season: str | None) -> _pairs.PairStats:
    t, p = _pairs.aligned(truth, pred, None)
    codes = np.where(_time.season_mask(t["time"], season), 0, -1).astype(np.int64)
    return _pairs.pair_stats(_pairs.pair_sums(t, p, codes, 1))


def rmse(
    truth: xr.DataArray,
    pred: xr.DataArray,
    *,
    season: str | None = None,
    dim: str | tuple[Hashable, ...] | None = None,
) -> xr.DataArray:
    """Root mean square error over ``dim`` (default: all dims, one number; ``"time"``: a map).

    Over all dims or time, computed from one-pass sums (a fused kernel per chunk); over other
    dims (e.g. the grid, giving a daily series) with xarray operations.

    Args:
        truth: the reference (RCM) series.
        pred: the prediction, on the same days and grid.
        dim: dimension(s) to reduce; None: all (one number); ``"time"``: a map.
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        The RMSE, reduced over ``dim``.

    Raises:
        DataError: truth and prediction differ in shape (align them first).
        ConfigError: an unknown season.
    """
    units = truth.attrs.get("units", "")
    if dim is None or dim == "time" or dim == ("time",):
        st = _stats(truth, pred, season)
        out = st.rmse_all() if dim is None else st.mse**0.5
        return _pairs.named(out, "rmse", units, "root mean square error")
    t, p = _pairs.aligned(truth, pred, season)
    d = (p.astype(np.float64) - t.astype(np.float64)) ** 2
    return _pairs.named(
        d.mean(_dims(d, dim), skipna=True) ** 0.5, "rmse", units, "root mean square error"
    )


def bias(
    truth: xr.DataArray,
    pred: xr.DataArray,
    *,
    season: str | None = None,
    dim: str | tuple[Hashable, ...] | None = "time",
) -> xr.DataArray:
    """Mean of ``pred - truth`` over ``dim`` (default time: the map of the bias of the mean).

    Args:
        truth: the reference (RCM) series.
        pred: the prediction, on the same days and grid.
        dim: dimension(s) to average over; None: all (one number).
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        The bias, reduced over ``dim``.

    Raises:
        DataError: truth and prediction differ in shape (align them first).
        ConfigError: an unknown season.
    """
    units = truth.attrs.get("units", "")
    long_name = "mean bias (prediction - truth)"
    if dim is None or dim == "time" or dim == ("time",):
        st = _stats(truth, pred, season)
        if dim is None:
            total = st.sums.sum([d for d in st.sums.dims if d != "stat"], keep_attrs=True)
            return _pairs.named(_pairs.PairStats(total).bias, "bias", units, long_name)
        return _pairs.named(st.bias, "bias", units, long_name)
    t, p = _pairs.aligned(truth, pred, season)
    d = p.astype(np.float64) - t.astype(np.float64)
    return _pairs.named(d.mean(_dims(d, dim), skipna=True), "bias", units, long_name)


# ----------------------------------------------------------------------------- correlation
def temporal_correlation(
    truth: xr.DataArray, pred: xr.DataArray, *, season: str | None = None
) -> xr.DataArray:
    """Pearson correlation over time at every grid point (daily values, one-pass sums).

    Args:
        truth: the reference (RCM) series.
        pred: the prediction, on the same days and grid.
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        The correlation per grid point.

    Raises:
        DataError: truth and prediction differ in shape (align them first).
        ConfigError: an unknown season.
    """
    return _pairs.named(_stats(truth, pred, season).corr, "corr_time", "1", "temporal correlation")


def spatial_correlation(
    truth: xr.DataArray, pred: xr.DataArray, *, season: str | None = None
) -> xr.DataArray:
    """Pattern (Pearson) correlation of each day's fields over the grid: a series over time.

    Args:
        truth: the reference (RCM) series.
        pred: the prediction, on the same days and grid.
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        The daily pattern correlation, a series over ``time``.

    Raises:
        DataError: truth and prediction differ in shape (align them first).
        ConfigError: an unknown season.
    """
    t, p = _pairs.aligned(truth, pred, season)
    out = _pairs.daily_pattern_correlation(t, p)
    return _pairs.named(out, "corr_space", "1", "spatial correlation")


def std_ratio(
    truth: xr.DataArray, pred: xr.DataArray, *, season: str | None = None
) -> xr.DataArray:
    """Ratio of the standard deviations over time, ``std(pred) / std(truth)``, per grid point.

    Args:
        truth: the reference (RCM) series.
        pred: the prediction, on the same days and grid.
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        The ratio per grid point.

    Raises:
        DataError: truth and prediction differ in shape (align them first).
        ConfigError: an unknown season.
    """
    out = _stats(truth, pred, season).std_ratio
    return _pairs.named(out, "std_ratio", "1", "ratio of standard deviations (prediction / truth)")


def bias_multivariable_correlation(
    truth: xr.Dataset,
    pred: xr.Dataset,
    var_x: str = "tasmax",
    var_y: str = "pr",
    *,
    season: str | None = None,
) -> xr.Dataset:
    """Bias of the temporal correlation between two variables (ML-Bench), per grid point.

    Returns the correlation in the truth, in the prediction and their difference
    (prediction - truth).

    Args:
        truth: the reference (RCM) dataset holding ``var_x`` and ``var_y``.
        pred: the prediction, on the same days and grid.
        var_x: the first variable.
        var_y: the second variable.
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        Dataset of the truth's, the prediction's correlation and their difference per grid point.

    Raises:
        DataError: a dataset lacks one of the variables, or the two differ in shape.
        ConfigError: an unknown season.
    """
    for name, ds in (("truth", truth), ("prediction", pred)):
        missing = [v for v in (var_x, var_y) if v not in ds]
        if missing:
            raise DataError(f"the {name} lacks {', '.join(missing)}; the correlation needs both.")

    def corr(ds: xr.Dataset) -> xr.DataArray:
        a, b = (_time.select_season(_reduce.time_first(ds[v]), season) for v in (var_x, var_y))
        return _pairs.pair_stats(_pairs.pair_sums(a, b, np.zeros(a.sizes["time"], int), 1)).corr

    c0, c1 = corr(truth), corr(pred)
    return xr.Dataset(
        {"correlation_truth": c0, "correlation_pred": c1, "correlation_bias": c1 - c0}
    )


# ----------------------------------------------------------------------------- indices
def bias_index(
    truth: xr.DataArray,
    pred: xr.DataArray,
    index_fn: IndexFn,
    *,
    season: str | None = None,
    relative: bool = False,
    **index_kwargs: Any,
) -> xr.DataArray:
    """``index(pred) - index(truth)`` (ML-Bench ``bias_index``); ``relative`` divides by truth's.

    Args:
        truth: the reference (RCM) series.
        pred: the prediction, on the same days and grid.
        index_fn: the index (e.g. :func:`~climdl.evaluation.indices.txx`).
        relative: divide the difference by the truth's index (NaN where it is 0).
        **index_kwargs: passed to ``index_fn`` (thresholds, quantile).
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        The index bias per grid point.

    Raises:
        DataError: truth and prediction differ in shape (align them first).
        ConfigError: an unknown season.
    """
    i0 = index_fn(truth, season=season, **index_kwargs)
    i1 = index_fn(pred, season=season, **index_kwargs)
    out = i1 - i0
    if relative:
        return _pairs.named(
            (out / i0).where(i0 != 0), "relative_bias", "1", "relative bias of index"
        )
    return _pairs.named(out, "bias_index", str(i0.attrs.get("units", "")), "bias of index")


def ratio_index(
    truth: xr.DataArray,
    pred: xr.DataArray,
    index_fn: IndexFn,
    *,
    season: str | None = None,
    **index_kwargs: Any,
) -> xr.DataArray:
    """``index(pred) / index(truth)`` (ML-Bench ``ratio_index``); NaN where the truth's is 0.

    Args:
        truth: the reference (RCM) series.
        pred: the prediction, on the same days and grid.
        index_fn: the index (e.g. :func:`~climdl.evaluation.indices.rx1day`).
        **index_kwargs: passed to ``index_fn`` (thresholds, quantile).
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        The index ratio per grid point.

    Raises:
        DataError: truth and prediction differ in shape (align them first).
        ConfigError: an unknown season.
    """
    i0 = index_fn(truth, season=season, **index_kwargs)
    i1 = index_fn(pred, season=season, **index_kwargs)
    return _pairs.named((i1 / i0).where(i0 != 0), "ratio_index", "1", "ratio of index")
