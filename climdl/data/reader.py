"""The CF-aware reader: any CF NetCDF (one file, a glob, many files) into a canonical Dataset.

Zarr stores (``*.zarr`` folders, Zarr format 2 or 3, consolidated or not) are read exactly like
NetCDF files, alone, by glob or mixed with files (:func:`climdl.data.files.open_file`).

The result has canonical variable names and units (see :mod:`climdl.data.variables`), float32
values, NaN where the file had fill/missing values, cftime dates in the file's calendar, the
canonical horizontal layout (see :mod:`climdl.data._coords`) and dask chunks along time only.
Nothing is loaded except coordinates. Every predictable problem raises :class:`DataError`.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from climdl.data import _coords
from climdl.data.files import (
    PathArg,
    check_times,
    combine,
    describe,
    open_file,
    resolve_paths,
    select_time,
)
from climdl.data.units import assumed_units_for, to_canonical
from climdl.data.variables import (
    FAMILIES,
    SINGLE_LEVEL,
    identify,
    is_canonical,
    known_names,
    parse_level_name,
)
from climdl.errors import DataError

__all__ = ["check_bbox_values", "open_dataset"]

#: A bbox's four numbers, checked (lon_min, lon_max, lat_min, lat_max): for the command lines
#: that take ``--bbox`` and refuse a malformed one before any work.
check_bbox_values = _coords.check_bbox_values

log = logging.getLogger(__name__)

DEFAULT_CHUNKS: Mapping[str, int] = {"time": 365}


def _chunk(ds: xr.Dataset, chunks: Mapping[str, int | str] | None) -> xr.Dataset:
    """Chunk data variables (not coordinates) along the given dims, other dims whole."""
    spec = dict(DEFAULT_CHUNKS if chunks is None else chunks)
    return ds.assign(
        {
            name: var.variable.chunk({d: spec.get(str(d), -1) for d in var.dims})
            for name, var in ds.data_vars.items()
        }
    )


def _prepare(ds: xr.Dataset, chunks: Mapping[str, int | str] | None) -> xr.Dataset:
    """Rename the time dimension, promote and load lat/lon coordinates, chunk data lazily."""
    tname = _coords.find_time_name(ds)
    if tname is not None and tname != "time":
        ds = ds.rename({tname: "time"})
    ds = _coords.promote_latlon(ds)
    small = [n for n, c in ds.coords.items() if n not in ds.dims and "time" not in c.dims]
    for name in small:  # 2-D lat/lon and the like: kept in memory, like index coordinates
        ds[name] = ds[name].load()
    return _chunk(ds, chunks)


def _grid_mapping(ds: xr.Dataset, da: xr.DataArray, where: str) -> str | None:
    """Name of the grid-mapping variable of ``da`` if it exists in ``ds`` (dangling ones ignored)."""
    gm = str(da.attrs.get("grid_mapping", "")).strip()
    if not gm:
        return None
    name = gm.split(":")[0].strip()
    if name in ds.variables:
        return name
    log.debug("%s: grid_mapping %r of %s is not in the file; ignored", where, gm, da.name)
    return None


def _data_names(ds: xr.Dataset) -> list[str]:
    """Names of the data variables proper: not grid mappings, not bounds of a coordinate."""
    bounds = {str(v.attrs.get("bounds")) for v in ds.variables.values() if "bounds" in v.attrs}
    return [
        str(n)
        for n, v in ds.data_vars.items()
        if "grid_mapping_name" not in v.attrs and str(n) not in bounds
    ]


def _clean(da: xr.DataArray, keep: Sequence[Hashable]) -> xr.DataArray:
    """Drop scalar and vertical coordinates (they would conflict between variables)."""
    drop = [n for n, c in da.coords.items() if c.ndim == 0 and n not in keep]
    return da.drop_vars(drop) if drop else da


def _candidates(
    ds: xr.Dataset,
    wanted: set[str] | None,
    levels: Sequence[float],
    where: str,
    notes: list[str],
) -> dict[str, list[tuple[int, Hashable, xr.DataArray]]]:
    """Map canonical names to (priority, source name, single-level DataArray) candidates."""
    out: dict[str, list[tuple[int, Hashable, xr.DataArray]]] = {}
    for name, da in ds.data_vars.items():
        vname, pressure = _coords.vertical_coord(da)
        if vname is not None and not pressure:
            log.debug("%s in %s is not on pressure levels (%s); ignored", name, where, vname)
            continue
        ident = identify(str(name), da.attrs, vertical=vname is not None)
        if ident is None:
            continue
        if not ident.is_family:
            if vname is not None:
                if da[vname].size > 1:
                    continue
                da = da.isel({vname: 0}, drop=True) if vname in da.dims else da.drop_vars([vname])
            if wanted is None or ident.name in wanted:
                out.setdefault(ident.name, []).append((ident.priority, name, da))
            continue
        assert vname is not None
        parsed = [parse_level_name(w) for w in wanted] if wanted is not None else []
        need = (
            [p[1] for p in parsed if p is not None and p[0] == ident.name]
            if wanted is not None
            else [int(lv) for lv in levels]
        )
        if not need:
            continue
        have = _coords.levels_hpa(da[vname], where=where)
        for level in need:
            hit = np.flatnonzero(np.isclose(have, level, atol=0.5))
            if hit.size == 0:
                notes.append(
                    f"{name} in {where} has no {level} hPa level (levels: "
                    f"{', '.join(f'{h:g}' for h in have)} hPa)"
                )
                continue
            sub = da.isel({vname: int(hit[0])}) if vname in da.dims else da
            sub = sub.drop_vars([vname])
            out.setdefault(f"{ident.name}_{level}", []).append((3, name, sub))
    return out


def _canonical_file(
    path: Path,
    wanted: set[str] | None,
    levels: Sequence[float],
    chunks: Mapping[str, int | str] | None,
    assume_units: Mapping[str, str] | None,
    notes: list[str],
    seen: dict[str, None],
    rename: Mapping[str, str] | None = None,
) -> xr.Dataset:
    """Open one file and return its recognised variables in canonical form."""
    where = str(path)
    ds = _prepare(open_file(path), chunks)
    seen.update(dict.fromkeys(_data_names(ds)))
    mapping = {
        src: can for can, src in (rename or {}).items() if src in ds.data_vars and can not in ds
    }
    if mapping:
        ds = ds.rename(mapping)
    step = _coords.time_step_days(ds["time"]) if "time" in ds.coords else None
    found: dict[str, xr.DataArray] = {}
    for canonical, cands in _candidates(ds, wanted, levels, where, notes).items():
        cands.sort(key=lambda c: c[0])
        ties = [str(c[1]) for c in cands if c[0] == cands[0][0]]
        if len(ties) > 1:
            raise DataError(
                f"{where} has several variables that look like {canonical} ({', '.join(ties)}); "
                "keep only one of them in the input."
            )
        _, source, da = cands[0]
        gm = _grid_mapping(ds, da, where)
        da = to_canonical(
            _clean(da, [gm] if gm else []),
            canonical,
            source=str(source),
            assumed=assumed_units_for(assume_units, canonical, str(source)),
            time_step_days=step,
        )
        if gm:
            da.attrs["grid_mapping"] = gm
            # the bare variable: ds[gm] would bring back the scalar coordinates _clean dropped
            da = da.assign_coords({gm: ds[gm].variable.load()})
        found[canonical] = da
    out = xr.Dataset(found, attrs=ds.attrs)
    for coord in out.coords.values():  # bounds variables are not kept: drop dangling references
        if coord.attrs.get("bounds") not in (None, *out.variables):
            coord.attrs.pop("bounds")
    if "time" in out.dims:
        check_times(out["time"], where)
    return _coords.canonical_dim_order(_coords.normalise_horizontal(out))


def _order(name: str) -> tuple[int, int, int]:
    """Sort key: single-level variables in table order, then predictors z, t, u, v, q by level."""
    parsed = parse_level_name(name)
    if parsed is None:
        return (0, known_names().index(name), 0)
    return (1, list(FAMILIES).index(parsed[0]), parsed[1])


def open_dataset(
    paths: PathArg | Sequence[PathArg],
    variables: str | Sequence[str] | None = None,
    *,
    chunks: Mapping[str, int | str] | None = None,
    assume_units: Mapping[str, str] | None = None,
    levels: Sequence[float] = (500, 700, 850),
    time_range: tuple[str, str] | None = None,
    bbox: Sequence[float] | None = None,
    strict: bool = True,
    rename: Mapping[str, str] | None = None,
) -> xr.Dataset:
    """Open CF NetCDF file(s) or Zarr store(s) lazily as a canonical Dataset (names, units,
    coordinates).

    Args:
        paths: a file or Zarr store, a glob, or a sequence of them; many are combined by
            coordinates along time.
        variables: canonical names to return (default: all recognised; pressure-level variables
            are split at ``levels`` hPa).
        chunks: dask chunks per dimension (default ``{"time": 365}``; other dimensions whole).
        assume_units: units for variables without a units attribute, keyed by canonical or
            source name.
        levels: the pressure levels (hPa) that pressure-level variables are split at.
        time_range: inclusive ('YYYY-MM-DD', 'YYYY-MM-DD').
        bbox: (lon_min, lon_max, lat_min, lat_max) in degrees: the grid must cover it, and the
            dataset is cut to the cells whose centres lie inside (lazily, before any data are
            read; a rectangle of rows and columns on curvilinear and projected grids).
        strict: False warns instead of raising for missing variables or levels.
        rename: canonical name -> variable name in the files, for names climdl cannot
            recognise (catalog entries' ``variables``).

    Returns:
        The lazily loaded, Dask-chunked dataset: canonical names, units and coordinates.

    Raises:
        DataError: no file matches, a file or store is unreadable, a variable is unknown or missing
            (with ``strict``), units cannot be converted, or ``bbox`` is malformed or not
            covered by the grid.
    """
    if bbox is not None:  # a malformed bbox fails before any file is opened
        _coords.check_bbox_values(bbox)
    files = resolve_paths(paths)
    where = describe(files)
    if isinstance(variables, str):
        variables = [variables]
    wanted = None if variables is None else list(dict.fromkeys(variables))
    unknown = [v for v in wanted or [] if not is_canonical(v)]
    if unknown:
        raise DataError(
            f"unknown variable(s) {', '.join(unknown)}; climdl knows {', '.join(known_names())} "
            "and <z|t|u|v|q>_<hPa>."
        )
    notes: list[str] = []
    seen: dict[str, None] = {}
    parts = [
        (
            p,
            _canonical_file(
                p,
                None if wanted is None else set(wanted),
                levels,
                chunks,
                assume_units,
                notes,
                seen,
                rename,
            ),
        )
        for p in files
    ]
    if time_range is not None:
        parts = select_time(parts, time_range, where)
    ds = combine(parts)
    missing = [v for v in wanted or [] if v not in ds.data_vars]
    if missing or (wanted is None and notes):
        what = f"{', '.join(missing)} not found" if missing else "some requested levels are missing"
        message = (
            f"{what} in {where} (variables there: {', '.join(seen) or 'none'}"
            + (f"; {'; '.join(dict.fromkeys(notes))}" if notes else "")
            + "); check the input files or the requested variables."
        )
        if strict:
            raise DataError(message)
        log.warning("%s", message)
    if not ds.data_vars:
        raise DataError(
            f"{where} has no variable climdl recognises (found: {', '.join(seen) or 'none'}); "
            f"climdl reads {', '.join(SINGLE_LEVEL)} and z/t/u/v/q on pressure levels, known by "
            "name or CF standard_name: rename a variable that is one of them, or give it its "
            "standard_name."
        )
    names = (
        [v for v in wanted if v in ds.data_vars]
        if wanted
        else sorted(ds.data_vars, key=lambda n: _order(str(n)))
    )
    ds = ds[names]
    if "time" in ds.dims:
        check_times(ds["time"], where)
    if bbox is not None:
        ds = _coords.cut_bbox(ds, bbox, where=where)
    return ds
