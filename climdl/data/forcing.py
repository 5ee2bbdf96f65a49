"""The 1-D inputs of the emulator: day-of-year features and yearly forcing series.

Training (:mod:`climdl.data.emulator_data`) and inference (:mod:`climdl.inference.job`) build the
same ``aux`` vector from these helpers, so that a checkpoint applied to another period sees the
inputs it was trained on. The forcing table is kept as plain lists so that it can travel inside
the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from climdl.errors import DataError


def day_of_year_features(time: xr.DataArray) -> np.ndarray:
    """[T, 2] sine and cosine of the calendar-aware fraction of the year (any CF calendar)."""
    doy = time.dt.dayofyear.values.astype(np.float64) - 1.0
    length = (
        np.where(time.dt.is_leap_year.values, 366.0, 365.0)
        if hasattr(time.dt, "is_leap_year")
        else 365.0
    )
    cal = str(time.dt.calendar) if hasattr(time.dt, "calendar") else "standard"
    if cal == "360_day":
        length = 360.0
    frac = 2 * np.pi * doy / length
    return np.stack([np.sin(frac), np.cos(frac)], axis=1).astype(np.float32)


def read_forcing_table(csv: str | Path) -> dict[str, list[float]]:
    """Yearly forcing series (e.g. CO2-equivalent) from a CSV with a ``year`` column.

    Returned as plain lists (``{"year": [...], name: [...]}``) so that the table can live in the
    checkpoint and the emulator can be applied to any period the table covers.
    """
    try:
        table = pd.read_csv(csv)
    except FileNotFoundError:
        raise DataError(f"the forcing table {csv} does not exist; check the path.") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # a folder, not a CSV, ...
        raise DataError(f"{csv} is not a readable CSV forcing table ({exc}).") from None
    if "year" not in table.columns or len(table.columns) < 2:
        raise DataError(f"{csv} must have a 'year' column and at least one forcing column.")
    return {str(c): [float(v) for v in table[c].to_numpy(float)] for c in table.columns}


def forcing_from_table(
    time: xr.DataArray, table: dict[str, list[float]], where: str = "the forcing table"
) -> tuple[np.ndarray, list[str]]:
    """[T, F] forcing series linearly interpolated to each day's fractional year."""
    frac_year = time.dt.year.values + (time.dt.dayofyear.values - 1) / 366.0
    years = np.asarray(table["year"], float)
    cols = [c for c in table if c != "year"]
    if frac_year.min() < years.min() - 1 or frac_year.max() > years.max() + 1:
        raise DataError(
            f"{where} covers {years.min():.0f}-{years.max():.0f}, not all the years "
            f"{int(frac_year.min())}-{int(frac_year.max())} of the data."
        )
    out = np.stack([np.interp(frac_year, years, np.asarray(table[c], float)) for c in cols], axis=1)
    return out.astype(np.float32), cols


def forcing_features(time: xr.DataArray, csv: str | Path) -> tuple[np.ndarray, list[str]]:
    """External forcing series from a CSV (see :func:`read_forcing_table`) at each day."""
    return forcing_from_table(time, read_forcing_table(csv), where=str(csv))
