"""The time step of a time axis (daily, sub-daily, monthly, yearly), in any CF calendar.

One detector for every package that must know it: the evaluation leaves the daily indices out of
a monthly or sub-daily series and matches series step by step, ``climdl plot --time`` picks the
step of a day, month or year. The step is the median spacing of the steps, so that gaps (missing
days) do not change it; numpy datetimes and cftime dates of any calendar are read alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cftime
import numpy as np
import xarray as xr

__all__ = ["DAILY", "StepKind", "TimeStep", "calendar_of", "step_of_days", "time_step"]

StepKind = Literal["daily", "sub-daily", "monthly", "yearly", "other"]


@dataclass(frozen=True)
class TimeStep:
    """The time step of a series: its kind and a word for messages (``6-hourly``, ``monthly``)."""

    kind: StepKind
    label: str
    #: the median spacing in days (not compared: two daily series are alike at 1 or 1.005 days)
    days: float = field(default=1.0, compare=False)

    @property
    def daily(self) -> bool:
        """Whether the series holds one value per day (what the daily indices need)."""
        return self.kind == "daily"

    @property
    def within_season(self) -> bool:
        """Whether each step lies within one season (DJF, MAM, JJA, SON: at most 92 days).

        A yearly (or longer) step does not: its values are means over several seasons, and the
        season of its time stamp (often mid-year) says nothing about them.
        """
        return self.days <= 92.5


DAILY = TimeStep("daily", "daily")


def calendar_of(time: xr.DataArray) -> str:
    """The CF calendar of a time coordinate (``standard`` for numpy datetimes).

    Args:
        time: a time coordinate of numpy datetimes or cftime dates.

    Returns:
        The calendar name, e.g. ``standard``, ``noleap``, ``360_day``.
    """
    values = np.asarray(time.values)
    if values.size == 0 or np.issubdtype(values.dtype, np.datetime64):
        return "standard"
    return str(getattr(values.flat[0], "calendar", "standard") or "standard")


def step_of_days(days: np.ndarray) -> TimeStep:
    """The time step of steps given as day numbers (any origin; fractions for hours).

    A series of one step counts as daily (nothing tells otherwise); repeated or backward steps
    are ignored.

    Args:
        days: the time of each step in days, in time order.

    Returns:
        The :class:`TimeStep`: daily within 1 %, sub-daily below, monthly for 27 to 32 days,
        yearly for 359 to 367 days, ``other`` otherwise.
    """
    days = np.asarray(days, dtype=np.float64)
    if days.size < 2:
        return DAILY
    gaps = np.diff(days)
    gaps = gaps[gaps > 0]
    step = float(np.median(gaps)) if gaps.size else 1.0
    if 0.99 <= step <= 1.01:
        return TimeStep("daily", "daily", step)
    if step < 0.99:
        hours = step * 24.0
        label = "hourly" if abs(hours - 1) < 0.01 else f"{hours:.3g}-hourly"
        return TimeStep("sub-daily", label, step)
    if 27.0 <= step <= 32.0:
        return TimeStep("monthly", "monthly", step)
    if 359.0 <= step <= 367.0:
        return TimeStep("yearly", "yearly", step)
    return TimeStep("other", f"{step:.3g}-daily", step)


def time_step(time: xr.DataArray) -> TimeStep:
    """The time step of a time coordinate from the median spacing of its steps.

    Args:
        time: a time coordinate of numpy datetimes or cftime dates (any calendar).

    Returns:
        Its :class:`TimeStep` (see :func:`step_of_days`).
    """
    values = np.asarray(time.values)
    if values.size < 2:
        return DAILY
    if np.issubdtype(values.dtype, np.datetime64):
        days = values.astype("datetime64[s]").astype(np.int64) / 86400.0
    else:
        days = np.asarray(
            cftime.date2num(list(values), "days since 0001-01-01", calendar=calendar_of(time)),
            dtype=np.float64,
        )
    return step_of_days(days)
