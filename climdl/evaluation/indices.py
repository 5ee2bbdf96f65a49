"""Climate indices of one simulation (CORDEX ML-Bench ``evaluation`` indices, ETCCDI definitions).

Every index takes a DataArray with a ``time`` dimension (NumPy or Dask backed, any CF calendar)
and returns a lazy field over the remaining (spatial) dimensions, in the data's units unless
said otherwise. ``season`` (``DJF``/``MAM``/``JJA``/``SON`` or the benchmark's words) restricts
the index to that season. Thresholds are quantities with units (``"25 degC"``, ``"1 mm/day"``)
converted to the data's own units (see :mod:`climdl.evaluation.thresholds`).

Annual indices (TXx, TXn, Rx1day, SU, CDD, CWD, interannual variability) are computed per year,
or per season-year with a season (a winter is the contiguous December-February, December counted
with the following year), then averaged over years. Years or seasons with fewer than 80 % of the
days of the fullest one are left out (a lone December or half year would bias the mean). Missing
values (NaN) are skipped; points missing throughout give NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from climdl.errors import ConfigError, DataError
from climdl.evaluation import _pairs, _reduce, _time
from climdl.evaluation.thresholds import Threshold, threshold_for, to_data_units

#: ETCCDI summer days: TX > 25 degC.
SUMMER_THRESHOLD = "25 degC"
#: ETCCDI wet day: RR >= 1 mm (per day); CDD counts days below it, CWD, SDII days at or above it.
WET_THRESHOLD = "1 mm/day"


def _prep(da: xr.DataArray, season: str | None) -> xr.DataArray:
    if "time" not in da.dims:
        raise DataError(f"{da.name or 'the variable'} has no time dimension; indices need one.")
    return _time.select_season(_reduce.time_first(da), season)


def _annual(
    da: xr.DataArray,
    season: str | None,
    fn: _reduce.BlockFn,
    *,
    need_breaks: bool = False,
) -> xr.DataArray:
    """Per (season-)year values of ``fn`` over complete years/seasons: dims (year, ...)."""
    da = _prep(da, season)
    years = _time.season_years(da["time"], season)
    keep = _time.complete_groups(years)
    if not keep.all():
        da = da.isel(time=np.flatnonzero(keep))
        years = years[keep]
    if da.sizes["time"] == 0:
        raise DataError(
            f"no complete {'year' if season is None else _time.normalise_season(season)} in the "
            "series; an annual index needs at least one."
        )
    groups = _reduce.Groups.from_steps(years)
    extra = np.zeros(years.size, dtype=bool)
    if need_breaks:
        days = _time.day_numbers(da["time"])
        extra = np.r_[True, np.diff(days) != 1]
    return _reduce.per_group(da, groups, fn, extra)


def _finish(out: xr.DataArray, name: str, attrs: dict[str, Any]) -> xr.DataArray:
    out = out.rename(name)
    out.attrs = attrs
    return out


# ----------------------------------------------------------------------------- indices
def mean(da: xr.DataArray, *, season: str | None = None) -> xr.DataArray:
    """Time mean (ML-Bench ``mean``), NaNs skipped.

    Args:
        da: daily series with a ``time`` dimension (NumPy or Dask backed).
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        The mean per grid point, in the data's units.

    Raises:
        DataError: ``da`` has no time dimension.
        ConfigError: an unknown season.
    """
    x = _prep(da, season)
    out = x.mean("time", skipna=True, dtype=np.float64)
    return _finish(out, "mean", {"units": da.attrs.get("units", ""), "long_name": "mean"})


def quantile(da: xr.DataArray, q: float, *, season: str | None = None) -> xr.DataArray:
    """Quantile ``q`` (0-1) over time of all values (ML-Bench ``quantile``; NumPy "linear").

    Args:
        da: daily series with a ``time`` dimension (NumPy or Dask backed).
        q: the quantile, between 0 and 1.
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        The quantile per grid point, in the data's units.

    Raises:
        DataError: ``da`` has no time dimension.
        ConfigError: an unknown season.
    """
    out = _reduce.quantile(_prep(da, season), q)
    return _finish(
        out, f"p{q * 100:g}", {"units": da.attrs.get("units", ""), "long_name": f"{q:g} quantile"}
    )


def summer_days(
    da: xr.DataArray, *, threshold: Threshold = SUMMER_THRESHOLD, season: str | None = None
) -> xr.DataArray:
    """SU: mean annual number of days with daily maximum temperature above ``threshold``.

    ETCCDI SU counts TX > 25 degC. The benchmark's ``su`` takes a bare default of 300.0 while its
    docstring says 25 degC; here the threshold carries units and is converted to the data's.

    Args:
        da: daily series with a ``time`` dimension (NumPy or Dask backed).
        threshold: a day counts above it (a quantity with units, e.g. ``"25 degC"``).
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        Mean days per year (season) per grid point.

    Raises:
        DataError: ``da`` has no time dimension, or no complete year (season).
        ConfigError: an unknown season.
    """
    thr = threshold_for(da, threshold, what="summer-day threshold")
    yearly = _annual(da, season, _reduce.count_where(lambda x: x > thr))
    out = yearly.mean("year")
    return _finish(out, "su", {"units": "days", "long_name": f"days with values > {threshold}"})


def txx(da: xr.DataArray, *, season: str | None = None) -> xr.DataArray:
    """TXx: mean over years of the annual (seasonal) maximum of daily maximum temperature.

    Args:
        da: daily series with a ``time`` dimension (NumPy or Dask backed).
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        The mean annual maximum per grid point, in the data's units.

    Raises:
        DataError: ``da`` has no time dimension, or no complete year (season).
        ConfigError: an unknown season.
    """
    out = _annual(da, season, _reduce.nan_reduce("max")).mean("year")
    return _finish(
        out, "txx", {"units": da.attrs.get("units", ""), "long_name": "mean annual maximum"}
    )


def txn(da: xr.DataArray, *, season: str | None = None) -> xr.DataArray:
    """TXn: mean over years of the annual (seasonal) minimum of daily maximum temperature.

    Args:
        da: daily series with a ``time`` dimension (NumPy or Dask backed).
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        The mean annual minimum per grid point, in the data's units.

    Raises:
        DataError: ``da`` has no time dimension, or no complete year (season).
        ConfigError: an unknown season.
    """
    out = _annual(da, season, _reduce.nan_reduce("min")).mean("year")
    return _finish(
        out, "txn", {"units": da.attrs.get("units", ""), "long_name": "mean annual minimum"}
    )


def rx1day(da: xr.DataArray, *, season: str | None = None) -> xr.DataArray:
    """Rx1day: mean over years of the annual (seasonal) maximum 1-day precipitation.

    Args:
        da: daily series with a ``time`` dimension (NumPy or Dask backed).
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        The mean annual maximum per grid point, in the data's units.

    Raises:
        DataError: ``da`` has no time dimension, or no complete year (season).
        ConfigError: an unknown season.
    """
    out = _annual(da, season, _reduce.nan_reduce("max")).mean("year")
    return _finish(
        out,
        "rx1day",
        {"units": da.attrs.get("units", ""), "long_name": "mean annual maximum 1-day"},
    )


def sdii(
    da: xr.DataArray, *, wet_threshold: Threshold = WET_THRESHOLD, season: str | None = None
) -> xr.DataArray:
    """SDII: mean precipitation of wet days (>= ``wet_threshold``) over the period.

    ML-Bench "mean precipitation on wet days"; ETCCDI's SDII is the same ratio per year. Points
    without a wet day give NaN.

    Args:
        da: daily series with a ``time`` dimension (NumPy or Dask backed).
        wet_threshold: a day is wet at or above it (a quantity with units).
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        The wet-day mean per grid point, in the data's units.

    Raises:
        DataError: ``da`` has no time dimension.
        ConfigError: an unknown season.
    """
    thr = threshold_for(da, wet_threshold, what="wet-day threshold")
    x = _prep(da, season)
    wet = x >= thr
    total = x.where(wet, 0.0).sum("time", dtype=np.float64)
    days = wet.sum("time")
    out = total / days.where(days > 0)
    return _finish(
        out,
        "sdii",
        {"units": da.attrs.get("units", ""), "long_name": f"mean on days >= {wet_threshold}"},
    )


def cdd(
    da: xr.DataArray, *, dry_threshold: Threshold = WET_THRESHOLD, season: str | None = None
) -> xr.DataArray:
    """CDD: mean over years of the longest run of consecutive days with pr < ``dry_threshold``.

    Runs are cut at year (season-year) ends, at gaps in the series and at missing values. With a
    season, only runs inside the season count (a DJF run is cut at the end of February).

    Args:
        da: daily series with a ``time`` dimension (NumPy or Dask backed).
        dry_threshold: a day is dry below it (a quantity with units, e.g. ``"1 mm/day"``).
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        Mean longest dry spell (days) per grid point.

    Raises:
        DataError: ``da`` has no time dimension, or no complete year (season).
        ConfigError: an unknown season.
    """
    thr = threshold_for(da, dry_threshold, what="dry-day threshold")
    out = _annual(da, season, _reduce.longest_spell(lambda x: x < thr), need_breaks=True)
    return _finish(
        out.mean("year"), "cdd", {"units": "days", "long_name": "mean annual max dry spell"}
    )


def cwd(
    da: xr.DataArray, *, wet_threshold: Threshold = WET_THRESHOLD, season: str | None = None
) -> xr.DataArray:
    """CWD: mean over years of the longest run of consecutive days with pr >= ``wet_threshold``.

    Args:
        da: daily series with a ``time`` dimension (NumPy or Dask backed).
        wet_threshold: a day is wet at or above it (a quantity with units).
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        Mean longest wet spell (days) per grid point.

    Raises:
        DataError: ``da`` has no time dimension, or no complete year (season).
        ConfigError: an unknown season.
    """
    thr = threshold_for(da, wet_threshold, what="wet-day threshold")
    out = _annual(da, season, _reduce.longest_spell(lambda x: x >= thr), need_breaks=True)
    return _finish(
        out.mean("year"), "cwd", {"units": "days", "long_name": "mean annual max wet spell"}
    )


def lag1_autocorrelation(da: xr.DataArray, *, season: str | None = None) -> xr.DataArray:
    """Lag-1 autocorrelation: Pearson correlation of (x[t], x[t+1]) over pairs of consecutive days.

    Only pairs one day apart and both in the season enter (the benchmark correlates the filtered
    series with itself shifted, which pairs 28 February with 1 December in DJF). Computed from
    one-pass sums (:func:`climdl.evaluation._pairs.pair_sums`), so it streams over Dask chunks.

    Args:
        da: daily series with a ``time`` dimension (NumPy or Dask backed).
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        The autocorrelation per grid point.

    Raises:
        DataError: ``da`` has no time dimension.
        ConfigError: an unknown season.
    """
    x = _reduce.time_first(da)
    if "time" not in x.dims:
        raise DataError("lag-1 autocorrelation needs a time dimension.")
    days = _time.day_numbers(x["time"])
    ok = np.r_[np.diff(days) == 1, False]
    in_season = _time.season_mask(x["time"], season)
    ok &= in_season & np.r_[in_season[1:], False]
    if np.count_nonzero(ok) < 2:
        raise DataError(
            "fewer than two pairs of consecutive days; lag-1 autocorrelation needs more."
        )
    following = x.shift(time=-1)  # x[t + 1] at t (NaN at the end, which is not a valid pair)
    sums = _pairs.pair_sums(x, following, np.where(ok, 0, -1), 1)
    out = _pairs.pair_stats(sums).corr
    return _finish(out, "lag1", {"units": "1", "long_name": "lag-1 autocorrelation"})


def interannual_variability(da: xr.DataArray, *, season: str | None = None) -> xr.DataArray:
    """Standard deviation (ddof 0) of annual (seasonal) means over years (ML-Bench).

    NaN with fewer than two complete years (seasons): a spread needs two values.

    Args:
        da: daily series with a ``time`` dimension (NumPy or Dask backed).
        season: only the days of ``DJF``, ``MAM``, ``JJA`` or ``SON`` (or the benchmark's words);
            None: all days.

    Returns:
        The standard deviation per grid point.

    Raises:
        DataError: ``da`` has no time dimension, or no complete year (season).
        ConfigError: an unknown season.
    """
    yearly = _annual(da, season, _reduce.nan_reduce("mean"))
    n = yearly.notnull().sum("year")
    n = n.where(n >= 2)  # (dask's nanstd would warn at points without values)
    centred = yearly - yearly.sum("year") / n
    out = ((centred**2).sum("year") / n) ** 0.5
    return _finish(
        out, "iav", {"units": da.attrs.get("units", ""), "long_name": "std of annual means"}
    )


# ----------------------------------------------------------------------------- registry
IndexFn = Callable[..., xr.DataArray]


@dataclass(frozen=True)
class IndexSpec:
    """An index in the evaluation: the function, its keyword arguments and how to compare it."""

    name: str
    fn: IndexFn
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    ratio: bool = False  #: compare as a ratio too (precipitation amounts, variability)
    #: defined on daily values only (counts or runs of days, daily extremes, day-to-day pairs):
    #: left out for monthly or sub-daily series
    daily: bool = False

    def __call__(self, da: xr.DataArray, season: str | None = None) -> xr.DataArray:
        """The index of ``da`` over all days or one season, with this spec's keyword arguments."""
        return self.fn(da, season=season, **self.kwargs)


@dataclass(frozen=True)
class Thresholds:
    """The thresholds of the evaluated indices, as quantities with units."""

    summer: Threshold = SUMMER_THRESHOLD  #: SU: days with tasmax above it
    wet: Threshold = WET_THRESHOLD  #: wet day (SDII, CWD) at or above it; dry day (CDD) below

    def check(self) -> Thresholds:
        """Raise ConfigError now for a threshold without units, of the wrong kind, not finite,
        or (the wet-day threshold) negative: precipitation is never below 0, so a negative
        threshold would count every day as wet without saying so."""
        summer = to_data_units(self.summer, "K", what="summer-day threshold")
        wet = to_data_units(self.wet, "mm day-1", what="wet-day threshold")
        if not math.isfinite(summer):
            raise ConfigError(
                f"the summer-day threshold (--summer-threshold) {self.summer!r} is not a finite "
                "number; give a temperature such as '25 degC'."
            )
        if not math.isfinite(wet) or wet < 0:
            problem = "is negative" if wet < 0 else "is not a finite number"
            raise ConfigError(
                f"the wet-day threshold (--wet-threshold) {self.wet!r} {problem}; give a "
                "precipitation rate of 0 or more, such as '1 mm/day'."
            )
        return self


def default_indices(
    variable: str, thresholds: Thresholds | None = None, *, daily: bool = True
) -> list[IndexSpec]:
    """The indices evaluated for a canonical variable (ML-Bench set per variable).

    ``daily=False`` (monthly, sub-daily series) leaves out the indices defined on daily values.
    """
    specs = _default_indices(variable, thresholds)
    return specs if daily else [s for s in specs if not s.daily]


def _default_indices(variable: str, thresholds: Thresholds | None) -> list[IndexSpec]:
    th = thresholds if thresholds is not None else Thresholds()
    common_tail = [
        IndexSpec("lag1", lag1_autocorrelation, label="lag-1 autocorrelation", daily=True),
        IndexSpec("iav", interannual_variability, label="interannual variability", ratio=True),
    ]
    if variable in ("tasmax", "tas", "tasmin"):
        temp = [
            IndexSpec("mean", mean, label="mean"),
            IndexSpec("p01", quantile, {"q": 0.01}, label="P01"),
            IndexSpec("p99", quantile, {"q": 0.99}, label="P99"),
        ]
        if variable == "tasmax":
            temp += [
                IndexSpec(
                    "su",
                    summer_days,
                    {"threshold": th.summer},
                    label=f"summer days (>{th.summer})",
                    daily=True,
                ),
                IndexSpec("txx", txx, label="TXx", daily=True),
                IndexSpec("txn", txn, label="TXn", daily=True),
            ]
        return temp + common_tail
    if variable == "pr":
        return [
            IndexSpec("mean", mean, label="mean", ratio=True),
            IndexSpec("p99", quantile, {"q": 0.99}, label="P99", ratio=True),
            IndexSpec("rx1day", rx1day, label="Rx1day", ratio=True, daily=True),
            IndexSpec(
                "sdii", sdii, {"wet_threshold": th.wet}, label="SDII", ratio=True, daily=True
            ),
            IndexSpec("cdd", cdd, {"dry_threshold": th.wet}, label="CDD", ratio=True, daily=True),
            IndexSpec("cwd", cwd, {"wet_threshold": th.wet}, label="CWD", ratio=True, daily=True),
            *common_tail,
        ]
    return [
        IndexSpec("mean", mean, label="mean"),
        IndexSpec("p01", quantile, {"q": 0.01}, label="P01"),
        IndexSpec("p99", quantile, {"q": 0.99}, label="P99"),
        *common_tail,
    ]


INDICES: dict[str, IndexFn] = {
    "mean": mean,
    "quantile": quantile,
    "su": summer_days,
    "txx": txx,
    "txn": txn,
    "rx1day": rx1day,
    "sdii": sdii,
    "cdd": cdd,
    "cwd": cwd,
    "lag1": lag1_autocorrelation,
    "iav": interannual_variability,
}
