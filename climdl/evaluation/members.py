"""Ensemble predictions in the evaluation: members as extra models, then one column again.

A prediction whose variables have a ``member`` dim is an ensemble. :func:`find_ensembles` checks
and describes them; :func:`expand` replaces each by one model per member plus its ensemble mean
(``"<name> (ens. mean)"``), so that every existing diagnostic runs on each member in the usual
fused passes (no new kind of read). :func:`collapse_rows` and :func:`collapse_fields` then turn
the member models back into one column: the mean over members, with the std over members as
the row's ``spread``. A Dataset without ``member`` goes through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from climdl.errors import DataError
from climdl.evaluation.ensemble import MEMBER
from climdl.evaluation.summary import Row

#: Dims of the field Datasets along which models are stacked.
MODEL_DIMS = ("model", "source", "signal_model", "signal_source")


@dataclass(frozen=True)
class Ensemble:
    """An ensemble prediction and the model names it is evaluated under."""

    name: str  #: the prediction's name (its column in the tables)
    labels: tuple[str, ...]  #: the ``member`` coordinate values, as text
    members: tuple[str, ...]  #: the internal model name of each member

    @property
    def size(self) -> int:
        """The number of members M."""
        return len(self.members)

    @property
    def mean(self) -> str:
        """The model name of the ensemble mean."""
        return f"{self.name} (ens. mean)"


def check_truth(truth: xr.Dataset, what: str = "truth") -> None:
    """Refuse a truth with members (DataError): it must be one realisation."""
    if MEMBER in truth.dims:
        raise DataError(
            f"the {what} has a {MEMBER} dimension ({truth.sizes[MEMBER]} members); the truth must "
            "be a single simulation: select one member first."
        )


def find_ensembles(
    preds: Mapping[str, xr.Dataset], variables: Sequence[str]
) -> dict[str, Ensemble]:
    """The predictions with a ``member`` dim, by name.

    Raises:
        DataError: some variables of a prediction have members and others not, or an empty
            ``member`` dim.
    """
    out: dict[str, Ensemble] = {}
    for name, ds in preds.items():
        has = [v for v in variables if MEMBER in ds[v].dims]
        if not has:
            continue
        if len(has) != len(variables):
            lacking = [v for v in variables if v not in has]
            raise DataError(
                f"prediction {name!r} has members for {', '.join(has)} but not for "
                f"{', '.join(lacking)}; give every variable the same {MEMBER} dimension."
            )
        size = ds.sizes[MEMBER]
        if size == 0:
            raise DataError(f"prediction {name!r} has an empty {MEMBER} dimension.")
        labels = (
            [str(v) for v in ds[MEMBER].values]
            if MEMBER in ds.coords
            else list(map(str, range(size)))
        )
        out[name] = Ensemble(name, tuple(labels), tuple(f"{name} member {k}" for k in labels))
    taken = set(preds)
    for e in out.values():
        clash = taken & {*e.members, e.mean}
        if clash:
            raise DataError(
                f"the model name {sorted(clash)[0]!r} is taken by the members of {e.name!r}; "
                "rename that prediction."
            )
    return out


def check_historical(
    hist: Mapping[str, xr.Dataset], ensembles: Mapping[str, Ensemble], variables: Sequence[str]
) -> None:
    """Refuse historical predictions whose members do not match the future's (DataError)."""
    for name, ds in hist.items():
        size = ds.sizes.get(MEMBER, 0) if any(MEMBER in ds[v].dims for v in variables) else 0
        want = ensembles[name].size if name in ensembles else 0
        if size != want:
            raise DataError(
                f"the historical prediction of {name!r} has {size or 'no'} members but its "
                f"future prediction {want or 'none'}; the climate-change signal pairs member k of "
                "both periods, so give both the same members."
            )


def expand(
    preds: Mapping[str, xr.Dataset], ensembles: Mapping[str, Ensemble]
) -> dict[str, xr.Dataset]:
    """``preds`` with each ensemble replaced by its members and its ensemble mean (in place)."""
    out: dict[str, xr.Dataset] = {}
    for name, ds in preds.items():
        e = ensembles.get(name)
        if e is None:
            out[name] = ds
            continue
        for k, m in enumerate(e.members):
            out[m] = ds.isel({MEMBER: k}, drop=True)
        out[e.mean] = ds.mean(MEMBER, keep_attrs=True)
    return out


def collapsed_names(models: Sequence[str], ensembles: Mapping[str, Ensemble]) -> list[str]:
    """The model names of the tables: each ensemble's members give way to its name."""
    owner = {m: e.name for e in ensembles.values() for m in e.members}
    return list(dict.fromkeys(owner.get(m, m) for m in models))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def collapse_rows(rows: Sequence[Row], ensembles: Mapping[str, Ensemble]) -> list[Row]:
    """Rows with each ensemble's members replaced by its name: the mean of the members' values,
    the std over members (ddof=1; NaN for one member) as ``spread``."""
    if not ensembles:
        return list(rows)
    owner = {m: e for e in ensembles.values() for m in e.members}
    out = []
    for r in rows:
        values: dict[str, float] = {}
        spread = dict(r.spread)
        for m, v in r.values.items():
            e = owner.get(m)
            if e is None:
                values[m] = v
            elif e.name not in values:
                mean, std = _mean_std([r.values[k] for k in e.members if k in r.values])
                values[e.name] = mean
                spread[e.name] = std
        out.append(
            Row(
                r.variable,
                r.key,
                r.label,
                r.units,
                r.better,
                r.reduction,
                values,
                r.reference,
                spread,
            )
        )
    return out


def _collapse_dim(ds: xr.Dataset, dim: str, ensembles: Mapping[str, Ensemble]) -> xr.Dataset:
    """The variables stacked along ``dim`` with each ensemble's members replaced by their mean."""
    labels = [str(v) for v in ds[dim].values]
    owner = {m: e for e in ensembles.values() for m in e.members}
    if not any(lab in owner for lab in labels):
        return ds
    names = [str(k) for k, v in ds.data_vars.items() if dim in v.dims]
    sub = ds[names]
    parts, new = [], []
    for lab in labels:
        e = owner.get(lab)
        if e is None:
            parts.append(sub.sel({dim: lab}, drop=True))
            new.append(lab)
        elif e.name not in new:
            have = [m for m in e.members if m in labels]
            parts.append(sub.sel({dim: have}).mean(dim, keep_attrs=True))
            new.append(e.name)
    merged = xr.concat(
        parts,
        dim=xr.DataArray(new, dims=dim),
        coords="minimal",
        compat="override",
        join="override",
    )
    kept = {k: (merged[k] if k in names else v) for k, v in ds.data_vars.items()}
    return xr.Dataset(kept, attrs=ds.attrs)


def collapse_fields(ds: xr.Dataset, ensembles: Mapping[str, Ensemble]) -> xr.Dataset:
    """A field Dataset with each ensemble's member entries replaced by their mean (along every
    model/source dim); the ensemble mean stays its own entry."""
    for dim in MODEL_DIMS:
        if ensembles and dim in ds.dims:
            ds = _collapse_dim(ds, dim, ensembles)
    return ds
