"""Thresholds with units ("25 degC", "1 mm/day") converted to the units of the data.

The benchmark's summer-day index has a bare default of 300.0 while its docstring says 25 degC
(CORDEX ML-Bench ``evaluation``): a number without units is a trap. Here every threshold is a
quantity; it is parsed with the CF-aware pint registry climdl uses everywhere
(:func:`climdl.data.units.registry`) and converted to the data's own ``units`` attribute, offsets
included (degC -> K). Precipitation given as a mass flux (kg m-2 s-1) and a threshold as a depth
rate (mm/day), or the reverse, are related through the density of liquid water.
"""

from __future__ import annotations

import re

import pint
import xarray as xr

from climdl.data.units import parse_units, registry
from climdl.data.variables import WATER_DENSITY
from climdl.errors import ConfigError, DataError

Threshold = str | float | int | pint.Quantity
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")


def parse_quantity(text: str) -> pint.Quantity:
    """Parse ``"<number> <units>"`` into a pint Quantity (offset units such as degC allowed)."""
    m = _NUMBER.match(str(text))
    if m is None or not m.group(2):
        raise ConfigError(
            f"threshold {text!r} needs a number and units, e.g. '25 degC' or '1 mm/day'."
        )
    try:
        units = parse_units(m.group(2))
    except ValueError:
        raise ConfigError(f"cannot parse the units of threshold {text!r}.") from None
    return registry().Quantity(float(m.group(1)), units)


def _water(q: pint.Quantity, dst: pint.Unit) -> pint.Quantity | None:
    """Convert between water mass and depth (per time or not) through its density, else None."""
    rho = registry().Quantity(WATER_DENSITY, "kg m-3")
    for candidate in (q / rho, q * rho):
        try:
            return candidate.to(dst)
        except pint.errors.DimensionalityError:
            continue
    return None


def to_data_units(threshold: Threshold, units: str | None, *, what: str = "threshold") -> float:
    """The value of ``threshold`` in ``units`` (the data's units attribute).

    A bare number is taken to be in the data's units already (documented escape hatch for
    callers that know them); a string must carry units. Raises ConfigError for a threshold of
    the wrong dimension (e.g. "25 mm/day" for a temperature) and DataError when the data have
    no units to convert to.
    """
    if isinstance(threshold, int | float) and not isinstance(threshold, bool):
        return float(threshold)
    q: pint.Quantity = parse_quantity(threshold) if isinstance(threshold, str) else threshold  # type: ignore[assignment]
    if units is None or not str(units).strip():
        raise DataError(
            f"the data have no units attribute, so the {what} {threshold!r} cannot be converted; "
            "set the units of the variable."
        )
    try:
        dst = parse_units(str(units))
    except ValueError:
        raise DataError(f"cannot parse the data's units {units!r} to convert the {what}.") from None
    try:
        return float(q.to(dst).magnitude)
    except pint.errors.DimensionalityError:
        converted = _water(q, dst)
        if converted is not None:
            return float(converted.magnitude)
        raise ConfigError(
            f"the {what} {threshold!r} cannot be converted to the data's units {units!r}; "
            "give it in compatible units."
        ) from None


def threshold_for(da: xr.DataArray, threshold: Threshold, *, what: str = "threshold") -> float:
    """``threshold`` in the units of ``da`` (its ``units`` attribute)."""
    return to_data_units(threshold, da.attrs.get("units"), what=what)
