"""Choosing the time step of a field to draw (``climdl plot --time DATE|INDEX``, ``--mean``).

A date without a time of day is the calendar day that contains it, in the file's own calendar
(daily data stamped at 12:00 draw that day, never the previous one; monthly or yearly data the
step of that month or year; sub-daily data need a time of day); a date with a time of day is the
nearest step; an integer is an index. Every predictable mistake is one sentence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from climdl.data.timeaxis import step_of_days
from climdl.errors import ConfigError, DataError

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["TimeChoice", "select_time"]

_DATE = re.compile(
    r"^\s*(-?\d{1,4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2})(?::(\d{1,2}))?(?::\d+)?)?"
    r"\s*$"
)
_INDEX = re.compile(r"^\s*[+-]?\d+\s*$")


@dataclass(frozen=True)
class TimeChoice:
    """How to reduce the time dimension: one step (``when``: date string or index) or a mean."""

    when: str | int | None = None
    mean: bool = False

    @staticmethod
    def parse(text: str | None, mean: bool = False) -> TimeChoice:
        """``--time`` text: an integer is an index (negative counts from the end), else a date."""
        if text is not None and mean:
            raise ConfigError("choose either --time or --mean, not both.")
        if text is None:
            return TimeChoice(None, mean)
        if _INDEX.match(text):
            return TimeChoice(int(text), False)
        if not _DATE.match(text):
            raise ConfigError(
                f"--time {text!r} is neither a date (YYYY-MM-DD[ HH:MM]) nor a time index."
            )
        return TimeChoice(text.strip(), False)


def _is_dates(values: Any) -> bool:
    """Whether an array holds dates (datetime64 or cftime objects)."""
    v = np.asarray(values)
    if np.issubdtype(v.dtype, np.datetime64):
        return True
    return v.dtype == object and v.size > 0 and hasattr(v.flat[0], "calendar")


def _time_dim(da: xr.DataArray) -> str | None:
    if "time" in da.dims:
        return "time"
    for d in da.dims:
        c = da.coords.get(d)
        if c is not None and (
            c.attrs.get("axis") == "T"
            or c.attrs.get("standard_name") == "time"
            or _is_dates(c.values)
        ):
            return str(d)
    return None


def _scalar_time(da: xr.DataArray) -> Any:
    """The date of a field whose time is a scalar coordinate (one step saved without its
    dimension), or None."""
    for name, c in da.coords.items():
        if (
            c.ndim == 0
            and (str(name) == "time" or c.attrs.get("axis") == "T")
            and _is_dates(c.values.reshape(1))
        ):
            return c.values.reshape(1)[0]
    return None


def _date_of(times: Any, text: str) -> Any:
    """``text`` as a date of the calendar of ``times`` (cftime objects or datetime64)."""
    import cftime

    m = _DATE.match(text)
    assert m is not None
    y, mo, d = int(m[1]), int(m[2]), int(m[3])
    h, mi = int(m[4] or 0), int(m[5] or 0)
    first = times[0]
    calendar = getattr(first, "calendar", None) or "standard"
    try:
        return cftime.datetime(
            y, mo, d, h, mi, calendar=calendar, has_year_zero=getattr(first, "has_year_zero", None)
        )
    except ValueError:
        raise ConfigError(
            f"--time {text!r} is not a date of the {calendar!r} calendar of the file."
        ) from None


def _has_time_of_day(text: str) -> bool:
    m = _DATE.match(text)
    return m is not None and m[4] is not None


def _as_days(times: Any, calendar: str) -> np.ndarray:
    """Days since 1970-01-01 of datetime64 values or cftime dates of ``calendar``."""
    import cftime

    if np.issubdtype(np.asarray(times).dtype, np.datetime64):
        t = np.asarray(times, dtype="datetime64[s]").astype(np.int64)
        return t / 86400.0
    return np.asarray(
        cftime.date2num(list(times), "days since 1970-01-01", calendar=calendar), dtype=float
    )


def _ymd(t: Any) -> tuple[int, int, int]:
    """(year, month, day) of a cftime date or a datetime64 value, in its own calendar."""
    if hasattr(t, "calendar"):
        return int(t.year), int(t.month), int(t.day)
    y, m, d = str(np.datetime64(t, "D")).lstrip("+").rsplit("-", 2)
    return int(y), int(m), int(d)


def _fmt(t: Any, with_time: bool = False) -> str:
    """A date as YYYY-MM-DD, with HH:MM for sub-daily series."""
    pattern = "%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d"
    try:
        return str(t.strftime(pattern))
    except AttributeError:
        value = np.datetime64(t, "m") if with_time else np.datetime64(t, "D")
        return str(np.datetime_as_string(value)).replace("T", " ")


def _step_on_day(times: Any, days: np.ndarray, text: str, target: Any, where: str) -> int:
    """The index of the step in the calendar day of ``target`` (a date without time of day).

    Daily data stamped at any hour give the step of that day (never the previous day's for a
    12:00 stamp); sub-daily data need a time of day; monthly (yearly) data give the step of
    that month (year), other coarser data the nearest step.
    """
    day = (int(target.year), int(target.month), int(target.day))
    on_day = [i for i, t in enumerate(times) if _ymd(t) == day]
    sub = step_of_days(days).kind == "sub-daily"
    if len(on_day) == 1:
        return on_day[0]
    if len(on_day) > 1:
        hours = ", ".join(_fmt(times[i], True)[-5:] for i in on_day[:6])
        more = ", ..." if len(on_day) > 6 else ""
        raise ConfigError(
            f"{where} has {len(on_day)} time steps on {text} ({hours}{more}); add the time "
            f"of day, e.g. --time '{text} {_fmt(times[on_day[0]], True)[-5:]}'."
        )
    t0 = float(np.asarray(_as_days([target], getattr(target, "calendar", "standard")))[0])
    gaps = np.diff(days)[np.diff(days) > 0]
    if gaps.size and float(gaps.min()) > 1.01:
        # coarser than daily: the step of that month (year) of monthly (yearly) data, else the
        # nearest step
        n = {"monthly": 2, "yearly": 1}.get(step_of_days(days).kind)
        same = [i for i, t in enumerate(times) if n and _ymd(t)[:n] == day[:n]]
        if len(same) == 1:
            return same[0]
        return int(np.argmin(np.abs(days - t0)))
    before = [i for i in range(len(times)) if days[i] < t0]
    after = [i for i in range(len(times)) if days[i] > t0]
    near = [_fmt(times[i], sub) for i in ([before[-1]] if before else []) + after[:1]]
    raise ConfigError(
        f"{where} has no time step on {text} (nearest: {' and '.join(near)}); choose a date "
        "of the file or an index."
    )


def select_time(da: xr.DataArray, choice: TimeChoice) -> tuple[xr.DataArray, str]:
    """Reduce the time dimension as chosen; return the field and a label for the title.

    A date without a time of day picks the step in that calendar day (any stamp hour, any
    calendar; sub-daily series need a time of day, monthly ones the step of that month); a
    date with a time of day picks the nearest step. Dates more than a day outside the file's
    period are refused. An index counts from 0 (negative from the end). Without a choice
    a series of more than one step is refused, so that nobody plots the first day by accident;
    a single step (a time dimension of one, or a scalar time coordinate) is labelled with its
    date.
    """
    where = da.encoding.get("source", "the file")
    tdim = _time_dim(da)
    name = da.name
    if tdim is None:
        if choice.when is not None or choice.mean:
            flag = "--mean" if choice.mean else "--time"
            raise DataError(f"{name} in {where} has no time dimension; drop {flag}.")
        t = _scalar_time(da)
        return da, _fmt(t) if t is not None else ""
    n = da.sizes[tdim]
    if n == 0:  # a mean of nothing is all NaN: an empty map that looks like a result
        raise DataError(f"{name} in {where} has a time axis with no steps; nothing to draw.")
    times = da[tdim].values if tdim in da.coords and _is_dates(da[tdim].values) else None
    calendar = (getattr(times[0], "calendar", None) or "standard") if times is not None else ""
    days = _as_days(times, calendar) if times is not None else np.zeros(0)
    sub = step_of_days(days).kind == "sub-daily"
    if choice.mean:
        out = da.mean(tdim, keep_attrs=True)
        methods = str(out.attrs.get("cell_methods", "")).strip()
        out.attrs["cell_methods"] = f"{methods} {tdim}: mean".strip()
        label = (
            f"mean {_fmt(times[0], sub)} to {_fmt(times[-1], sub)}" if times is not None else "mean"
        )
        return out, label
    if choice.when is None:
        if n == 1:
            return da.isel({tdim: 0}), _fmt(times[0]) if times is not None else ""
        raise DataError(
            f"{name} in {where} has {n} time steps; choose one with --time DATE|INDEX "
            "or average them with --mean."
        )
    if isinstance(choice.when, int):
        i = choice.when
        if not -n <= i < n:
            raise ConfigError(
                f"--time {i} is out of range: {where} has {n} time steps "
                f"(0 to {n - 1}, or negative from the end)."
            )
    else:
        if times is None:
            raise DataError(
                f"the time dimension of {name} in {where} has no dates; give --time as an index."
            )
        target = _date_of(times, choice.when)
        t0 = float(np.asarray(_as_days([target], calendar))[0])
        # a day's grace, or one step for monthly (yearly) data stamped mid-month (mid-year)
        margin = max(1.0, float(np.median(np.diff(days)))) if days.size > 1 else 1.0
        if t0 < days.min() - margin or t0 > days.max() + margin:
            raise ConfigError(
                f"--time {choice.when} is outside the period of {where} "
                f"({_fmt(times[0], sub)} to {_fmt(times[-1], sub)})."
            )
        if _has_time_of_day(choice.when):
            i = int(np.argmin(np.abs(days - t0)))
        else:
            i = _step_on_day(times, days, choice.when, target, where)
    out = da.isel({tdim: i})
    return out, _fmt(times[i], sub) if times is not None else f"step {i}"
