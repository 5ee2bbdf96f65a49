"""CF encoding of downscaled fields, and the CORDEX ML-Bench submission layout.

Every chunk of predictions becomes an ``xr.Dataset`` on the emulator's target grid, exactly as
the RCM's files describe it: projection x/y with 2-D lat/lon and the grid-mapping variable for
Lambert grids, or 1-D lat/lon; CF attributes per variable (units, standard_name, long_name,
cell_methods, a 2 m height for near-surface temperature); daily time bounds in the input's own
calendar. :func:`encoding` gives the on-disk layout of the joined file: zlib-compressed float32,
chunked by 73 days (a fifth of a year) and 16 x 16 points so that both a point's time series and
a map are cheap to read. An ensemble adds a leading ``member`` dimension (CF: other dimensions left of T)
with an integer ``realization`` coordinate, chunked one member at a time.

``fmt="mlbench"`` follows the benchmark's templates instead (``format_predictions/templates``):
the same coordinates, the templates' variable attributes (``pr`` in ``mm/day``), no extra
variables, and file names ``Predictions_pr_tasmax_<GCM>_<period>.nc`` in the submission tree
``<DOMAIN>_Domain/<experiment>/<period>/<perfect|imperfect>/``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from climdl import __version__
from climdl.data.spec import EmulatorSpec, Grid
from climdl.data.variables import canonical_attrs
from climdl.errors import ConfigError, OutputError
from climdl.inference.inputs import InputSource
from climdl.inference.members import MEMBER, member_coord
from climdl.io.provenance import CF_CONVENTIONS, climdl_source, history_entry
from climdl.io.zarr_store import is_zarr

Format = Literal["cf", "mlbench", "cordex-cmip6"]
"""cordex-cmip6 runs as cf into a staging file, split into the archive by
:mod:`climdl.inference.cordex_archive`."""

TIME_UNITS = "days since 1949-12-01"
"""Time units of every output (CORDEX's reference date); the calendar is the input's."""

_MLBENCH_ATTRS: dict[str, dict[str, str]] = {
    "tasmax": {
        "standard_name": "air_temperature",
        "long_name": "Daily Maximum Near-Surface Air Temperature",
        "units": "K",
        "cell_methods": "time: maximum",
    },
    "pr": {"long_name": "Precipitation", "units": "mm/day"},
}
_SPACE_CHUNK = 16
_TIME_CHUNK = 73
"""Days per on-disk chunk. A point's series reads as many bytes as with a year (the same 16 x 16
tiles), a map 5 times fewer; and the streamed output (:mod:`climdl.inference.streamed`)
compresses a chunk as soon as its 73 days are computed, so a one-year run overlaps its
compression with the network instead of doing it all after the last day."""


def space_dims(grid: Grid) -> tuple[str, str]:
    """(y, x), (rlat, rlon) or (lat, lon): the target grid's dimensions, from the checkpoint's
    grid (the dims of its 2-D lat/lon on a projected or rotated-pole grid)."""
    c = grid.coords
    if "x" in c and "y" in c and c["x"].values.ndim == 1:
        return ("y", "x")
    axes = grid.axes
    return axes if axes is not None else ("lat", "lon")


def grid_coords(grid: Grid) -> dict[str, xr.Variable]:
    """Coordinates of the target grid as stored in the checkpoint's spec (1-D axes first)."""
    coords: dict[str, xr.Variable] = {}
    axes = [a for a in grid.axes or () if a not in ("y", "x")]
    for name in ("y", "x", *axes, "lat", "lon"):
        if name in grid.coords:
            c = grid.coords[name]
            attrs = {k: v for k, v in c.attrs.items() if k not in ("bounds", "_FillValue")}
            coords[name] = xr.Variable(c.dims, np.asarray(c.values.numpy()), attrs)
    return coords


def _grid_mapping(grid: Grid) -> tuple[str, dict[str, Any]] | None:
    gm = grid.mapping
    if gm is None:
        return None
    return gm.name, dict(gm.attrs)


def variable_attrs(
    name: str, spec_attrs: dict[str, str], fmt: Format, grid_mapping: str | None
) -> dict[str, str]:
    """CF attributes of one output variable."""
    if fmt == "mlbench":
        attrs = dict(_MLBENCH_ATTRS.get(name, {"units": spec_attrs.get("units", "")}))
    else:
        try:
            attrs = canonical_attrs(name)
        except KeyError:
            attrs = {}
        attrs |= {
            k: v
            for k, v in spec_attrs.items()
            if k in ("standard_name", "long_name", "units", "cell_methods")
        }
        if name in ("tasmax", "tasmin", "tas"):
            attrs["coordinates"] = "height"
    if grid_mapping:
        attrs["grid_mapping"] = grid_mapping
    return attrs


def time_bounds(time: xr.DataArray) -> np.ndarray:
    """[T, 2] day bounds (start of the day, start of the next) in the time's own calendar.

    xarray encodes them with the time's units and calendar (CF 7.1: they must agree)."""
    lower = time.dt.floor("D").values
    upper = (
        np.array([t + dt.timedelta(days=1) for t in lower])
        if lower.dtype == object
        else lower + np.timedelta64(1, "D")
    )
    return np.stack([lower, upper], axis=1)


def chunk_dataset(
    values: np.ndarray,
    time: xr.DataArray,
    spec: EmulatorSpec,
    targets: Sequence[str],
    fmt: Format,
    members: int | None = None,
) -> xr.Dataset:
    """Predictions as a CF Dataset.

    Args:
        values: [T, V, H, W] (float32, physical units), or [T, M, V, H, W] with ``members``.
        time: the T days.
        spec: the emulators' spec (target grid and attributes).
        targets: the V variable names.
        fmt: ``cf`` or ``mlbench``.
        members: M for an ensemble (variables get dims member, time, y, x); None: none.

    Returns:
        The chunk's Dataset (views of ``values``, not copies).
    """
    grid = spec.target_grid
    dims: tuple[str, ...] = ("time", *space_dims(grid))
    coords: dict[str, Any] = dict(grid_coords(grid))
    if members is not None:
        dims = (MEMBER, *dims)
        coords[MEMBER] = member_coord(members)
    coords["time"] = xr.Variable(
        ("time",), time.values, {"standard_name": "time", "long_name": "time", "axis": "T"}
    )
    gm = _grid_mapping(grid)
    data: dict[str, Any] = {}
    for i, name in enumerate(targets):
        attrs = variable_attrs(name, spec.target_attrs.get(name, {}), fmt, gm[0] if gm else None)
        field = values[:, i] if members is None else values[:, :, i].swapaxes(0, 1)
        data[name] = xr.Variable(dims, field, attrs)
    if gm:  # coordinates (as xarray's decode_coords="all" reads them), not data variables
        gm_attrs = {
            "long_name": f"coordinate reference system ({gm[1].get('grid_mapping_name', '')})"
        }
        coords[gm[0]] = xr.Variable((), np.int32(0), gm_attrs | gm[1])
    if fmt != "mlbench":
        coords["time"].attrs["bounds"] = "time_bnds"
        coords["time_bnds"] = xr.Variable(("time", "bnds"), time_bounds(time))
        if any("coordinates" in data[t].attrs for t in targets):
            coords["height"] = xr.Variable(
                (),
                np.float64(2.0),
                {
                    "standard_name": "height",
                    "long_name": "height",
                    "units": "m",
                    "positive": "up",
                    "axis": "Z",
                },
            )
            for t in targets:
                data[t].attrs.pop("coordinates", None)
    ds = xr.Dataset(data, coords=coords)
    for v in ("lat", "lon"):
        if v in ds.coords:
            ds[v].attrs.setdefault("standard_name", "latitude" if v == "lat" else "longitude")
            ds[v].attrs.setdefault("units", "degrees_north" if v == "lat" else "degrees_east")
    return ds


def encoding(
    ds: xr.Dataset,
    targets: Sequence[str],
    calendar: str,
    fmt: Format,
    compress: bool = True,
    n_time: int | None = None,
) -> dict[str, dict[str, Any]]:
    """On-disk encoding: time units and calendar, no fill values on coordinates, compressed
    float32 data chunked for time-series reads (one member per chunk in an ensemble).

    Args:
        ds: a chunk of the output (:func:`chunk_dataset`).
        targets: its variables.
        calendar: the time axis's calendar.
        fmt: ``cf`` or ``mlbench``.
        compress: zlib-compress and chunk the variables.
        n_time: days of the whole file (the time chunk is at most 73 of them); None: the
            days of ``ds``.

    Returns:
        The encoding by variable name.
    """
    enc: dict[str, dict[str, Any]] = {
        "time": {"units": TIME_UNITS, "calendar": calendar, "dtype": "float64", "_FillValue": None}
    }
    if "time_bnds" in ds.variables:  # units and calendar come from time (CF 7.1)
        enc["time_bnds"] = {"dtype": "float64", "_FillValue": None}
    for name in ds.coords:
        if name not in enc:
            enc[str(name)] = {"_FillValue": None}
    n_time = ds.sizes["time"] if n_time is None else n_time
    for name in targets:
        shape = ds[name].shape[-2:]
        lead = (1,) if MEMBER in ds[name].dims else ()
        aux = [str(c) for c in ("height", "lat", "lon") if c in ds.coords and c not in ds.dims]
        e: dict[str, Any] = {"dtype": "float32", "_FillValue": np.float32(1e20)}
        if aux:  # auxiliary coordinates only (not the grid mapping or the bounds)
            e["coordinates"] = " ".join(aux)
        if compress:
            e |= {
                "zlib": True,
                "complevel": 1,
                "shuffle": True,  # as CMOR writes CMIP data
                "chunksizes": (
                    *lead,
                    min(n_time, _TIME_CHUNK),
                    min(shape[0], _SPACE_CHUNK),
                    min(shape[1], _SPACE_CHUNK),
                ),
            }
        enc[name] = e
    return enc


def global_attrs(
    *,
    emulators: list[dict[str, str]],
    source_files: Sequence[Path],
    kind: str | None,
    gcm: str | None,
    domain: str | None,
    regrid: str,
    history: str,
    previous_history: str | None,
    fmt: Format,
    output: str,
    members: int | None = None,
    seed: int = 0,
    sampler: str | None = None,
) -> dict[str, str | int]:
    """Provenance: what made the file, from what, how (and the ensemble's members, seed and
    sampler when ``members`` is given)."""
    names = ", ".join(sorted({e["network"] for e in emulators}))
    attrs: dict[str, str | int] = {
        "Conventions": CF_CONVENTIONS,
        "title": "Downscaled daily fields emulated by climdl",
        "source": climdl_source(
            f"{names} emulator applied to {kind or 'unspecified'} large-scale predictors"
        ),
        "institution": "unspecified (set by the user)",
        "references": "Doury et al. 2023, Clim Dyn 60:1751, doi:10.1007/s00382-022-06343-9; "
        "CORDEX ML-Bench",
        "frequency": "day",
        "product": "emulator-output" if output == "emulator" else "baseline-output",
        "climdl_version": __version__,
        "climdl_format": fmt,
        "predictor_type": kind or "unknown",
        "driving_model_id": gcm or "unknown",
        "input_files": " ".join(str(p.resolve()) for p in source_files),
        "input_regridding": regrid,
        "history": history_entry(history, previous_history),
    }
    if domain:
        attrs["domain"] = domain
    if members is not None:
        attrs["ensemble_members"] = members
        attrs["ensemble_seed"] = seed
        attrs["sampler"] = sampler or "unknown"
    for i, e in enumerate(emulators):
        prefix = "checkpoint" if len(emulators) == 1 else f"checkpoint_{i + 1}"
        attrs[prefix] = e["checkpoint"]
        attrs[f"{prefix}_sha256"] = e["sha256"]
        attrs[f"{prefix}_targets"] = e["targets"]
        attrs[f"{prefix}_experiment"] = e["experiment"]
    return attrs


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
_MAX_COMPONENT = 120


def safe_component(value: object, fallback: str = "unknown") -> str:
    """``value`` as one harmless file-name component.

    Output names are built from file and checkpoint contents (a GCM's ``driving_model_id``, a
    domain, a period): anything but letters, digits and ``._+-`` becomes ``-``, leading dots go
    (no hidden names, never ``.`` or ``..``) and an empty result is ``fallback``, so no such
    value can add a folder level or point outside the output folder.
    """
    text = _UNSAFE.sub("-", str(value)).lstrip(".")[:_MAX_COMPONENT]
    return text if text.strip(".-") else fallback


def mlbench_name(targets: Sequence[str], stem: str) -> str:
    """``Predictions_pr_tasmax_<GCM>_<period>.nc`` (variables in the benchmark's order)."""
    order = [t for t in ("pr", "tasmax") if t in targets] + [
        t for t in targets if t not in ("pr", "tasmax")
    ]
    names = "_".join(safe_component(t, "var") for t in order)
    return f"Predictions_{names}_{safe_component(stem, 'series')}.nc"


def default_output(
    out_dir: Path,
    *,
    targets: Sequence[str],
    stem: str,
    fmt: Format,
    domain: str | None,
    experiment: str | None,
    period: str | None,
    kind: str | None,
) -> Path:
    """Output file inside a folder: the ML-Bench submission tree when everything is known.

    Every part of the name is passed through :func:`safe_component`: each one becomes exactly
    one path level below ``out_dir``."""
    if fmt == "mlbench":
        name = mlbench_name(targets, stem)
        if domain and experiment and period and kind:
            levels = [f"{safe_component(domain)}_Domain"] + [
                safe_component(v) for v in (experiment, period, kind)
            ]
            return out_dir.joinpath(*levels, name)
        return out_dir / name
    names = "_".join(safe_component(t, "var") for t in targets)
    return out_dir / f"{names}_{safe_component(stem, 'series')}_climdl.nc"


def resolve_output(
    output: str | Path | None,
    source: InputSource,
    targets: Sequence[str],
    fmt: Format,
    experiment: str | None,
) -> Path | None:
    """The output file (or Zarr store) of a ``downscale`` run: ``output`` itself, or a name
    derived inside an existing folder; None without ``output`` (in memory). Refused: a name
    derived from file contents that would leave the folder, a suffix that is not NetCDF or
    Zarr, and an output that is one of the inputs (``--overwrite`` would replace them)."""
    out = _output_path(output, source, targets, fmt, experiment)
    if out is not None:
        inputs = {p.resolve() for p in source.files}
        if out.resolve() in inputs:
            raise OutputError(f"the output {out} is one of the inputs; choose another output name.")
    return out


def _output_path(
    output: str | Path | None,
    source: InputSource,
    targets: Sequence[str],
    fmt: Format,
    experiment: str | None,
) -> Path | None:
    if output is None:
        return None
    out = Path(output)
    if is_zarr(out):  # a store is a folder too, but never one to derive a name in
        if fmt != "cf":
            raise ConfigError(
                f"--format {fmt} is written as NetCDF; give --output a .nc file or a folder."
            )
        return out
    if out.is_dir() or str(output).endswith(os.sep):
        stem = (
            source.files[0].stem
            if len(source.files) == 1
            else (f"{source.gcm or 'input'}_{source.period or 'series'}")
        )
        path = default_output(
            out,
            targets=targets,
            stem=stem,
            fmt=fmt,
            domain=source.domain,
            experiment=experiment,
            period=source.period,
            kind=source.kind,
        )
        # last line of defence: a name taken from file contents never leaves the named folder
        if not path.resolve().is_relative_to(out.resolve()):
            raise OutputError(
                f"the output name derived from the inputs ({path.name}) would lie outside "
                f"{out}; give the output file explicitly with --output FILE.nc."
            )
        return path
    if out.suffix.lower() not in (".nc", ".nc4"):
        raise ConfigError(
            f"--output {out} should be a .nc file, a .zarr store or an existing folder."
        )
    return out
