"""The canonical variable table: names, units and how to recognise them in CF files.

Whatever a source file calls a variable (``TMAX``, ``mx2t``, an odd name with a CF
``standard_name``, a 4-D ``ta(time, plev, lat, lon)``), the reader returns it under one canonical
name in one canonical unit, so everything downstream can rely on both:

=========================  =============  =========================================
canonical name             units          standard_name
=========================  =============  =========================================
``tasmax``                 ``K``          air_temperature (cell_methods time: maximum)
``tasmin``                 ``K``          air_temperature (cell_methods time: minimum)
``tas``                    ``K``          air_temperature
``pr``                     ``mm day-1``   lwe_precipitation_rate
``z_<hPa>``                ``m2 s-2``     geopotential
``t_<hPa>``                ``K``          air_temperature
``u_<hPa>``, ``v_<hPa>``   ``m s-1``      eastward_wind, northward_wind
``q_<hPa>``                ``kg kg-1``    specific_humidity
``orog``                   ``m``          surface_altitude
``sftlf``                  ``1``          land_area_fraction
=========================  =============  =========================================

:data:`PLAUSIBLE_RANGES` (and :func:`plausible_range`) says which values, in these units, a
variable can physically take: readers check data against it after unit conversion, so that a
wrong units attribute stops a run instead of producing nonsense.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

#: Standard gravity (m s-2), used to turn geopotential height (m) into geopotential (m2 s-2).
G0 = 9.80665
#: Density of liquid water (kg m-3): 1 kg m-2 of precipitation is 1 mm of water.
WATER_DENSITY = 1000.0

Role = Literal["target", "predictor", "static"]


@dataclass(frozen=True)
class VariableSpec:
    """One canonical single-level variable and the names/standard names that identify it."""

    name: str
    units: str
    standard_name: str
    long_name: str
    role: Role
    aliases: tuple[str, ...] = ()
    standard_names: tuple[str, ...] = ()
    cell_methods: str | None = None


@dataclass(frozen=True)
class LevelFamily:
    """A pressure-level predictor family (``z``, ``t``, ``u``, ``v``, ``q``)."""

    key: str
    units: str
    standard_name: str
    long_name: str
    aliases: tuple[str, ...]
    standard_names: tuple[str, ...]


SINGLE_LEVEL: dict[str, VariableSpec] = {
    spec.name: spec
    for spec in (
        VariableSpec(
            "tasmax",
            "K",
            "air_temperature",
            "Daily Maximum Near-Surface Air Temperature",
            "target",
            aliases=("tasmax", "tmax", "tx", "t2max", "mx2t", "tmax2m", "mx2t24"),
            cell_methods="time: maximum",
        ),
        VariableSpec(
            "tasmin",
            "K",
            "air_temperature",
            "Daily minimum near-surface air temperature",
            "target",
            aliases=("tasmin", "tmin", "tn", "t2min", "mn2t", "tmin2m", "mn2t24"),
            cell_methods="time: minimum",
        ),
        VariableSpec(
            "tas",
            "K",
            "air_temperature",
            "Near-surface air temperature",
            "target",
            aliases=("tas", "t2m", "2t", "tg", "tavg", "tmean", "t2"),
        ),
        VariableSpec(
            "pr",
            "mm day-1",
            "lwe_precipitation_rate",
            "Precipitation (liquid water equivalent)",
            "target",
            aliases=("pr", "precip", "tp", "prcp", "rr", "precipitation"),
            standard_names=(
                "precipitation_flux",
                "lwe_precipitation_rate",
                "precipitation_amount",
                "lwe_thickness_of_precipitation_amount",
            ),
        ),
        VariableSpec(
            "orog",
            "m",
            "surface_altitude",
            "Surface altitude",
            "static",
            aliases=("orog", "hsurf", "elevation", "topo", "z_surf", "orography"),
        ),
        VariableSpec(
            "sftlf",
            "1",
            "land_area_fraction",
            "Land area fraction",
            "static",
            aliases=("sftlf", "lsm", "landfrac", "land_fraction", "landmask"),
            standard_names=("land_area_fraction", "land_binary_mask"),
        ),
    )
}

FAMILIES: dict[str, LevelFamily] = {
    fam.key: fam
    for fam in (
        LevelFamily(
            "z",
            "m2 s-2",
            "geopotential",
            "Geopotential",
            ("z", "zg", "geopotential", "hgt", "gh", "phi"),
            ("geopotential", "geopotential_height"),
        ),
        LevelFamily("t", "K", "air_temperature", "Air temperature", ("t", "ta", "temp", "air"), ()),
        LevelFamily("u", "m s-1", "eastward_wind", "Eastward wind", ("u", "ua", "uwnd"), ()),
        LevelFamily("v", "m s-1", "northward_wind", "Northward wind", ("v", "va", "vwnd"), ()),
        LevelFamily(
            "q",
            "kg kg-1",
            "specific_humidity",
            "Specific humidity",
            ("q", "hus", "shum", "qv"),
            (),
        ),
    )
}

#: The 15 CORDEX ML-Bench predictors, variable-major then level (hPa) ascending:
#: z_500, z_700, z_850, t_500, ..., q_850. Models stack input channels in this order.
ML_BENCH_PREDICTORS: tuple[str, ...] = tuple(
    f"{fam}_{lev}" for fam in ("z", "t", "u", "v", "q") for lev in (500, 700, 850)
)
#: The ML-Bench targets, in the order the benchmark lists them.
ML_BENCH_TARGETS: tuple[str, ...] = ("tasmax", "pr")

#: Plausible values (canonical units, inclusive) of each single-level variable and level family.
#: The bounds are generous on purpose: they catch unit and fill-value mistakes (a factor of 9.8,
#: 1000 or 86400, an offset of 273.15, -9999 or 1e20), never a climate extreme:
#:
#: - temperatures 150-350 K: the records are 184 K (Vostok, -89.2 degC) and 330 K (Death Valley,
#:   56.7 degC) at the surface, and the free troposphere stays within them; degC read as K
#:   (-90..60) or K read as degC (>= 420 K) falls outside.
#: - pr -5 to 10000 mm day-1: the negative tolerance admits numerical noise and the undershoot
#:   of higher-order regridding done before climdl (bicubic or spectral remapping overshoots by
#:   a few mm day-1 at the edges of heavy rain) but not a flux with the opposite sign convention
#:   (tens of mm day-1 below zero on a rainy day); the top lies above the 1-day record
#:   (1825 mm, Foc-Foc 1966) and the 1-hour record as a rate (305 mm h-1 = 7320 mm day-1), so
#:   sub-daily inputs pass, while mm day-1 read as kg m-2 s-1 (x 86400) or mm read as m (x 1000)
#:   do not.
#: - u, v within +-150 m s-1: the strongest jet streams reach about 110 m s-1.
#: - q -1e-4 to 0.1 kg kg-1: saturation at 850 hPa and 45 degC is 0.073 kg kg-1; models carry
#:   tiny negative humidities; g kg-1 read as kg kg-1 (1 to 30) falls outside.
#: - orog -11000 to 9000 m: the Challenger Deep (-10935 m, elevation data with bathymetry) and
#:   Everest (8849 m); geopotential (m2 s-2) read as m is 9.8 times too high.
#: - sftlf 0 to 1 (+-0.001 rounding): a percentage read as a fraction exceeds 1.
#: - z (geopotential): level-dependent, see :func:`geopotential_range`.
PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {
    "tasmax": (150.0, 350.0),
    "tasmin": (150.0, 350.0),
    "tas": (150.0, 350.0),
    "pr": (-5.0, 10_000.0),
    "orog": (-11_000.0, 9_000.0),
    "sftlf": (-0.001, 1.001),
    "t": (150.0, 350.0),
    "u": (-150.0, 150.0),
    "v": (-150.0, 150.0),
    "q": (-1e-4, 0.1),
}


def geopotential_range(level_hpa: float) -> tuple[float, float]:
    """Plausible geopotential (m2 s-2) at ``level_hpa``: the ICAO standard-atmosphere height of
    the level, +- 30 % or +- 1000 m (whichever is larger), times standard gravity, rounded out
    to 100 m2 s-2.

    For 500/700/850 hPa that is 38200-71100, 19700-39400 and 4400-24100 m2 s-2, around
    observed heights of 4600-6000, 2500-3300 and 900-1700 m; geopotential height (m) read as
    geopotential is 9.8 times too low and caught at these levels (not near 1000 hPa, where
    heights are close to 0).
    """
    height = 44330.8 * (1.0 - (float(level_hpa) / 1013.25) ** 0.190263)
    margin = max(1000.0, 0.3 * abs(height))
    lo, hi = G0 * (height - margin), G0 * (height + margin)
    return math.floor(lo / 100.0) * 100.0, math.ceil(hi / 100.0) * 100.0


_LEVEL_NAME = re.compile(r"^(?P<prefix>[a-z]+)_?(?P<level>\d{2,4})(?:hpa|mb)?$", re.IGNORECASE)
_CANONICAL_LEVEL = re.compile(r"^(?P<fam>[ztuvq])_(?P<level>\d{2,4})$")
_TIME_MAX = re.compile(r"time\s*:\s*max", re.IGNORECASE)
_TIME_MIN = re.compile(r"time\s*:\s*min", re.IGNORECASE)


@dataclass(frozen=True)
class Identified:
    """What a source variable is: a canonical ``name`` or a level ``family`` to split.

    ``priority`` orders competing candidates: 0 exact canonical name, 1 alias or level name,
    2 standard_name, 3 a level split out of a multi-level variable.
    """

    name: str
    is_family: bool
    priority: int


def parse_level_name(name: str) -> tuple[str, int] | None:
    """Split a canonical level name such as ``t_850`` into ``("t", 850)``; None otherwise."""
    m = _CANONICAL_LEVEL.match(name)
    return (m["fam"], int(m["level"])) if m else None


def is_canonical(name: str) -> bool:
    """True if ``name`` is a canonical single-level name or ``<family>_<hPa>``."""
    return name in SINGLE_LEVEL or parse_level_name(name) is not None


def known_names() -> list[str]:
    """Canonical names for messages: single-level ones and the ML-Bench predictors."""
    return [*SINGLE_LEVEL, *ML_BENCH_PREDICTORS]


def canonical_units(name: str) -> str:
    """Canonical units of a canonical variable name (KeyError for unknown names)."""
    return str(canonical_attrs(name)["units"])


def canonical_attrs(name: str) -> dict[str, str]:
    """CF attributes (units, standard_name, long_name, maybe cell_methods) writers put on ``name``."""
    spec = SINGLE_LEVEL.get(name)
    if spec is not None:
        attrs = {
            "units": spec.units,
            "standard_name": spec.standard_name,
            "long_name": spec.long_name,
        }
        if spec.cell_methods:
            attrs["cell_methods"] = spec.cell_methods
        return attrs
    parsed = parse_level_name(name)
    if parsed is None:
        raise KeyError(f"{name!r} is not a canonical climdl variable; known: {known_names()}")
    fam = FAMILIES[parsed[0]]
    return {
        "units": fam.units,
        "standard_name": fam.standard_name,
        "long_name": f"{fam.long_name} at {parsed[1]} hPa",
    }


def plausible_range(name: str) -> tuple[float, float] | None:
    """Plausible (low, high) values of canonical variable ``name``; None for unknown names."""
    if name in PLAUSIBLE_RANGES:
        return PLAUSIBLE_RANGES[name]
    parsed = parse_level_name(name)
    if parsed is None:
        return None
    if parsed[0] == "z":
        return geopotential_range(parsed[1])
    return PLAUSIBLE_RANGES.get(parsed[0])


def _family_of(prefix: str) -> str | None:
    p = prefix.lower()
    return next((f.key for f in FAMILIES.values() if p in f.aliases), None)


def identify(name: str, attrs: Mapping[str, Any], *, vertical: bool) -> Identified | None:
    """Recognise a source variable by name first, then by ``standard_name``/``cell_methods``.

    ``vertical`` says whether the variable has a pressure coordinate; then only level names and
    predictor families are considered (a 4-D ``ta`` is temperature on levels, not ``tas``).
    """
    low = name.lower()
    m = _LEVEL_NAME.match(name)
    if m and (fam := _family_of(m["prefix"])) is not None:
        canonical = f"{fam}_{int(m['level'])}"
        return Identified(canonical, False, 0 if name == canonical else 1)
    sn = str(attrs.get("standard_name", "")).strip()
    if vertical:
        fam = _family_of(low)
        if fam is not None:
            return Identified(fam, True, 1)
        for f in FAMILIES.values():
            if sn and (sn == f.standard_name or sn in f.standard_names):
                return Identified(f.key, True, 2)
        return None
    for spec in SINGLE_LEVEL.values():
        if low in spec.aliases:
            return Identified(spec.name, False, 0 if name == spec.name else 1)
    if sn == "air_temperature":
        methods = str(attrs.get("cell_methods", ""))
        if _TIME_MAX.search(methods):
            return Identified("tasmax", False, 2)
        if _TIME_MIN.search(methods):
            return Identified("tasmin", False, 2)
        return Identified("tas", False, 2)
    for spec in SINGLE_LEVEL.values():
        if sn and (sn == spec.standard_name or sn in spec.standard_names):
            return Identified(spec.name, False, 2)
    return None
