"""One-pass statistics of a truth/prediction pair over time, lazy and bounded in memory.

:func:`pair_sums` gives counts, sums, squares and products of two series in one pass of a fused
kernel per chunk (float64 sums), from which RMSE, bias, correlation and the ratio of standard
deviations follow (:class:`PairStats`); ``xr.corr`` would instead keep the whole series in
memory while its means are computed. :func:`daily_pattern_correlation` does the same per time
step over space. :func:`aligned` and :func:`named` check, season-select and label a pair for
the diagnostics (:mod:`climdl.evaluation.diagnostics`, :mod:`climdl.evaluation.distributions`).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr

from climdl.errors import DataError
from climdl.evaluation import _time
from climdl.evaluation._reduce import is_dask, spatial_dims, time_first


def aligned(
    truth: xr.DataArray, pred: xr.DataArray, season: str | None
) -> tuple[xr.DataArray, xr.DataArray]:
    """Truth and prediction, time first, on the days of ``season``.

    Raises:
        DataError: truth and prediction differ in shape (align them first).
        ConfigError: an unknown season.
    """
    if truth.sizes != pred.sizes:
        raise DataError(
            f"truth and prediction differ in shape ({dict(truth.sizes)} vs {dict(pred.sizes)}); "
            "align them on common days and one grid first."
        )
    return (
        _time.select_season(time_first(truth), season),
        _time.select_season(time_first(pred), season),
    )


def named(da: xr.DataArray, name: str, units: str, long_name: str) -> xr.DataArray:
    """``da`` renamed ``name``, with only ``units`` and ``long_name`` as attributes."""
    da = da.rename(name)
    da.attrs = {"units": units, "long_name": long_name}
    return da


def _reference(da: xr.DataArray) -> float:
    """A constant near typical values: 273.15 for kelvin, else 0."""
    units = str(da.attrs.get("units", "")).strip()
    return 273.15 if units in ("K", "kelvin", "degK") else 0.0


#: The sums :func:`pair_sums` accumulates per group and point (values centred on a reference).
PAIR_STATS = ("n", "st", "sp", "stt", "spp", "stp", "sdd")


def _pair_block(
    t: np.ndarray, p: np.ndarray, codes: np.ndarray, ngroups: int, ref: tuple[float, float]
) -> np.ndarray:
    """The :data:`PAIR_STATS` sums of one block per group: shape (7, ngroups, *spatial).

    Element-wise work is done in the data's precision (float32 for model output) on values
    minus the reference; every sum accumulates in float64.
    """
    out = np.zeros((len(PAIR_STATS), ngroups, *t.shape[1:]), dtype=np.float64)
    dtype = np.result_type(t.dtype, p.dtype, np.float32)
    f64 = np.float64
    for g in range(ngroups):
        sel = np.flatnonzero(codes == g)
        for start in range(0, sel.size, 128):  # bounded temporaries
            idx = sel[start : start + 128]
            a = t[idx].astype(dtype) - dtype.type(ref[0])
            b = p[idx].astype(dtype) - dtype.type(ref[1])
            valid = np.isfinite(a) & np.isfinite(b)
            a[~valid] = 0
            b[~valid] = 0
            d = b - a if ref[0] == ref[1] else b - a + dtype.type(ref[1] - ref[0])
            d[~valid] = 0
            out[0, g] += valid.sum(axis=0)
            out[1, g] += a.sum(axis=0, dtype=f64)
            out[2, g] += b.sum(axis=0, dtype=f64)
            out[3, g] += np.einsum("i...,i...->...", a, a, dtype=f64)
            out[4, g] += np.einsum("i...,i...->...", b, b, dtype=f64)
            out[5, g] += np.einsum("i...,i...->...", a, b, dtype=f64)
            out[6, g] += np.einsum("i...,i...->...", d, d, dtype=f64)
    return out


def pair_sums(
    truth: xr.DataArray, pred: xr.DataArray, codes: np.ndarray, ngroups: int
) -> xr.DataArray:
    """One-pass sums of a truth/prediction pair over time, per group of steps and point.

    ``codes`` gives each time step a group in ``0..ngroups-1`` (e.g. its season), or -1 to
    leave it out. The result has dims ``(stat, group, *spatial)`` with ``stat`` in
    :data:`PAIR_STATS`: the number of steps where both are valid and the sums of the truth, the
    prediction, their squares, their product and the squared difference over those steps (values
    minus a constant reference per side, 273.15 for kelvin, which leaves variances and
    covariances unchanged and keeps rounding small). One fused NumPy kernel per chunk, so a
    chunk is read once and no full-size temporaries are kept.
    """
    t, p = time_first(truth), time_first(pred)
    ref = (_reference(truth), _reference(pred))
    sdims = spatial_dims(t)
    coords = {k: v for k, v in t.coords.items() if "time" not in v.dims}
    if is_dask(t) or is_dask(p):
        tt = t.data if is_dask(t) else dsa.from_array(t.values, chunks=-1)
        tt = tt.rechunk({i: -1 for i in range(1, tt.ndim)})
        pp = dsa.asarray(p.data).rechunk(tt.chunks)
        starts = np.r_[0, np.cumsum(tt.chunks[0])]

        def block(
            a: np.ndarray, b: np.ndarray, block_info: dict[Any, Any] | None = None
        ) -> np.ndarray:
            assert block_info is not None
            i = block_info[0]["chunk-location"][0]
            return _pair_block(a, b, codes[starts[i] : starts[i + 1]], ngroups, ref)[None]

        parts = dsa.map_blocks(
            block,
            tt,
            pp,
            new_axis=[1, 2],
            dtype=np.float64,
            chunks=((1,) * tt.numblocks[0], (len(PAIR_STATS),), (ngroups,), *tt.chunks[1:]),
        )
        data: Any = parts.sum(axis=0)
    else:
        data = _pair_block(np.asarray(t.values), np.asarray(p.values), codes, ngroups, ref)
    return xr.DataArray(
        data,
        dims=("stat", "group", *sdims),
        coords={**coords, "stat": list(PAIR_STATS)},
        attrs={"reference": list(ref)},
    )


class PairStats:
    """Diagnostics of a truth/prediction pair from :func:`pair_sums` (summed over groups).

    Derived quantities are cached: the evaluation asks for several of them.
    """

    def __init__(self, sums: xr.DataArray) -> None:
        self.sums = sums  #: dims (stat, *spatial), no group

    def _s(self, name: str) -> xr.DataArray:
        return self.sums.sel(stat=name, drop=True)

    @cached_property
    def n(self) -> xr.DataArray:
        return self._s("n")

    @cached_property
    def _nn(self) -> xr.DataArray:
        return self.n.where(self.n > 0)

    @cached_property
    def mean_t(self) -> xr.DataArray:
        """Time mean of the truth (minus its reference)."""
        return self._s("st") / self._nn

    @cached_property
    def mean_p(self) -> xr.DataArray:
        return self._s("sp") / self._nn

    @cached_property
    def bias(self) -> xr.DataArray:
        """Time mean of ``pred - truth``."""
        ref = self.sums.attrs.get("reference", [0.0, 0.0])
        return self.mean_p - self.mean_t + (ref[1] - ref[0])

    @cached_property
    def mse(self) -> xr.DataArray:
        return self._s("sdd") / self._nn

    def rmse_all(self) -> xr.DataArray:
        """RMSE over all points and steps (one number)."""
        n = self.n.sum()
        return (self._s("sdd").sum() / n.where(n > 0)) ** 0.5

    @cached_property
    def _var_t(self) -> xr.DataArray:
        return (self._s("stt") / self._nn - self.mean_t**2).clip(min=0.0)

    @cached_property
    def _var_p(self) -> xr.DataArray:
        return (self._s("spp") / self._nn - self.mean_p**2).clip(min=0.0)

    @cached_property
    def corr(self) -> xr.DataArray:
        """Pearson correlation over time; NaN for constant series or fewer than 2 pairs."""
        cov = self._s("stp") / self._nn - self.mean_t * self.mean_p
        den = (self._var_t * self._var_p) ** 0.5
        return cov.where(self.n > 1) / den.where(den > 0)

    @cached_property
    def std_ratio(self) -> xr.DataArray:
        """``std(pred) / std(truth)`` over time."""
        vt = self._var_t
        return (self._var_p / vt.where(vt > 0)) ** 0.5


def pair_stats(sums: xr.DataArray, group: int | None = None) -> PairStats:
    """:class:`PairStats` of one group of :func:`pair_sums`, or of all groups together."""
    one = sums.sum("group", keep_attrs=True) if group is None else sums.isel(group=group, drop=True)
    return PairStats(one)


def _daily_corr_block(
    t: np.ndarray, p: np.ndarray, ref: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """Pattern correlation of each step's two fields over all valid points: shape (steps,)."""
    dtype = np.result_type(t.dtype, p.dtype, np.float32)
    a = t.reshape(t.shape[0], -1).astype(dtype) - dtype.type(ref[0])
    b = p.reshape(p.shape[0], -1).astype(dtype) - dtype.type(ref[1])
    valid = np.isfinite(a) & np.isfinite(b)
    a[~valid] = 0
    b[~valid] = 0
    f64 = np.float64
    n = valid.sum(axis=1)
    nn = np.where(n > 0, n, 1)
    sa, sb = a.sum(axis=1, dtype=f64), b.sum(axis=1, dtype=f64)
    saa = np.einsum("ij,ij->i", a, a, dtype=f64)
    sbb = np.einsum("ij,ij->i", b, b, dtype=f64)
    sab = np.einsum("ij,ij->i", a, b, dtype=f64)
    cov = sab / nn - sa * sb / nn**2
    va = np.maximum(saa / nn - (sa / nn) ** 2, 0.0)
    vb = np.maximum(sbb / nn - (sb / nn) ** 2, 0.0)
    den = np.sqrt(va * vb)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((den > 0) & (n > 1), cov / den, np.nan)


def daily_pattern_correlation(truth: xr.DataArray, pred: xr.DataArray) -> xr.DataArray:
    """Spatial (pattern) correlation of each day's fields: a series over time."""
    t, p = time_first(truth), time_first(pred)
    ref = (_reference(truth), _reference(pred))
    if is_dask(t) or is_dask(p):
        tt = t.data if is_dask(t) else dsa.from_array(t.values, chunks=-1)
        tt = tt.rechunk({i: -1 for i in range(1, tt.ndim)})
        pp = dsa.asarray(p.data).rechunk(tt.chunks)
        data: Any = dsa.map_blocks(
            _daily_corr_block,
            tt,
            pp,
            ref=ref,
            drop_axis=list(range(1, tt.ndim)),
            dtype=np.float64,
            chunks=(tt.chunks[0],),
        )
    else:
        data = _daily_corr_block(np.asarray(t.values), np.asarray(p.values), ref)
    return xr.DataArray(data, dims=("time",), coords={"time": t["time"]})
