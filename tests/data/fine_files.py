"""Small fine-grid NetCDF files for the prepare tests: a lat-lon grid whose 2-degree cells nest
8 x 8, and the ALPS Lambert target grid, with cftime times in any calendar."""

from __future__ import annotations

from pathlib import Path

import cftime
import numpy as np
import xarray as xr

from climdl.data.grids import target_grid


def cf_dates(n: int, calendar: str, start: int = 2000) -> np.ndarray:
    """``n`` daily cftime dates at noon from ``start``-01-01 in ``calendar``."""
    return np.array(
        cftime.num2date(np.arange(n) + 0.5, f"days since {start}-01-01", calendar=calendar)
    )


def write_fine(
    ds: xr.Dataset, path: Path, calendar: str, units: str = "days since 1990-01-01"
) -> Path:
    """Write ``ds`` to ``path`` with float64 times in ``units`` and ``calendar``: the path."""
    enc = {"time": {"units": units, "calendar": calendar, "dtype": "f8"}}
    ds.to_netcdf(path, encoding=enc)
    return path


def latlon_fine(
    path: Path, n: int = 20, calendar: str = "noleap", seed: int = 0, start: int = 2000
) -> Path:
    """tasmax and pr on a 0.25-degree grid (lat 40..48, lon -4..6): 2-degree cells nest 8 x 8."""
    lat = 40.125 + 0.25 * np.arange(32)
    lon = -3.875 + 0.25 * np.arange(40)
    rng = np.random.default_rng(seed)
    base = 330.0 - 1.5 * lat[:, None] + 0.2 * lon[None, :]
    tasmax = base + 5 * rng.standard_normal((n, lat.size, lon.size))
    pr = rng.gamma(0.5, 4.0, (n, lat.size, lon.size))
    ds = xr.Dataset(
        {
            "tasmax": (("time", "lat", "lon"), tasmax.astype(np.float32), {"units": "K"}),
            "pr": (("time", "lat", "lon"), pr.astype(np.float32), {"units": "mm day-1"}),
        },
        coords={
            "time": ("time", cf_dates(n, calendar, start), {"standard_name": "time"}),
            "lat": ("lat", lat, {"standard_name": "latitude", "units": "degrees_north"}),
            "lon": ("lon", lon, {"standard_name": "longitude", "units": "degrees_east"}),
        },
        attrs={"history": "made by a test"},
    )
    return write_fine(ds, path, calendar)


def lambert_fine(path: Path, n: int = 20, calendar: str = "360_day") -> Path:
    """tasmax on the ALPS 128 x 128 Lambert target grid."""
    grid = target_grid("ALPS")
    lat, lon = grid["lat"].values, grid["lon"].values
    rng = np.random.default_rng(1)
    day = np.sin(2 * np.pi * np.arange(n) / 30)[:, None, None]
    tasmax = 320.0 - 0.9 * lat + 0.3 * lon + 3 * day + rng.standard_normal((n, *lat.shape))
    ds = xr.Dataset(coords=grid.coords)
    ds["Lambert_Conformal"] = grid["Lambert_Conformal"]
    ds["tasmax"] = (
        ("time", "y", "x"),
        tasmax.astype(np.float32),
        {"units": "K", "grid_mapping": "Lambert_Conformal"},
    )
    ds = ds.assign_coords(time=("time", cf_dates(n, calendar), {"standard_name": "time"}))
    return write_fine(ds, path, calendar, units="days since 1949-12-01")
