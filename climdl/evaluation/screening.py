"""Screening the aligned inputs before the evaluation: valid values and plausible ranges.

A prediction that is all missing, or whose values never meet the truth's, gives empty numbers
(every RMSE NaN) or fails late in a figure; a prediction in degC labelled ``K`` gives absurd
ones (an RMSE of 270 K). Both are mistakes a user makes, so :func:`screen` stops them in one
sentence before any diagnostic is computed. It needs only the smallest and largest value of
each input and variable, over the steps and points that are evaluated: one cheap Dask pass
(about a tenth of one evaluation pass, each chunk read once for all inputs) whose ranges are
then compared with the variables' plausible ranges, as ``climdl downscale`` and ``prepare``
do (:func:`climdl.data.units.check_plausible`).

The messages name each input by its role and its files. :func:`label` is the one place that
spells a role (``"prediction 'NAME'"``, ``"historical truth"``): :func:`file_labels` keys the
files with it and :func:`sides_of` looks them up with it, so a change to the wording cannot
make the messages silently lose their file names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import xarray as xr

from climdl.data.files import PathArg, describe, resolve_paths
from climdl.data.units import check_plausible
from climdl.errors import DataError
from climdl.evaluation.ensemble import MEMBER
from climdl.evaluation.passes import Progress, compute

#: The role of an input in the evaluation.
Role = Literal["truth", "prediction"]

#: Paths or globs of one input.
Files = PathArg | Sequence[PathArg]


def label(role: Role, name: str | None = None, period: str = "") -> str:
    """How messages name an input: ``"truth"``, ``"prediction 'NAME'"``, ``"historical truth"``.

    ``name`` is the model of a prediction; ``period`` prefixes the role (``"historical"``).
    """
    text = f"{period} {role}" if period else role
    return text if name is None else f"{text} {name!r}"


def file_labels(
    truth: Files,
    preds: Mapping[str, Files],
    hist_truth: Files | None = None,
    hist_preds: Mapping[str, Files] | None = None,
) -> dict[str, str]:
    """The inputs' files for messages (the first and how many more), keyed by :func:`label`."""
    out = {label("truth"): _describe(truth)}
    out |= {label("prediction", m): _describe(p) for m, p in preds.items()}
    if hist_truth is not None:
        h = "historical"
        out[label("truth", period=h)] = _describe(hist_truth)
        out |= {label("prediction", m, h): _describe(p) for m, p in (hist_preds or {}).items()}
    return out


def _describe(p: Files) -> str:
    """The files behind paths or globs, shortly (the first and how many more)."""
    return describe(resolve_paths(p))


@dataclass(frozen=True)
class Side:
    """One input of the evaluation, on the evaluated steps and grid.

    Attributes:
        label: how messages name it (``"truth"``, ``"prediction 'emulator'"``, ...).
        data: its variables, aligned with ``truth`` when it is a prediction.
        truth: the truth it is scored against (its missing points are not evaluated), or None
            for a truth.
        files: its files, for messages ("" when it was not read from files).
    """

    label: str
    data: xr.Dataset
    truth: xr.Dataset | None = None
    files: str = ""

    @property
    def where(self) -> str:
        """The input in a message: its files and its role, or its role alone."""
        return f"{self.files} (the {self.label})" if self.files else f"the {self.label}"


def _values(side: Side, var: str) -> xr.DataArray:
    """The values of ``var`` that are evaluated: a prediction's where the truth has values."""
    da = side.data[var]
    if side.truth is not None:
        da = da.where(side.truth[var].notnull())
    return da


def _lazy_range(da: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Smallest and largest value (NaN ignored, infinities kept), per member of an ensemble."""
    dims = [d for d in da.dims if d != MEMBER]
    return da.min(dim=dims, skipna=True), da.max(dim=dims, skipna=True)


def _span(time: xr.DataArray) -> str:
    v = time.values
    return f"{v.size} time step(s) from {str(v[0])[:10]} to {str(v[-1])[:10]}"


def _check_valid(side: Side, var: str, low: np.ndarray) -> None:
    """DataError when ``var`` of ``side`` (or one of its members) has no valid value."""
    empty = np.isnan(np.atleast_1d(low))
    if not empty.any():
        return
    who = side.where
    if empty.size > 1 or MEMBER in side.data[var].dims:
        da = side.data[var]
        labels = (
            [str(v) for v in da[MEMBER].values]
            if MEMBER in da.coords
            else [str(k) for k in range(empty.size)]
        )
        who = f"member {labels[int(np.flatnonzero(empty)[0])]} of {who}"
    period = _span(side.data["time"])
    if side.truth is None:
        raise DataError(
            f"{var} in {who} has no valid value over the {period} evaluated (all missing?); "
            "check the file or choose another period or --variables."
        )
    raise DataError(
        f"{var} in {who} has no valid value where the truth has one ({period} in common); "
        "a prediction that is all missing, or only where the truth is, cannot be scored."
    )


def screen(
    sides: Sequence[Side],
    variables: Sequence[str],
    *,
    range_check: bool = True,
    progress: Progress | None = None,
) -> None:
    """Refuse inputs that cannot give meaningful numbers, before the evaluation reads them.

    For every side and variable, in one Dask pass: the values that are evaluated must include
    a valid one (a prediction's on the truth's valid steps and points, each ensemble member's
    too), and with ``range_check`` lie within the variable's plausible range in its canonical
    units (a units mistake such as degC labelled ``K``).

    Raises:
        DataError: the first side and variable that fails, in one sentence naming the files,
            the variable and, for a range, the values found and the plausible range.
    """
    keys = [(i, var) for i, side in enumerate(sides) for var in variables if var in side.data]
    lazy = {f"{i}/{var}": _lazy_range(_values(sides[i], var)) for i, var in keys}
    got = compute(lazy, progress)
    ranges: list[tuple[Side, str, np.ndarray, np.ndarray]] = [
        (sides[i], var, np.asarray(got[f"{i}/{var}"][0]), np.asarray(got[f"{i}/{var}"][1]))
        for i, var in keys
    ]
    for side, var, low, _high in ranges:
        _check_valid(side, var, low)
    if not range_check:
        return
    for side, var, low, high in ranges:
        check_plausible(
            [var],
            [float(np.nanmin(low))],
            [float(np.nanmax(high))],
            attrs={var: side.data[var].attrs},
            where=side.where,
        )


def sides_of(
    truth: xr.Dataset,
    preds: Mapping[str, xr.Dataset],
    files: Mapping[str, str] | None,
    *,
    period: str = "",
) -> list[Side]:
    """The truth and the predictions of one period as sides, labelled as the messages say.

    ``period`` prefixes the labels (``"historical"``); ``files`` maps the labels
    (:func:`label`, as :func:`file_labels` keys them) to their files.
    """
    known = files or {}
    t_label = label("truth", period=period)
    out = [Side(t_label, truth, None, known.get(t_label, ""))]
    for name, ds in preds.items():
        p_label = label("prediction", name, period)
        out.append(Side(p_label, ds, truth, known.get(p_label, "")))
    return out
