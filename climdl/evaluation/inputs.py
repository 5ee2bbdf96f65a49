"""Opening truth and predictions, and putting them on common days of one grid.

Both sides go through :func:`climdl.data.reader.open_dataset`, so names and units are canonical
(kg m-2 s-1 becomes mm day-1, degC becomes K) and data stay lazy. Days are matched by calendar
date (year, month, day) whatever the hour of the stamp (predictors are often stamped 00:00,
RCM days 12:00); sub-daily steps by date and time of day, monthly steps by month. Every side is
reduced to the steps all sides share, and predictions take the truth's time coordinate. Grids must be the same (dims, sizes and coordinates).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import xarray as xr

from climdl.data import timeaxis
from climdl.data.files import PathArg
from climdl.data.reader import open_dataset
from climdl.errors import DataError
from climdl.evaluation import _reduce, _time
from climdl.preprocess.length_units import metres_per_unit

log = logging.getLogger(__name__)

#: The variables evaluated when none are named, in this order, if both sides have them.
DEFAULT_VARIABLES = ("tasmax", "pr", "tasmin", "tas")


def open_side(
    paths: PathArg | Sequence[PathArg],
    variables: Sequence[str] | None,
    *,
    chunks: Mapping[str, int | str] | None = None,
    bbox: Sequence[float] | None = None,
) -> xr.Dataset:
    """Open one side (truth or a prediction) lazily with canonical names and units (cut to
    ``bbox``, lon_min lon_max lat_min lat_max, when given)."""
    ds = open_dataset(paths, variables, chunks=chunks, strict=variables is not None, bbox=bbox)
    if "time" not in ds.dims:
        raise DataError(f"{_describe(paths)} has no time axis; evaluation needs time series.")
    return ds


def _describe(paths: PathArg | Sequence[PathArg]) -> str:
    if isinstance(paths, str | bytes) or not isinstance(paths, Sequence):
        return str(paths)
    return ", ".join(map(str, paths))


def choose_variables(sides: Mapping[str, xr.Dataset], requested: Sequence[str] | None) -> list[str]:
    """The variables to evaluate: ``requested`` (all sides must have them), else those in common."""
    if requested:
        for name, ds in sides.items():
            missing = [v for v in requested if v not in ds.data_vars]
            if missing:
                raise DataError(
                    f"the {name} has no {', '.join(missing)} (it has "
                    f"{', '.join(map(str, ds.data_vars)) or 'nothing'}); choose --variables that "
                    "every input has."
                )
        return list(dict.fromkeys(requested))
    timed = [
        {str(v) for v, da in ds.data_vars.items() if "time" in da.dims} for ds in sides.values()
    ]
    common = set.intersection(*timed) if timed else set()
    chosen = [v for v in DEFAULT_VARIABLES if v in common] + sorted(common - set(DEFAULT_VARIABLES))
    if not chosen:
        listing = "; ".join(
            f"{n}: {', '.join(sorted(t)) or 'none'}" for n, t in zip(sides, timed, strict=True)
        )
        raise DataError(f"truth and predictions have no variable in common ({listing}).")
    return chosen


def _grid_coords(ds: xr.Dataset, var: str) -> dict[Hashable, np.ndarray]:
    """The grid's coordinates, projected ones in metres (an archive in m, a truth in km).

    An ensemble's ``member`` labels are no grid coordinate (they are often text, r1i1p1f1).
    """
    da = ds[var]
    out: dict[Hashable, np.ndarray] = {}
    for d in _reduce.spatial_dims(da):
        if d in da.coords and d != "member":
            c = da[d]
            out[d] = np.asarray(c.values, dtype=np.float64)
            if str(c.attrs.get("standard_name", "")).startswith("projection_"):
                out[d] = out[d] * (metres_per_unit(c.attrs.get("units", "km")) or 1.0)
    for name in ("lat", "lon"):
        if name in da.coords and name not in out:
            out[name] = np.asarray(da[name].values, dtype=np.float64)
    return out


def check_grid(truth: xr.Dataset, other: xr.Dataset, var: str, name: str) -> None:
    """Raise DataError unless ``other[var]`` is on the grid of ``truth[var]``."""
    t, o = truth[var], other[var]
    ts = {d: t.sizes[d] for d in _reduce.spatial_dims(t)}
    os_ = {d: o.sizes[d] for d in _reduce.spatial_dims(o) if d != "member"}  # ensembles
    if ts != os_:
        raise DataError(
            f"{var} of the {name} is on another grid ({_shape(os_)}) than the truth "
            f"({_shape(ts)}); regrid the prediction to the target grid first."
        )
    tc, oc = _grid_coords(truth, var), _grid_coords(other, var)
    for key in tc.keys() & oc.keys():
        a, b = tc[key], oc[key]
        if a.shape != b.shape:
            continue
        step = float(np.nanmax(np.abs(np.diff(a.ravel())))) if a.size > 1 else 1.0
        if not np.allclose(a, b, rtol=0.0, atol=max(1e-6, 1e-3 * step), equal_nan=True):
            raise DataError(
                f"{var} of the {name} has other {key} coordinates than the truth (largest "
                f"difference {float(np.nanmax(np.abs(a - b))):.4g}); regrid it to the target grid."
            )


def _shape(sizes: Mapping[Hashable, int]) -> str:
    return " x ".join(f"{n} {d}" for d, n in sizes.items())


def series_step(sides: Mapping[str, xr.Dataset]) -> timeaxis.TimeStep:
    """The time step all sides share (daily, 6-hourly, monthly...); DataError if they differ."""
    steps = {name: timeaxis.time_step(ds["time"]) for name, ds in sides.items()}
    known = {n: s for n, s in steps.items() if sides[n].sizes["time"] > 1}
    if len({s.label for s in known.values()}) > 1:
        listing = ", ".join(f"the {n} {s.label}" for n, s in known.items())
        raise DataError(
            f"the inputs have different time steps ({listing}); evaluate series of one time "
            "step (aggregate the finer ones first)."
        )
    return next(iter(known.values()), timeaxis.DAILY)


def common_day_indices(sides: Mapping[str, xr.Dataset], warn: bool = True) -> dict[str, np.ndarray]:
    """For each side, the indices of the steps every side has, in time order.

    Daily steps are matched by calendar day whatever the hour of the stamp, sub-daily steps by
    day and time of day, monthly (yearly) steps by month (year). ``warn``: say which steps are
    left out and when calendars differ (False for a second view of the same inputs).
    """
    step = series_step(sides)
    unit = {"sub-daily": "time stamp", "monthly": "month", "yearly": "year"}.get(step.kind, "day")
    keys: dict[str, np.ndarray] = {}
    for name, ds in sides.items():
        k = _time.step_keys(ds["time"], step)
        uniq, counts = np.unique(k, return_counts=True)
        if uniq.size != k.size:
            first = int(np.flatnonzero(np.isin(k, uniq[counts > 1]))[0])
            raise DataError(
                f"the {name} has several time steps on one {unit} (e.g. "
                f"{str(ds['time'].values[first])[:19]}); remove the duplicated steps."
            )
        keys[name] = k
    calendars = {name: timeaxis.calendar_of(ds["time"]) for name, ds in sides.items()}
    if warn and len(set(calendars.values())) > 1:
        log.warning(
            "calendars differ (%s); days are matched by their calendar date",
            ", ".join(f"{n}: {c}" for n, c in calendars.items()),
        )
    common = None
    for k in keys.values():
        common = k if common is None else np.intersect1d(common, k)
    assert common is not None
    if common.size == 0:
        spans = "; ".join(f"{n}: {_span(ds['time'])}" for n, ds in sides.items())
        raise DataError(f"truth and predictions have no {unit} in common ({spans}).")
    out = {name: np.flatnonzero(np.isin(k, common)) for name, k in keys.items()}
    dropped = {n: keys[n].size - idx.size for n, idx in out.items() if keys[n].size > idx.size}
    if dropped and warn:
        log.warning(
            "evaluating the %d common %ss; left out: %s",
            common.size,
            unit,
            ", ".join(f"{d} {unit}(s) of the {n}" for n, d in dropped.items()),
        )
    return out


def _span(time: xr.DataArray) -> str:
    v = time.values
    return f"{str(v[0])[:10]} to {str(v[-1])[:10]}" if v.size else "no steps"


def align(
    truth: xr.Dataset,
    preds: Mapping[str, xr.Dataset],
    variables: Sequence[str],
    warn: bool = True,
) -> tuple[xr.Dataset, dict[str, xr.Dataset]]:
    """Truth and predictions on their common days, predictions on the truth's time stamps.

    Checks the grids of every variable. Indices are applied lazily (no data are read).
    ``warn=False`` for a second view of the same inputs (each warning is given once).
    """
    for name, ds in preds.items():
        for var in variables:
            check_grid(truth, ds, var, name)
    sides = {"truth": truth, **{f"prediction {n!r}": ds for n, ds in preds.items()}}
    idx = common_day_indices(sides, warn)
    t = _take(truth[list(variables)], idx["truth"])
    out = {}
    for name, ds in preds.items():
        p = _take(ds[list(variables)], idx[f"prediction {name!r}"])
        grid = {k: t[k] for k in t.coords if k != "time" and "time" not in t[k].dims}
        p = p.assign_coords({"time": t["time"], **grid})
        out[name] = p
    return t, out


def _take(ds: xr.Dataset, idx: np.ndarray) -> xr.Dataset:
    if idx.size == ds.sizes["time"]:
        return ds
    return ds.isel(time=idx)
