"""Checks shared by the typed checkpoint specs (emulator and segmenter).

A checkpoint spec comes from a file the user hands over, so every field is checked for its type
and shape and every failure is one :class:`~climdl.errors.DataError` sentence (the loaders
prefix the file path), never a raw ``ValueError`` traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np
from torch import Tensor

from climdl.errors import DataError

__all__ = [
    "exact_keys",
    "forcing_columns",
    "malformed",
    "names",
    "numbers",
    "shaped",
    "size",
    "strings",
    "vector",
]


def _sequence(values: Any, what: str) -> Sequence[Any]:
    """``values`` as a sequence; a str, a mapping or a scalar is refused (no letter splitting)."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise DataError(f"the spec's {what} must be a list, not a {type(values).__name__}.")
    return list(values)


def strings(values: Any, what: str) -> tuple[str, ...]:
    """A tuple of strings (``what`` names the field in the message)."""
    out = _sequence(values, what)
    if not all(isinstance(v, str) for v in out):
        raise DataError(f"the spec's {what} {out!r} must all be strings.")
    return tuple(out)


def names(values: Any, what: str, allow_empty: bool = False) -> tuple[str, ...]:
    """A tuple of distinct, non-empty names."""
    out = strings(values, what)
    if not out and not allow_empty:
        raise DataError(f"the spec's {what} list is empty.")
    if any(not n for n in out) or len(set(out)) != len(out):
        raise DataError(f"the spec's {what} {list(out)} must be distinct, non-empty names.")
    return out


def numbers(values: Any, what: str) -> tuple[float, ...]:
    """A tuple of finite floats (bools and strings are refused)."""
    out = _sequence(values, what)
    if not all(isinstance(v, Real) and not isinstance(v, bool) for v in out) or not all(
        np.isfinite(float(v)) for v in out
    ):
        raise DataError(f"the spec's {what} {out!r} must all be finite numbers.")
    return tuple(float(v) for v in out)


def size(values: Any, what: str) -> tuple[int, int]:
    """Two positive integer sizes (floats and bools are refused, not truncated)."""
    out = _sequence(values, what)
    ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in out)
    if not ints or len(out) != 2 or min(out) < 1:
        raise DataError(f"the spec's {what} must be two positive sizes, not {out!r}.")
    return (int(out[0]), int(out[1]))


def vector(t: Any, n: int, what: str) -> None:
    """Refuse anything but a 1-D tensor of ``n`` values."""
    if not isinstance(t, Tensor) or tuple(t.shape) != (n,):
        got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise DataError(f"the spec's statistic {what} should have {n} values, not {got}.")


def shaped(t: Any, shapes: Sequence[tuple[int, ...]], what: str) -> None:
    """Refuse anything but a tensor of one of ``shapes``."""
    if not isinstance(t, Tensor) or tuple(t.shape) not in [tuple(s) for s in shapes]:
        got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        want = " or ".join(str(tuple(s)) for s in shapes)
        raise DataError(f"the spec's {what} should have shape {want}, not {got}.")


def exact_keys(d: Any, keys: Iterable[str], what: str, optional: Iterable[str] = ()) -> None:
    """Refuse a non-mapping, a missing key or an unknown one (naming it).

    Args:
        d: the stored dictionary.
        keys: the keys it must have.
        what: its name in messages (``emulator spec``, ``emulator spec's statistics``).
        optional: keys it may have besides.
    """
    if not isinstance(d, Mapping):
        raise DataError(f"the {what} is not a dictionary but a {type(d).__name__}.")
    known = set(keys) | set(optional)
    unknown = sorted(str(k) for k in d if k not in known)
    if unknown:
        raise DataError(
            f"the {what} is malformed: unknown entries {unknown} (known: {sorted(known)})."
        )
    missing = sorted(k for k in keys if k not in d)
    if missing:
        raise DataError(f"the {what} is malformed: it lacks {missing}.")


def forcing_columns(table: Any) -> dict[str, list[float]]:
    """Check a forcing table: a ``year`` column, one forcing column or more, equal lengths."""
    if not isinstance(table, Mapping) or "year" not in table or len(table) < 2:
        raise DataError("the spec's forcing table needs a 'year' column and a forcing column.")
    out = {str(k): list(numbers(v, f"forcing table column {k}")) for k, v in table.items()}
    n = len(out["year"])
    bad = sorted(k for k, v in out.items() if len(v) != n)
    if n == 0 or bad:
        raise DataError(f"the spec's forcing table columns {bad} do not have {n} values like year.")
    return out


def malformed(what: str, exc: Exception) -> DataError:
    """One DataError sentence for a malformed layout that tripped ``exc``."""
    why = f"missing {exc}" if isinstance(exc, KeyError) else " ".join(str(exc).split())
    return DataError(f"the {what} spec is malformed ({why}).")
