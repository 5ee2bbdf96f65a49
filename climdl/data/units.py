"""Conversion of variables to their canonical units.

Units are parsed with the CF-aware pint registry of cf_xarray (udunits spellings such as
``kg m-2 s-1`` or ``degrees_Celsius``), and every conversion is reduced to ``value * scale +
offset`` so it stays lazy on dask arrays. Two conversions pint cannot do on its own are explicit:
precipitation as a mass flux or amount (kg m-2 s-1, kg m-2, mm per time step) becomes a depth of
liquid water per day through the density of water, and geopotential height (m) becomes
geopotential (m2 s-2) through standard gravity (and back for orography).

After conversion, :func:`check_plausible` compares a field's smallest and largest values with
the plausible range of its variable (:data:`climdl.data.variables.PLAUSIBLE_RANGES`): a units
attribute that says degC over values in K converts without complaint, but gives 530-600 K.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import xarray as xr

from climdl.data.variables import (
    G0,
    WATER_DENSITY,
    canonical_attrs,
    canonical_units,
    plausible_range,
)
from climdl.errors import DataError

if TYPE_CHECKING:
    import pint

log = logging.getLogger(__name__)


@functools.cache
def registry() -> pint.UnitRegistry:
    """The CF-aware unit registry: cf_xarray's if available, else pint's with udunits aliases.

    Built on first use, not on import: pint and its definitions take ~0.5 s to load, which every
    command would pay while most inputs (climdl's own files above all) are already in canonical
    units and need no conversion (:func:`conversion` answers those without the registry)."""
    import pint

    pint_log = logging.getLogger("pint.util")
    level = pint_log.level
    pint_log.setLevel(logging.ERROR)  # cf_xarray redefines units on import: expected, not news
    try:
        from cf_xarray.units import units as cf_units
    except ImportError:  # pragma: no cover - cf_xarray is a dependency
        exponent = re.compile(r"(?<=[A-Za-z)])([-+]?\d+)")
        ureg: pint.UnitRegistry = pint.UnitRegistry(
            preprocessors=[lambda s: exponent.sub(r"**\1", s)]
        )
        for line in ("@alias meter = gpm", "@alias degree_Celsius = degrees_Celsius"):
            with contextlib.suppress(Exception):
                ureg.define(line)
        return ureg
    finally:
        pint_log.setLevel(level)
    return cf_units


# Spellings seen in real files that neither udunits nor pint accept.
_SPELLINGS: dict[str, str] = {
    "kelvin": "K",
    "degrees k": "K",
    "deg k": "K",
    "degk": "K",
    "degrees c": "degC",
    "deg c": "degC",
    "fraction": "1",
    "0-1": "1",
    "mm/d": "mm day-1",
    "kg/kg": "kg kg-1",
    "": "1",
}


def parse_units(text: str) -> pint.Unit:
    """Parse a units string (udunits or pint spelling); ValueError if it is not understood."""
    clean = _SPELLINGS.get(text.strip().lower(), text.strip())
    try:
        return cast("pint.Unit", registry().Quantity(1.0, clean).units)
    except Exception as exc:  # pint raises several types (UndefinedUnitError, Syntax, ...)
        raise ValueError(f"cannot parse units {text!r}") from exc


def _affine(src: pint.Unit, dst: pint.Unit) -> tuple[float, float]:
    """Scale and offset with ``dst_value = src_value * scale + offset`` (offset for degC/degF)."""
    ureg = registry()
    zero = ureg.Quantity(0.0, src).to(dst).magnitude
    one = ureg.Quantity(1.0, src).to(dst).magnitude
    return float(one - zero), float(zero)


def conversion(
    name: str, units: str, *, time_step_days: float | None = None, source: str | None = None
) -> tuple[float, float]:
    """Return ``(scale, offset)`` that turn values in ``units`` into the canonical units of ``name``.

    ``time_step_days`` is the sampling interval, needed only when precipitation is given as an
    amount per time step (kg m-2, mm, m); without it one day is assumed. Raises DataError naming
    the variable, the units found and the ones expected when no conversion exists.
    """
    target = canonical_units(name)
    if units.strip() == target:  # already canonical (climdl's own files): nothing to parse
        return 1.0, 0.0
    import pint

    ureg = registry()
    label = source if source is not None and source != name else name
    try:
        src = parse_units(units)
    except ValueError:
        raise DataError(
            f"variable {label!r} has units {units!r}, which climdl cannot parse; expected "
            f"{target!r} or a convertible unit (fix the units attribute or pass assume_units)."
        ) from None
    dst = parse_units(target)
    factor = 1.0
    dims = ureg.Quantity(1.0, src).dimensionality
    if name == "pr":
        if (
            dims == ureg.Quantity(1.0, "kg m-2 s-1").dimensionality
            or dims == ureg.Quantity(1.0, "kg m-2").dimensionality
        ):
            factor /= WATER_DENSITY  # kg m-2 of water == 1 mm == 1e-3 m of depth
            src = src / ureg.Unit("kg m-3")
        if ureg.Quantity(1.0, src).check("[length]"):
            step = time_step_days
            if step is None:
                log.warning(
                    "%s is an amount (%s) with unknown time step; assuming daily", label, units
                )
                step = 1.0
            factor /= step
            src = src / ureg.Unit("day")
    elif target in ("m2 s-2", "m") and dims != ureg.Quantity(1.0, target).dimensionality:
        if ureg.Quantity(1.0, src).check("[length]"):  # geopotential height -> geopotential
            factor *= G0
            src = src * ureg.Unit("m s-2")
        elif ureg.Quantity(1.0, src).check("[length] ** 2 / [time] ** 2"):  # geopotential -> height
            factor /= G0
            src = src / ureg.Unit("m s-2")
    try:
        scale, offset = _affine(src, dst)
    except pint.errors.DimensionalityError:
        raise DataError(
            f"variable {label!r} has units {units!r}, which cannot be converted to {target!r} "
            f"(needed for {name}); fix the units attribute or choose another input variable."
        ) from None
    return scale * factor, offset


def to_canonical(
    da: xr.DataArray,
    name: str,
    *,
    source: str | None = None,
    assumed: str | None = None,
    time_step_days: float | None = None,
) -> xr.DataArray:
    """Convert ``da`` to the canonical units of ``name`` as float32, with canonical attributes.

    Missing units: ``assumed`` is used if given, otherwise the canonical unit is assumed and a
    warning is logged. Only scale/offset arithmetic is applied, so dask arrays stay lazy. The
    original variable name goes to ``attrs["climdl_source_name"]``.
    """
    source = source if source is not None else str(da.name)
    units = da.attrs.get("units")
    if units is None or not str(units).strip():
        if assumed is not None:
            units = assumed
        else:
            units = canonical_units(name)
            log.warning("%s has no units attribute; assuming %s", source, units)
    scale, offset = conversion(name, str(units), time_step_days=time_step_days, source=source)
    out = da
    if not np.isclose(scale, 1.0, rtol=1e-12, atol=0.0):
        out = out * np.float32(scale) if da.dtype == np.float32 else out * scale
    if offset != 0.0:
        out = out + offset
    out = out.astype(np.float32)
    attrs: dict[str, Any] = dict(canonical_attrs(name))
    attrs["climdl_source_name"] = source
    if str(units) != attrs["units"]:
        attrs["climdl_source_units"] = str(units)
    out.attrs = attrs
    out.name = name
    return out


def assumed_units_for(
    assume_units: Mapping[str, str] | None, canonical: str, source: str
) -> str | None:
    """Look up an assumed unit by canonical name first, then by the source variable name."""
    if not assume_units:
        return None
    return assume_units.get(canonical, assume_units.get(source))


#: The option that turns the range check off, named in its messages.
RANGE_CHECK_FLAG = "--no-range-check"

#: Units the values of a field may really be in, by canonical unit: tried, for the message of
#: a range error, to name the likely slip (degC over values in K, mm day-1 labelled kg m-2 s-1).
_SUSPECTS: dict[str, tuple[str, ...]] = {
    "K": ("K", "degC", "degF"),
    "mm day-1": ("mm day-1", "kg m-2 s-1", "mm h-1"),
    "m2 s-2": ("m2 s-2", "m", "dam"),
    "m s-1": ("m s-1", "km h-1", "cm s-1"),
    "kg kg-1": ("kg kg-1", "g kg-1"),
    "m": ("m", "m2 s-2", "km"),
    "1": ("1", "%"),
}


def value_range(values: np.ndarray, axis: int | tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest values along ``axis``, NaN ignored (NaN where all are NaN).

    No copy of ``values`` is made; infinities count (they are out of any plausible range).
    """
    return np.fmin.reduce(values, axis=axis), np.fmax.reduce(values, axis=axis)


def _num(v: float) -> str:
    return f"{v:.6g}"


def likely_units(name: str, low: float, high: float, declared: str) -> str | None:
    """A unit in which ``low..high`` (converted from ``declared``) would be plausible, or None.

    Undoes the conversion from ``declared`` and redoes it from each suspect unit of the
    variable's kind; amounts are taken as daily (this only words a hint).
    """
    bounds = plausible_range(name)
    if bounds is None:
        return None
    try:
        scale, offset = conversion(name, declared, time_step_days=1.0)
        for unit in _SUSPECTS.get(canonical_units(name), ()):
            s2, o2 = conversion(name, unit, time_step_days=1.0)
            if np.isclose(s2, scale, rtol=1e-9) and np.isclose(o2, offset, rtol=1e-9):
                continue  # the declared unit itself
            a, b = sorted(((v - offset) / scale * s2 + o2) for v in (low, high))
            if bounds[0] <= a and b <= bounds[1]:
                return unit
    except (DataError, ValueError, ZeroDivisionError):
        return None
    return None


def check_plausible(
    names: Sequence[str],
    lows: Sequence[float] | np.ndarray,
    highs: Sequence[float] | np.ndarray,
    *,
    attrs: Mapping[str, Mapping[str, Any]] | None = None,
    where: str | None = None,
    when: str | None = None,
) -> None:
    """Raise DataError if a variable's values ``lows[i]..highs[i]`` leave its plausible range.

    ``names`` are canonical variables, the values in canonical units (NaN: nothing to check).
    ``attrs`` (the reader's attributes by name) tell the units and name the file gave, for the
    message; ``where`` names the input, ``when`` the time steps. The message names the range
    found, the plausible one, a likely cause and the option that skips the check.
    """
    for i, name in enumerate(names):
        bounds = plausible_range(name)
        low, high = float(lows[i]), float(highs[i])
        if bounds is None or np.isnan(low) or np.isnan(high):
            continue
        if bounds[0] <= low and high <= bounds[1]:
            continue
        units = canonical_units(name)
        meta = (attrs or {}).get(name, {})
        declared = str(meta.get("climdl_source_units", units))
        source = str(meta.get("climdl_source_name", name))
        label = name if source == name else f"{name} (variable {source!r})"
        suspect = likely_units(name, low, high, declared)
        if suspect is not None:
            cause = f"the units say {declared!r} but the values look like {suspect}?"
        elif bounds[0] <= -high and -low <= bounds[1]:
            cause = "the values look sign-reversed: another sign convention?"
        else:
            cause = "a wrong units attribute, or a fill value not declared as _FillValue?"
        unit = "" if units == "1" else f" {units}"
        raise DataError(
            f"{label}{f' in {where}' if where else ''} has values from {_num(low)} to "
            f"{_num(high)}{unit}{f' ({when})' if when else ''}, outside its plausible range "
            f"{_num(bounds[0])} to {_num(bounds[1])}{unit} ({cause}); fix the units attribute "
            f"or the data, or pass {RANGE_CHECK_FLAG} if the values are right."
        )
