"""The size of the nudge each input channel may receive: parsing ``--eps`` and building radii.

A sensitivity run asks how far the answer moves when every predictor moves by at most a
physically meaningful amount, so the bounds are written in physical units, per variable family
or per channel: ``"t=0.5 K, q=5 %, z=20 m2 s-2, u=v=0.5 m s-1"``. Units are parsed with the
CF-aware pint registry of :mod:`climdl.data.units` (udunits spellings such as ``m s-1``) and
converted to the channel's own units, so ``t=500 mK`` and ``u=1.8 km h-1`` mean what they say. A
``%`` bound is relative to the value (``q=5 %``: 5 % of the humidity at each point), the natural
scale of a quantity that spans orders of magnitude. Channels no bound names are held fixed.

A bound is the size of a *difference*, so offset units convert by their scale only
(``0.5 degC`` is 0.5 K), and a length given for a geopotential channel is a geopotential height
(``z=2 m`` is 2 m times standard gravity in m2 s-2), as climdl converts geopotential inputs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pint
import torch
from torch import Tensor

from climdl.data.units import parse_units, registry
from climdl.data.variables import G0
from climdl.errors import ConfigError, DataError

__all__ = ["DEFAULT_EMULATOR_BOUNDS", "Bound", "describe", "parse_bounds", "radius"]

#: Bounds of the emulator's predictors when the user gives none (families a model lacks are
#: skipped): about the spread of reanalyses around one another at the synoptic scale.
DEFAULT_EMULATOR_BOUNDS = "t=0.5 K, q=5 %, z=20 m2 s-2, u=v=0.5 m s-1"

_EXAMPLE = "t=0.5 K, q=5 %"
_NUMBER = re.compile(
    r"^\s*(?P<number>[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|inf(?:inity)?))"
    r"(?P<unit>.*)$",
    re.IGNORECASE,
)
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_PERCENT = ("%", "percent")


@dataclass(frozen=True)
class Bound:
    """The bound of one input channel: ``|delta| <= absolute + relative * |x|``.

    Attributes:
        channel: the channel's name (``t_850``).
        absolute: the absolute part, in the channel's own units (converted from the user's).
        relative: the fraction of ``|x|`` from a ``%`` bound (0 if none).
        text: the bound as the user gave it, normalised (``"0.5 K"``, ``"5 %"``).
    """

    channel: str
    absolute: float
    relative: float
    text: str


def _items(text: str) -> list[str]:
    """The non-empty items of a bound string (separated by commas or semicolons)."""
    return [item.strip() for item in re.split(r"[,;]", text) if item.strip()]


def _matches(key: str, channel: str) -> int:
    """How specifically ``key`` names ``channel``: 0 not at all, else the key's length.

    The channel's own name is longer than any of its families (``t_850`` > ``t``), so the
    most specific key of a channel is the one with the largest value.
    """
    return len(key) if key == channel or channel.startswith(key + "_") else 0


def _scale(src: pint.Unit, dst: pint.Unit) -> float:
    """The factor turning a *difference* in ``src`` into one in ``dst`` (offsets cancel)."""
    zero = registry().Quantity(0.0, src).to(dst).magnitude
    one = registry().Quantity(1.0, src).to(dst).magnitude
    return float(one - zero)


def _convert(
    item: str, value: float, unit: pint.Unit, unit_text: str, channel: str, channel_units: str
) -> float:
    """``value`` in ``unit`` expressed in ``channel_units``; ConfigError if not convertible."""
    try:
        dst = parse_units(channel_units)
    except ValueError:
        raise DataError(
            f"the model gives channel {channel!r} the units {channel_units!r}, which climdl "
            "cannot parse, so no bound can be converted to them."
        ) from None
    geopotential = registry().Quantity(1.0, "m2 s-2").dimensionality
    if registry().Quantity(1.0, dst).dimensionality == geopotential and registry().Quantity(
        1.0, unit
    ).check("[length]"):
        value, unit = value * G0, unit * registry().Unit("m s-2")  # geopotential height
    try:
        return value * _scale(unit, dst)
    except pint.errors.DimensionalityError:
        raise ConfigError(
            f"bound {item!r} is in {unit_text}, which cannot be converted to the units of "
            f"{channel} ({channel_units}); give it in {channel_units} or a convertible unit."
        ) from None


def _parse_value(item: str, value_text: str) -> tuple[float, pint.Unit | None, str]:
    """The number, the unit (None for ``%``) and the unit's text of one bound's value."""
    match = _NUMBER.match(value_text)
    if match is None:
        raise ConfigError(
            f"bound {item!r} does not start with a number; write name=value unit, e.g. "
            f"{_EXAMPLE!r}."
        )
    value = float(match["number"])
    unit_text = " ".join(match["unit"].split())
    if not math.isfinite(value):
        raise ConfigError(f"bound {item!r} is not a finite number; give a size such as 0.5 K.")
    if value < 0:
        raise ConfigError(f"bound {item!r} is negative; a bound is a size |delta| >= 0.")
    if not unit_text:
        raise ConfigError(
            f"bound {item!r} has no unit; write it in the channel's units (e.g. {_EXAMPLE!r}), "
            "with 1 for a dimensionless channel or % for a fraction of the value."
        )
    if unit_text.lower() in _PERCENT:
        return value, None, "%"
    try:
        unit = parse_units(unit_text)
    except ValueError:
        raise ConfigError(
            f"bound {item!r} has the unit {unit_text!r}, which climdl cannot parse (use "
            "CF/udunits spellings such as K, m s-1, m2 s-2, kg kg-1, 1 or %)."
        ) from None
    if unit == registry().percent:
        return value, None, "%"
    return value, unit, unit_text


def parse_bounds(
    text: str,
    channels: Sequence[str],
    units: Mapping[str, str],
    *,
    defaults: bool = False,
) -> dict[str, Bound]:
    """The bound of every perturbed channel, from ``key=value unit`` items.

    Items are separated by commas or semicolons; ``u=v=0.5 m s-1`` gives both keys the bound. A
    key is a channel name (``t_850``) or a family (``t``: every channel named ``t`` or
    ``t_<level>``); a channel key wins over its family (``t=0.5 K, t_850=0 K`` holds ``t_850``
    fixed). Units are converted to the channel's; ``%`` (or ``percent``) is relative to the
    value; a dimensionless channel takes ``1`` (reflectance ``0.01 1``). Channels with no bound,
    or a bound of 0, are held fixed: they are not in the result.

    Args:
        text: the bounds (e.g. :data:`DEFAULT_EMULATOR_BOUNDS` or the user's ``--eps``).
        channels: the model's input channels, in order.
        units: the units of each channel (extra keys, e.g. the targets', are ignored).
        defaults: skip keys that match no channel instead of refusing them (the default string
            names families a model may lack).

    Returns:
        The bounds of the perturbed channels, keyed and ordered by channel.

    Raises:
        ConfigError: a key that matches no channel (unless ``defaults``), a key given twice, a
            negative or non-finite value, a value without a unit or with one that cannot be
            parsed or converted to the channel's, a malformed item, or bounds that hold every
            channel fixed.
    """
    # per channel: (match strength, item, value, unit or None for %, unit text)
    chosen: dict[str, tuple[int, str, float, pint.Unit | None, str]] = {}
    seen: set[str] = set()
    for item in _items(text):
        *keys, value_text = (part.strip() for part in item.split("="))
        if not keys or not value_text or not all(_KEY.match(key) for key in keys):
            raise ConfigError(
                f"bound item {item!r} is not of the form name=value unit (e.g. {_EXAMPLE!r}, "
                "items separated by commas)."
            )
        value, unit, unit_text = _parse_value(item, value_text)
        for key in keys:
            if key in seen:
                raise ConfigError(f"bound {item!r} names {key!r}, which an earlier item bounds.")
            seen.add(key)
            strengths = {channel: _matches(key, channel) for channel in channels}
            if not any(strengths.values()):
                if defaults:
                    continue
                raise ConfigError(
                    f"bound {item!r} names {key!r}, which is neither a channel nor a family of "
                    f"the model's inputs ({', '.join(channels)})."
                )
            for channel, strength in strengths.items():
                if strength > (chosen[channel][0] if channel in chosen else 0):
                    chosen[channel] = (strength, item, value, unit, unit_text)
    bounds: dict[str, Bound] = {}
    for channel in channels:
        if channel not in chosen:
            continue
        _, item, value, unit, unit_text = chosen[channel]
        shown = f"{value:g} {unit_text}"
        if unit is None:
            bound = Bound(channel, 0.0, value / 100.0, shown)
        else:
            if channel not in units:
                raise DataError(f"the model gives no units for its input channel {channel!r}.")
            absolute = _convert(item, value, unit, unit_text, channel, units[channel])
            bound = Bound(channel, absolute, 0.0, shown)
        if bound.absolute > 0 or bound.relative > 0:
            bounds[channel] = bound
    if not bounds:
        raise ConfigError(
            f"the bounds {text.strip()!r} hold every input channel fixed; give a positive bound "
            f"to at least one of {', '.join(channels)} (e.g. {_EXAMPLE!r})."
        )
    return bounds


def radius(x: Tensor, bounds: Mapping[str, Bound], channels: Sequence[str]) -> Tensor:
    """The bound of every input element: ``absolute + relative * |x|``, 0 for fixed channels.

    A non-finite input (a missing value) gets radius 0: it is not moved.

    Args:
        x: inputs [B, C, ...] in physical units, channels ordered as ``channels``.
        bounds: the bounds of the perturbed channels (:func:`parse_bounds`).
        channels: the names of the C channels.

    Returns:
        The radius, same shape, dtype and device as ``x`` (not attached to its graph).
    """
    if x.dim() < 2 or x.shape[1] != len(channels):
        raise ValueError(f"inputs of shape {tuple(x.shape)} do not have {len(channels)} channels")
    unknown = set(bounds) - set(channels)
    if unknown:
        raise ValueError(f"bounds for channels {sorted(unknown)} not among {list(channels)}")
    x = x.detach()
    out = torch.zeros_like(x)
    for i, channel in enumerate(channels):
        bound = bounds.get(channel)
        if bound is not None:
            out[:, i] = bound.absolute + bound.relative * x[:, i].abs()
    return torch.where(torch.isfinite(x), out, torch.zeros_like(out))


def describe(bounds: Mapping[str, Bound]) -> str:
    """One line for attributes and tables, in channel order: ``"t_500=0.5 K; q_850=5 %"``.

    Args:
        bounds: the bounds of the perturbed channels (:func:`parse_bounds`).

    Returns:
        The bounds as ``channel=text`` items separated by ``"; "`` (:func:`parse_bounds` reads
        it back).
    """
    return "; ".join(f"{channel}={bound.text}" for channel, bound in bounds.items())
