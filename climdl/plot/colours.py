"""Colour maps, limits and colour-bar labels chosen from what a field is.

A bias or anomaly gets a diverging map with limits symmetric about zero (so white means "no
difference"); precipitation a sequential map whose driest class has its own "dry" colour;
temperature a warm-cold map; anything else viridis. Limits are robust percentiles, so one hot
pixel does not wash out a map, and the colour bar says when values run past them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.colors import Colormap, Normalize

Kind = Literal["auto", "sequential", "diverging", "precip", "temperature"]
ResolvedKind = Literal["sequential", "diverging", "precip", "temperature"]
KINDS: tuple[str, ...] = ("auto", "sequential", "diverging", "precip", "temperature")

#: colour of dry cells (below the wet-day threshold) on precipitation maps
DRY_COLOUR = "#f3eee4"
_CMAPS: dict[str, str] = {
    "sequential": "viridis",
    "temperature": "RdYlBu_r",
    "diverging": "RdBu_r",
    "precip": "YlGnBu",
    "precip_diverging": "BrBG",  # brown = drier, green = wetter
}
_PRECIP_NAMES = re.compile(r"^(pr|prc|prl|prsn|precip\w*|tp|rain\w*|lwe_\w+|wet\w*)$", re.I)
_TEMP_NAMES = re.compile(
    r"^(tas|tasmax|tasmin|ta|t|t2m|tos|ts|t_\d+|temp\w*|air_temperature)$", re.I
)
_DIFF_NAMES = re.compile(r"(bias|diff|delta|anom|error|change|increment|residual)", re.I)
_PRECIP_UNITS = {
    "mm day-1",
    "mm/day",
    "mm d-1",
    "mm/d",
    "kg m-2 s-1",
    "kg m-2 d-1",
    "mm h-1",
    "mm/h",
}
_TEMP_UNITS = {"k", "degc", "degree_celsius", "celsius", "°c", "degrees_celsius", "deg_c"}


def _text(da: xr.DataArray) -> tuple[str, str, str]:
    name = str(da.name or "")
    return name, str(da.attrs.get("standard_name", "")), str(da.attrs.get("units", "")).strip()


def is_precipitation(da: xr.DataArray) -> bool:
    """Whether ``da`` is a precipitation field, judged by name, standard_name and units."""
    name, std, units = _text(da)
    return bool(
        _PRECIP_NAMES.match(name)
        or "precipitation" in std
        or (not std and units.lower() in _PRECIP_UNITS and not _TEMP_NAMES.match(name))
    )


def is_temperature(da: xr.DataArray) -> bool:
    """Whether ``da`` is a temperature field, judged by name, standard_name and units."""
    name, std, units = _text(da)
    return bool(_TEMP_NAMES.match(name) or "temperature" in std or units.lower() in _TEMP_UNITS)


def _straddles_zero(values: np.ndarray) -> bool:
    """Both signs present with a real share each (robust to a few stray values)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return False
    lo, hi = np.percentile(finite, [5, 95])
    return bool(lo < 0 < hi)


def infer_kind(da: xr.DataArray, values: np.ndarray | None = None) -> ResolvedKind:
    """Resolve ``kind="auto"``: diverging for biases/anomalies, else precip/temperature/sequential.

    A field is a difference when its name, long_name or a ``climdl_kind="diverging"`` attribute
    says so, or when its values straddle zero (5th percentile < 0 < 95th) and it is not a
    quantity that is positive by nature (precipitation, temperature in K).

    Args:
        da: the field (its name and attributes are read).
        values: its values when already loaded (else read from ``da``).

    Returns:
        ``diverging``, ``precip``, ``temperature`` or ``sequential``.
    """
    hint = str(da.attrs.get("climdl_kind", ""))
    if hint in ("sequential", "diverging", "precip", "temperature"):
        return hint  # type: ignore[return-value]
    name, _, units = _text(da)
    label = f"{name} {da.attrs.get('long_name', '')}"
    if _DIFF_NAMES.search(label):
        return "diverging"
    vals = np.asarray(da.values if values is None else values, dtype=float)
    if is_precipitation(da):
        return "diverging" if np.nanmin(vals, initial=0.0) < 0 else "precip"
    if is_temperature(da) and units.lower() != "k" and _straddles_zero(vals):
        # degC fields straddle zero naturally: still a temperature map
        return "temperature"
    if _straddles_zero(vals):
        return "diverging"
    if is_temperature(da):
        return "temperature"
    return "sequential"


@dataclass(frozen=True)
class ColourSpec:
    """Everything a pcolormesh and its colour bar need."""

    cmap: Colormap
    norm: Normalize
    extend: Literal["neither", "both", "min", "max"]
    kind: ResolvedKind


def robust_limits(
    values: np.ndarray | Sequence[np.ndarray], kind: ResolvedKind
) -> tuple[float, float]:
    """Colour limits: 2-98 percentiles, symmetric max |x| (98th) for diverging, 0..99th for precip."""
    arrays = [values] if isinstance(values, np.ndarray) else list(values)
    flat = (
        np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays])
        if arrays
        else np.zeros(0)
    )
    finite = flat[np.isfinite(flat)]
    if finite.size == 0:
        return (-1.0, 1.0) if kind == "diverging" else (0.0, 1.0)
    if kind == "diverging":
        m = float(np.percentile(np.abs(finite), 98))
        m = m if m > 0 else float(np.abs(finite).max()) or 1.0
        return -m, m
    if kind == "precip":
        lo, hi = 0.0, float(np.percentile(finite, 99))
    else:
        lo, hi = (float(v) for v in np.percentile(finite, [2, 98]))
    if hi <= lo:
        hi = lo + (abs(lo) * 0.01 or 1.0)
    return lo, hi


def dry_threshold(units: str) -> float:
    """Wet-day threshold (1 mm/day, as in ETCCDI) expressed in ``units``; 0 if unknown."""
    u = units.strip().lower().replace("/", " ").replace("  ", " ")
    table = {
        "mm day-1": 1.0,
        "mm day": 1.0,
        "mm d-1": 1.0,
        "mm d": 1.0,
        "mm": 1.0,
        "kg m-2 s-1": 1.0 / 86400.0,
        "kg m-2 d-1": 1.0,
        "kg m-2": 1.0,
        "mm h-1": 1.0 / 24.0,
        "mm h": 1.0 / 24.0,
        "m": 1e-3,
        "m s-1": 1e-3 / 86400.0,
    }
    return table.get(u, 0.0)


def colour_spec(
    values: np.ndarray | Sequence[np.ndarray],
    kind: ResolvedKind,
    *,
    units: str = "",
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str | Colormap | None = None,
    precip_difference: bool = False,
    dry: float | None = None,
) -> ColourSpec:
    """Colour map, normalisation and colour-bar ``extend`` for values of a given kind.

    Missing limits come from :func:`robust_limits`; for diverging maps a single given limit is
    mirrored so that zero stays in the middle. Precipitation maps of daily-like values (scale
    from zero to at least five times the threshold) show values below the wet-day threshold
    ``dry`` (default 1 mm/day in ``units``; 0 turns it off) in :data:`DRY_COLOUR`.

    Args:
        values: the values (or several arrays) the scale must fit.
        kind: ``sequential``, ``diverging``, ``precip`` or ``temperature``.
        units: the values' units (for the dry threshold of precipitation).
        vmin: lower colour limit; None: robust limit from the values.
        vmax: upper colour limit; None: robust limit from the values.
        cmap: a colour map (name or object) replacing the kind's default.
        precip_difference: a diverging map of precipitation differences (brown to green).
        dry: the wet-day threshold in ``units``; None: 1 mm/day, 0: no dry colour.

    Returns:
        The colour map, normalisation, colour-bar ``extend`` and kind.
    """
    import matplotlib as mpl
    from matplotlib.colors import Normalize

    lo, hi = robust_limits(values, kind)
    if kind == "diverging" and (vmin is None) != (vmax is None):
        m = abs(vmin if vmin is not None else vmax)  # type: ignore[arg-type]
        lo, hi = -m, m
    else:
        lo = lo if vmin is None else float(vmin)
        hi = hi if vmax is None else float(vmax)
    if hi <= lo:
        hi = lo + 1.0
    name = _CMAPS["precip_diverging" if precip_difference and kind == "diverging" else kind]
    cm = mpl.colormaps[cmap] if isinstance(cmap, str) else cmap
    # NaN (sea in a land-only field, fill values) stays transparent
    cm = (cm if cm is not None else mpl.colormaps[name]).with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
    arrays = [values] if isinstance(values, np.ndarray) else list(values)
    finite = (
        np.concatenate([np.asarray(a, float).ravel() for a in arrays]) if arrays else np.zeros(0)
    )
    finite = finite[np.isfinite(finite)]
    below = bool(finite.size and finite.min() < lo)
    above = bool(finite.size and finite.max() > hi)
    if kind == "precip":
        dry = dry_threshold(units) if dry is None else dry
        if dry > 0 and lo <= 0.0 and 5 * dry <= hi:
            lo = dry
            cm = cm.with_extremes(under=DRY_COLOUR)
            below = bool(finite.size and finite.min() < dry)
    extend: Literal["neither", "both", "min", "max"] = (
        "both" if below and above else "min" if below else "max" if above else "neither"
    )
    return ColourSpec(cmap=cm, norm=Normalize(lo, hi), extend=extend, kind=kind)


def colourbar_label(da: xr.DataArray) -> str:
    """``long_name [units]`` (or the variable name), the label of a colour bar."""
    label = str(da.attrs.get("long_name") or da.name or "")
    units = str(da.attrs.get("units", "")).strip()
    return f"{label} [{units}]" if units else label
