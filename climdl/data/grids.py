"""The grids of the sample domains that climdl ships: the CORDEX ML-Bench domains and a
EURO-CORDEX rotated-pole window.

ALPS and SA target grids (128 x 128, ~12.5 km) are the benchmark's real grids, extracted from its
prediction templates (``grids/*.nc``, MIT licence). ``EUR12-ROT`` is a 128 x 128 window around
the Alps of the real EURO-CORDEX EUR-11 grid (CORDEX-CMIP6 domain EUR-12: 0.11-degree spacing on
a pole rotated to 39.25 N, 162 W; the full domain spans rlon -28.375..18.155, rlat
-23.375..21.835), built in code (:func:`rotated_target_grid`): the grid of most EURO-CORDEX
simulations. Coarse predictor grids are regular 2-degree lat/lon boxes of 16 x 16 cells around
each target domain, as in the benchmark (~150 km); EUR12-ROT shares ALPS's, which covers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Literal

import numpy as np
import xarray as xr

from climdl.errors import ConfigError
from climdl.preprocess.grids import EARTH_RADIUS, rotated_to_geographic

DomainName = Literal["ALPS", "SA", "EUR12-ROT"]


@dataclass(frozen=True)
class RotatedWindow:
    """A window of a rotated-pole grid: the pole, the spacing and the first cell's centre.

    Attributes:
        pole_lat: CF ``grid_north_pole_latitude`` (degrees).
        pole_lon: CF ``grid_north_pole_longitude`` (degrees).
        step: cell size in rotated degrees.
        rlon0: grid longitude of the first column's centre.
        rlat0: grid latitude of the first row's centre.
        size: cells per side.
        parent: the grid the window is cut from, for the file's attributes.
    """

    pole_lat: float
    pole_lon: float
    step: float
    rlon0: float
    rlat0: float
    size: int
    parent: str


#: EURO-CORDEX EUR-11 (CORDEX-CMIP6 EUR-12): rotated pole and first cell centres of the full grid
EUR11_POLE = (39.25, -162.0)
EUR11_RLON0, EUR11_RLAT0, EUR11_STEP = -28.375, -23.375, 0.11
#: the Alps window: columns 144-271 and rows 113-240 of EUR-11, centred on 10.0 E, 46.5 N
EUR12_ROT = RotatedWindow(
    pole_lat=EUR11_POLE[0],
    pole_lon=EUR11_POLE[1],
    step=EUR11_STEP,
    rlon0=round(EUR11_RLON0 + 144 * EUR11_STEP, 6),
    rlat0=round(EUR11_RLAT0 + 113 * EUR11_STEP, 6),
    size=128,
    parent="EURO-CORDEX EUR-11 (CORDEX-CMIP6 EUR-12), columns 144-271 and rows 113-240",
)


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
    #: the domain whose synthetic climate (orography, climatology) the sample uses; "" = own
    climate: str = ""
    #: the rotated-pole window of a domain whose target grid is built in code, else None
    rotated: RotatedWindow | None = None

    @property
    def physics(self) -> str:
        """The domain whose synthetic climate the sample generator evaluates (ALPS, SA)."""
        return self.climate or self.name


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
    "EUR12-ROT": DomainSpec(
        name="EUR12-ROT",
        rcm="ALADIN63",
        gcm_train="CNRM-CM5",
        gcm_transfer="MPI-ESM-LR",
        scenario="rcp85",
        transfer_calendar="360_day",
        coarse_lat0=29.0,
        coarse_lon0=-5.0,
        time_units="days since 1949-12-01",
        hemisphere="N",
        climate="ALPS",
        rotated=EUR12_ROT,
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
    if spec.rotated is not None:
        return rotated_target_grid(spec.rotated)
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


def rotated_target_grid(window: RotatedWindow) -> xr.Dataset:
    """A rotated-pole target grid as CORDEX files hold it.

    1-D ``rlat``/``rlon`` axes (CF ``grid_latitude``/``grid_longitude`` in degrees, as the
    CORDEX-CMIP6 grids table writes them), 2-D true ``lat``/``lon`` from the exact rotation, and
    the ``crs`` grid-mapping variable (``rotated_latitude_longitude`` on the CORDEX sphere).

    Args:
        window: the pole, spacing and first cell of the window.

    Returns:
        Coordinates and the grid-mapping variable, no data.
    """
    n = window.size
    rlon = np.round(window.rlon0 + window.step * np.arange(n), 6)
    rlat = np.round(window.rlat0 + window.step * np.arange(n), 6)
    lon, lat = rotated_to_geographic(rlon[None, :], rlat[:, None], window.pole_lat, window.pole_lon)
    ds = xr.Dataset(
        coords={
            "rlat": ("rlat", rlat, {
                "standard_name": "grid_latitude", "long_name": "latitude in rotated pole grid",
                "units": "degrees", "axis": "Y",
            }),
            "rlon": ("rlon", rlon, {
                "standard_name": "grid_longitude", "long_name": "longitude in rotated pole grid",
                "units": "degrees", "axis": "X",
            }),
            "lat": (("rlat", "rlon"), lat, {
                "standard_name": "latitude", "long_name": "latitude", "units": "degrees_north",
            }),
            "lon": (("rlat", "rlon"), lon, {
                "standard_name": "longitude", "long_name": "longitude", "units": "degrees_east",
            }),
        }
    )  # fmt: skip
    ds["crs"] = xr.Variable(
        (),
        np.int32(0),
        {
            "grid_mapping_name": "rotated_latitude_longitude",
            "grid_north_pole_latitude": window.pole_lat,
            "grid_north_pole_longitude": window.pole_lon,
            "north_pole_grid_longitude": 0.0,
            "earth_radius": EARTH_RADIUS,
        },
    )
    ds.attrs = {
        "title": f"climdl rotated-pole target grid ({n} x {n}, {window.step:g} degree spacing)",
        "source": f"a window of the {window.parent}",
    }
    return ds
