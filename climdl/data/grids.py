"""The grids of the CORDEX ML-Bench domains that climdl ships.

Target grids (128 x 128, ~12.5 km) are the benchmark's real grids, extracted from its prediction
templates (``grids/*.nc``, MIT licence). Coarse predictor grids are regular 2-degree lat/lon boxes
of 16 x 16 cells around each target domain, as in the benchmark (~150 km).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Literal

import numpy as np
import xarray as xr

from climdl.errors import ConfigError

DomainName = Literal["ALPS", "SA"]


@dataclass(frozen=True)
class DomainSpec:
    """What the benchmark says about one domain, plus the coarse grid climdl uses for it."""

    name: str
    rcm: str
    gcm_train: str
    gcm_transfer: str
    scenario: str
    #: calendar of the transfer GCM (and of the RCM run it drives) in the embedded sample
    transfer_calendar: str
    #: centre of the first coarse cell and the cell size, degrees
    coarse_lat0: float
    coarse_lon0: float
    coarse_step: float = 2.0
    coarse_n: int = 16
    #: time encoding of the benchmark's target files (from the templates)
    time_units: str = "days since 1949-12-01"
    hemisphere: Literal["N", "S"] = "N"


DOMAINS: dict[str, DomainSpec] = {
    "ALPS": DomainSpec(
        name="ALPS",
        rcm="ALADIN63",
        gcm_train="CNRM-CM5",
        gcm_transfer="MPI-ESM-LR",
        scenario="rcp85",
        transfer_calendar="360_day",
        coarse_lat0=29.0,
        coarse_lon0=-5.0,
        time_units="days since 1949-12-01",
        hemisphere="N",
    ),
    "SA": DomainSpec(
        name="SA",
        rcm="CCAM",
        gcm_train="ACCESS-CM2",
        gcm_transfer="NorESM2-MM",
        scenario="ssp370",
        transfer_calendar="noleap",
        coarse_lat0=-43.0,
        coarse_lon0=12.0,
        time_units="minutes since 1961-01-01",
        hemisphere="S",
    ),
}


def domain_spec(name: str) -> DomainSpec:
    """Look up a domain by name (case-insensitive), with a clear error for unknown names."""
    key = name.upper()
    if key not in DOMAINS:
        raise ConfigError(f"unknown domain {name!r}; choose one of {', '.join(DOMAINS)}.")
    return DOMAINS[key]


def target_grid(name: str) -> xr.Dataset:
    """The domain's 128 x 128 target grid: coordinates and grid-mapping variable, no data."""
    spec = domain_spec(name)
    ref = resources.files("climdl.data").joinpath("grids", f"{spec.name}.nc")
    with resources.as_file(ref) as path, xr.open_dataset(path) as ds:
        return ds.load()


def grid_mapping_name(grid: xr.Dataset) -> str:
    """Name of the grid-mapping variable of a target grid dataset."""
    for name, var in grid.data_vars.items():
        if "grid_mapping_name" in var.attrs:
            return str(name)
    raise ConfigError("the grid has no grid-mapping variable.")


def coarse_grid(name: str) -> xr.Dataset:
    """The domain's regular coarse predictor grid with CF cell bounds (ascending lat and lon)."""
    spec = domain_spec(name)
    n, step = spec.coarse_n, spec.coarse_step
    lat = spec.coarse_lat0 + step * np.arange(n)
    lon = spec.coarse_lon0 + step * np.arange(n)
    ds = xr.Dataset(
        coords={
            "lat": (
                "lat",
                lat,
                {
                    "standard_name": "latitude",
                    "long_name": "latitude",
                    "units": "degrees_north",
                    "axis": "Y",
                    "bounds": "lat_bnds",
                },
            ),
            "lon": (
                "lon",
                lon,
                {
                    "standard_name": "longitude",
                    "long_name": "longitude",
                    "units": "degrees_east",
                    "axis": "X",
                    "bounds": "lon_bnds",
                },
            ),
        }
    )
    ds["lat_bnds"] = (("lat", "bnds"), np.stack([lat - step / 2, lat + step / 2], axis=1))
    ds["lon_bnds"] = (("lon", "bnds"), np.stack([lon - step / 2, lon + step / 2], axis=1))
    return ds
