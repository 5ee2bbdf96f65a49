"""``--format cordex-cmip6``: a downscaled run published as the CORDEX-CMIP6 archive lays it out.

The run itself is the ordinary one (chunked, resumable, streamed into one compressed CF file,
kept in a hidden staging folder under the archive root); this module then splits that file
into the archive's files: **one variable per file, five years per file** (daily data; the
files end in years ending in 0 or 5, the first and last of a series may be shorter), each under
its DRS folder and file name (:mod:`climdl.data.cordex`), with

- the variable as the CMOR day table defines it: its units (``pr`` in kg m-2 s-1, converted
  from climdl's mm day-1), standard_name, long_name, cell_methods, cell_measures (the cell
  areas are external: ``external_variables = "areacella"``), float32, ``missing_value`` and
  ``_FillValue`` 1e20, deflate level 1 with shuffle;
- the coordinates the archive specification asks for: ``time`` in ``days since 1950-01-01``
  (1850 for series that start earlier) stamped at the middle of each day with ``time_bnds``;
  projected ``x``/``y`` in metres (or ``rlat``/``rlon``) with bounds, 2-D ``lat``/``lon`` with
  their cell vertices, the grid mapping named ``crs`` (int, with the Earth's radius), the
  2 m ``height`` of near-surface variables; all float64;
- every required global attribute: the run's (RUN.yaml, checked against the CV before any
  work), then ``frequency``, ``variable_id``, ``creation_date``, ``grid``, a fresh
  ``tracking_id`` (``hdl:21.14103/<uuid>``), and climdl's provenance (``history``, the
  checkpoints and their SHA-256, the predictors) under their own names;
- the NETCDF4_CLASSIC data model the archive expects.

Each file is written under a hidden temporary name and renamed when complete: a killed
publication leaves whole files only, and ``--resume`` rewrites them all from the staging file.
Ensemble member k of a generative run becomes realization ``r<base + k>`` (``version_realization``
``v1-r1``, ``v1-r2``, ...), each member its own files, as the archive stores realizations.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from climdl.data.cordex import CordexRun, drs_filename, drs_folder, file_years
from climdl.data.units import conversion
from climdl.errors import ConfigError, DataError, OutputError
from climdl.inference.cordex_grid import grid_description, grid_variables
from climdl.inference.members import MEMBER
from climdl.inference.output import time_bounds
from climdl.io.netcdf import atomic_path
from climdl.io.provenance import utc_timestamp

__all__ = [
    "RUN_DIGEST",
    "STAGING",
    "PlannedFile",
    "check_targets",
    "plan",
    "publish",
    "staging_name",
]

FORMAT = "cordex-cmip6"
STAGING = ".climdl-cordex"
"""Hidden folder under the archive root that holds the run's staging file and its parts."""
RUN_DIGEST = "climdl_run_sha256"
"""Staging-file attribute: the digest of what defines the run (checked on ``--resume``)."""
_CARRIED = (
    "title",
    "history",
    "climdl_version",
    "predictor_type",
    "input_files",
    "input_regridding",
    "ensemble_members",
    "ensemble_seed",
    "sampler",
)
"""Provenance attributes of the staging file kept in the archive's files (the CV's own
``source``, ``institution``, ``product``, ... replace climdl's)."""
_RENAMED = {"product": "climdl_product", "driving_model_id": "predictors_driving_model"}


@dataclass(frozen=True)
class PlannedFile:
    """One file of the archive.

    Attributes:
        variable: its variable.
        member: the ensemble member (0-based) it holds, or None.
        first: first year in the file.
        last: last year in the file.
        path: where it goes (under the archive root).
    """

    variable: str
    member: int | None
    first: int
    last: int
    path: Path


def check_targets(run: CordexRun, targets: Sequence[str]) -> None:
    """Refuse, before any work, a variable the CMOR day table does not define.

    Raises:
        ConfigError: a target outside the day table, or units climdl cannot convert to it.
    """
    for name in targets:
        entry = run.tables.variable(name)
        _scale_offset(name, entry["units"])
        _scalar_coords(run, name, entry)


_GRID_DIMS = ("longitude", "latitude", "time", "time1", "time2")


def _scalar_coords(run: CordexRun, name: str, entry: Mapping[str, Any]) -> dict[str, xr.Variable]:
    """The scalar coordinates the table gives a variable (``height2m`` for tas, ``height10m``
    for sfcWind, ``p850`` for ta850, ...), from the coordinate table.

    Raises:
        ConfigError: a dimension that is not a single value (a level axis climdl's 2-D fields
            cannot fill).
    """
    out: dict[str, xr.Variable] = {}
    for dim in str(entry.get("dimensions", "")).split():
        if dim in _GRID_DIMS:
            continue
        c = run.tables.coordinates.get(dim, {})
        try:
            value = float(str(c.get("value", "")).split()[0])
        except (IndexError, ValueError):
            raise ConfigError(
                f"{name} in the CORDEX-CMIP6 day table has the dimension {dim!r}, which is not a "
                "single value: climdl writes 2-D fields only."
            ) from None
        attrs = {
            k: str(c[k])
            for k in ("standard_name", "long_name", "units", "axis", "positive")
            if c.get(k)
        }
        out[str(c.get("out_name") or dim)] = xr.Variable((), np.float64(value), attrs)
    return out


def staging_name(run: CordexRun, targets: Sequence[str], first: str, last: str) -> str:
    """The staging file's name: the archive identity (variables, DRS elements) and the days,
    so that runs of other experiments, models or periods never share one."""
    a = run.attrs
    parts = [
        "-".join(targets),
        a["domain_id"],
        a["driving_source_id"],
        a["driving_experiment_id"],
        a["driving_variant_label"],
        a["institution_id"],
        a["source_id"],
        a["version_realization"],
        f"{first}-{last}",
    ]
    return "_".join(parts) + ".nc"


def _scale_offset(name: str, cmor_units: str) -> tuple[float, float]:
    """``(scale, offset)`` from climdl's canonical units of ``name`` to the table's."""
    try:
        scale, offset = conversion(name, cmor_units)  # table's units -> canonical
    except (DataError, KeyError):
        raise ConfigError(
            f"climdl cannot convert {name} to the CORDEX-CMIP6 table's units {cmor_units!r}; "
            "leave it out of the archive run."
        ) from None
    return 1.0 / scale, -offset / scale


def _period_days(time: xr.DataArray, first: int, last: int) -> np.ndarray:
    years = time.dt.year.values
    return np.flatnonzero((years >= first) & (years <= last))


def plan(
    run: CordexRun,
    root: Path,
    targets: Sequence[str],
    time: xr.DataArray,
    members: int | None = None,
) -> list[PlannedFile]:
    """The archive's files for a run: variables x members x five-year spans present.

    Args:
        run: the checked RUN.yaml.
        root: the archive root (``-o ROOT/``).
        targets: the run's variables.
        time: its days (decoded, in the input's calendar).
        members: the ensemble's size (None: deterministic).

    Returns:
        The files in writing order, each with its DRS path under ``root``.
    """
    spans = file_years(time.dt.year.values.tolist())
    out: list[PlannedFile] = []
    for name in targets:
        for m in [None] if members is None else list(range(members)):
            folder = root / drs_folder(run, name, m)
            for first, last in spans:
                idx = _period_days(time, first, last)
                t0, t1 = time.values[idx[0]], time.values[idx[-1]]
                period = f"{t0.strftime('%Y%m%d')}-{t1.strftime('%Y%m%d')}"
                out.append(
                    PlannedFile(name, m, first, last, folder / drs_filename(run, name, period, m))
                )
    return out


def _time_variables(time: xr.DataArray) -> tuple[xr.Variable, xr.Variable]:
    """Mid-day time stamps and [day start, next day start) bounds (the archive's daily means)."""
    bounds = time_bounds(time)
    lower = bounds[:, 0]
    mid = (
        np.array([t + dt.timedelta(hours=12) for t in lower])
        if lower.dtype == object
        else (lower + np.timedelta64(12, "h"))
    )
    attrs = {
        "standard_name": "time",
        "long_name": "time",
        "axis": "T",
        "bounds": "time_bnds",
    }
    return xr.Variable(("time",), mid, attrs), xr.Variable(("time", "bnds"), bounds)


def _file_dataset(
    staging: xr.Dataset,
    item: PlannedFile,
    run: CordexRun,
    grid: tuple[dict[str, xr.Variable], dict[str, xr.Variable], str | None],
    description: str,
) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    entry = run.tables.variable(item.variable)
    scale, offset = _scale_offset(item.variable, entry["units"])
    da = staging[item.variable]
    if item.member is not None:
        da = da.isel({MEMBER: item.member}, drop=True)
    idx = _period_days(staging["time"], item.first, item.last)
    da = da.isel(time=idx)
    values = (
        da.data * np.float32(scale) + np.float32(offset)
        if (scale, offset) != (1.0, 0.0)
        else da.data
    )
    coords, extra, crs = grid
    time, bnds = _time_variables(staging["time"].isel(time=idx))
    var_attrs: dict[str, Any] = {
        k: entry[k]
        for k in ("standard_name", "long_name", "units", "cell_methods", "cell_measures", "comment")
        if entry.get(k)
    }
    aux: list[str] = [c for c in ("lat", "lon") if c in coords and c not in da.dims]
    data_coords: dict[str, Any] = {"time": time, **coords}
    scalars = _scalar_coords(run, item.variable, entry)
    data_coords |= scalars
    aux = [*scalars, *aux]
    if crs:
        var_attrs["grid_mapping"] = crs
    variables: dict[str, xr.Variable] = {
        item.variable: xr.Variable(da.dims, values, var_attrs),
        "time_bnds": bnds,
        **extra,
    }
    ds = xr.Dataset(variables, coords=data_coords)
    t_start = staging["time"].values[0]
    # one reference for every file of a series, also across runs (earlier days are negative)
    ref = "1950-01-01T00:00:00"
    calendar = str(
        staging["time"].encoding.get("calendar") or getattr(t_start, "calendar", "standard")
    )
    missing = np.float32(run.tables.missing_value)
    enc: dict[str, dict[str, Any]] = {
        "time": {
            "units": f"days since {ref}",
            "calendar": calendar,
            "dtype": "float64",
            "_FillValue": None,
        },
        "time_bnds": {"dtype": "float64", "_FillValue": None},
        item.variable: {
            "dtype": "float32",
            "_FillValue": missing,
            "missing_value": missing,
            "zlib": True,
            "complevel": 1,
            "shuffle": True,
            "chunksizes": (min(ds.sizes["time"], 73), *(min(n, 16) for n in da.shape[-2:])),
            "coordinates": " ".join(aux),
        },
    }
    for name in ds.variables:
        if name not in enc:
            enc[str(name)] = {"_FillValue": None}
    ds.attrs = _global_attrs(staging.attrs, run, item, description)
    return ds, enc


def _global_attrs(
    staging: dict[str, Any], run: CordexRun, item: PlannedFile, description: str
) -> dict[str, Any]:
    attrs: dict[str, Any] = dict(run.attrs)
    attrs["version_realization"] = run.realization(item.member)
    attrs |= {
        "frequency": "day",
        "variable_id": item.variable,
        "grid": description,
        "creation_date": utc_timestamp(),
        "tracking_id": f"hdl:21.14103/{uuid.uuid4()}",
        "external_variables": "areacella",
    }
    if item.member is not None and "version_realization_info" not in run.attrs:
        attrs["version_realization_info"] = (
            f"realization r{attrs['version_realization'].split('-r')[1]} is member "
            f"{item.member + 1} of a {staging.get('ensemble_members', '?')}-member generative "
            f"ensemble sampled by climdl (seed {staging.get('ensemble_seed', '?')})"
        )
    attrs.setdefault("references", str(staging.get("references", "")))
    for key in _CARRIED:
        if key in staging:
            attrs[key] = staging[key]
    for key, new in _RENAMED.items():
        if key in staging:
            attrs[new] = staging[key]
    for key, value in staging.items():
        if key.startswith("checkpoint"):
            attrs[key] = value
    attrs["climdl_format"] = FORMAT
    return {k: v for k, v in attrs.items() if v != ""}


def publish(
    staging_path: Path, files: Sequence[PlannedFile], run: CordexRun, *, overwrite: bool = True
) -> list[Path]:
    """Write the archive's files from the run's staging file, each atomically.

    Args:
        staging_path: the run's joined CF file.
        files: what :func:`plan` gave for the run.
        run: the checked RUN.yaml.
        overwrite: replace files already there (an interrupted publication, ``--overwrite``).

    Returns:
        The files written, in order.

    Raises:
        OutputError: a file that cannot be written (permissions, full disk), or one that
            exists without ``overwrite``.
    """
    written: list[Path] = []
    with xr.open_dataset(
        staging_path,
        decode_times=xr.coders.CFDatetimeCoder(use_cftime=True),
        decode_coords="all",
        chunks={"time": 365},
    ) as staging:
        grid = grid_variables(staging)
        description = grid_description(staging)
        for item in files:
            ds, enc = _file_dataset(staging, item, run, grid, description)
            for name, e in enc.items():  # the coordinates attribute goes through the encoding
                if "coordinates" in e:
                    ds[name].encoding["coordinates"] = e.pop("coordinates")
            for stale in item.path.parent.glob(f".{item.path.name}.*.tmp"):
                stale.unlink(missing_ok=True)  # left by a killed publication (our own names)
            with atomic_path(item.path, overwrite=overwrite) as tmp:
                ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4_CLASSIC", encoding=enc)
            written.append(item.path)
    return written


def existing(files: Sequence[PlannedFile]) -> list[Path]:
    """The planned files that are there already."""
    return [f.path for f in files if f.path.exists()]


def refuse_existing(files: Sequence[PlannedFile], *, overwrite: bool, resume: bool) -> None:
    """Refuse, before any work, to replace archive files without ``--overwrite``/``--resume``.

    Raises:
        OutputError: naming the first file found.
    """
    found = existing(files)
    if found and not (overwrite or resume):
        raise OutputError(
            f"{found[0]} already exists ({len(found)} of this run's {len(files)} archive files "
            "do); pass --overwrite to replace them, or --resume to finish an interrupted run."
        )
