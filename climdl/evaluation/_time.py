"""Calendar helpers shared by the indices and diagnostics: seasons, season-years, day numbers.

Everything here works on the time coordinate only (small, in memory) and on any CF calendar
(numpy datetime64 or cftime dates, including ``noleap`` and ``360_day``), so that the data
themselves stay lazy.
"""

from __future__ import annotations

from typing import Literal

import cftime
import numpy as np
import xarray as xr

from climdl.data.timeaxis import TimeStep
from climdl.errors import ConfigError

Season = Literal["DJF", "MAM", "JJA", "SON"]
SEASONS: tuple[Season, ...] = ("DJF", "MAM", "JJA", "SON")
#: The benchmark names seasons by words (``evaluation/diagnostics.py`` ``_filter_by_season``).
_SEASON_WORDS: dict[str, Season] = {
    "winter": "DJF",
    "spring": "MAM",
    "summer": "JJA",
    "autumn": "SON",
    "fall": "SON",
}
#: Groups (years or seasons) with fewer time steps than this fraction of the fullest group are
#: left out of the annual indices: a December alone or a half year would bias their means.
MIN_GROUP_FRACTION = 0.8


def normalise_season(season: str | None) -> Season | None:
    """``None`` (whole year), ``DJF``/``MAM``/``JJA``/``SON`` or the benchmark's season words."""
    if season is None:
        return None
    text = str(season).strip()
    if text.upper() in SEASONS:
        return text.upper()  # type: ignore[return-value]
    if text.lower() in _SEASON_WORDS:
        return _SEASON_WORDS[text.lower()]
    if text.lower() in ("annual", "year", "all", "ann", "none"):
        return None
    raise ConfigError(
        f"unknown season {season!r}; use one of DJF, MAM, JJA, SON (or winter, spring, summer, "
        "autumn), or none for the whole year."
    )


def season_mask(time: xr.DataArray, season: str | None) -> np.ndarray:
    """Boolean mask over ``time`` of the steps in ``season`` (all True for ``None``)."""
    s = normalise_season(season)
    if s is None:
        return np.ones(time.size, dtype=bool)
    return np.asarray(time.dt.season.values == s)


def select_season(da: xr.DataArray, season: str | None) -> xr.DataArray:
    """The time steps of ``da`` in ``season`` (lazy ``isel``; ``None`` returns ``da``)."""
    if normalise_season(season) is None:
        return da
    return da.isel(time=np.flatnonzero(season_mask(da["time"], season)))


def day_numbers(time: xr.DataArray) -> np.ndarray:
    """Integer day number of each step in its own calendar (consecutive days differ by 1)."""
    values = np.asarray(time.values)
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    if np.issubdtype(values.dtype, np.datetime64):
        return values.astype("datetime64[D]").astype(np.int64)
    calendar = getattr(values.flat[0], "calendar", "standard") or "standard"
    nums = cftime.date2num(list(values), "days since 0001-01-01 00:00:00", calendar=calendar)
    return np.floor(np.asarray(nums, dtype=np.float64)).astype(np.int64)


def season_years(time: xr.DataArray, season: str | None) -> np.ndarray:
    """The year each step counts for: its calendar year, except December in DJF (next year).

    A winter is the contiguous December-January-February, as in ETCCDI seasonal indices; the
    benchmark's ``groupby("time.year")`` after a DJF filter would put January, February and the
    following December of one calendar year into one "season", which mixes two winters.
    """
    years = np.asarray(time.dt.year.values).astype(np.int64)
    if normalise_season(season) == "DJF":
        years = years + (np.asarray(time.dt.month.values) == 12)
    return years


def complete_groups(groups: np.ndarray, min_fraction: float = MIN_GROUP_FRACTION) -> np.ndarray:
    """Mask of the steps whose group has at least ``min_fraction`` of the fullest group's steps."""
    if groups.size == 0:
        return np.zeros(0, dtype=bool)
    labels, counts = np.unique(groups, return_counts=True)
    keep = labels[counts >= min_fraction * counts.max()]
    return np.isin(groups, keep)


def day_keys(time: xr.DataArray) -> np.ndarray:
    """``year*10000 + month*100 + day`` of each step: the calendar day, whatever the hour."""
    t = time.dt
    return (
        np.asarray(t.year.values).astype(np.int64) * 10000
        + np.asarray(t.month.values).astype(np.int64) * 100
        + np.asarray(t.day.values).astype(np.int64)
    )


def step_keys(time: xr.DataArray, step: TimeStep) -> np.ndarray:
    """An integer per step that names its place in the calendar at the series' time step.

    Daily (and other multi-day) steps: the calendar day whatever the hour (:func:`day_keys`);
    sub-daily: the day and the hour and minute; monthly: year and month; yearly: the year. Two
    series of one time step are matched on these keys (stamps at 00:00 and 12:00, or on the
    1st and the 16th of a month, mean the same step).
    """
    if step.kind == "sub-daily":
        t = time.dt
        minutes = np.asarray(t.hour.values).astype(np.int64) * 100 + np.asarray(
            t.minute.values
        ).astype(np.int64)
        return day_keys(time) * 10000 + minutes
    if step.kind == "monthly":
        return day_keys(time) // 100
    if step.kind == "yearly":
        return day_keys(time) // 10000
    return day_keys(time)
