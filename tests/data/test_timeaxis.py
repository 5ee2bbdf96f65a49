"""The one time-step detector shared by the evaluation and ``climdl plot --time``."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from climdl.data.timeaxis import DAILY, calendar_of, step_of_days, time_step


@pytest.mark.parametrize(
    ("freq", "calendar", "kind", "label"),
    [
        ("D", "standard", "daily", "daily"),
        ("D", "360_day", "daily", "daily"),
        ("6h", "noleap", "sub-daily", "6-hourly"),
        ("h", "standard", "sub-daily", "hourly"),
        ("MS", "360_day", "monthly", "monthly"),
        ("YS", "noleap", "yearly", "yearly"),
        ("7D", "standard", "other", "7-daily"),
    ],
)
def test_time_step_of_any_calendar(freq: str, calendar: str, kind: str, label: str) -> None:
    dates = xr.date_range("2000-01-01", periods=30, freq=freq, calendar=calendar, use_cftime=True)
    step = time_step(xr.DataArray(dates, dims="time"))
    assert (step.kind, step.label, step.daily) == (kind, label, kind == "daily")
    assert calendar_of(xr.DataArray(dates, dims="time")) == calendar


def test_gaps_one_step_and_numpy_dates() -> None:
    days = np.r_[np.arange(10.0), np.arange(20.0, 30.0)]  # ten missing days
    assert step_of_days(days) == DAILY
    assert step_of_days(np.array([5.0])) == DAILY
    numpy_dates = xr.DataArray(np.arange("2000-01", "2000-03", dtype="datetime64[D]"), dims="t")
    assert time_step(numpy_dates) == DAILY and calendar_of(numpy_dates) == "standard"
