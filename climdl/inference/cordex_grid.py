"""The archive's grid for ``--format cordex-cmip6``: coordinates, bounds, cell vertices, ``grid``.

From the staging file's grid (projected x/y in km or m, or rotated rlat/rlon; 2-D lat/lon; the
grid mapping), :func:`grid_variables` builds what the CORDEX-CMIP6 archive specification asks of
every file: x/y in metres (or rlat/rlon) with ``*_bnds``, float64 2-D ``lat``/``lon`` with their
four cell corners (``vertices_lat``/``vertices_lon``: pyproj for projections, the exact rotation
for rotated poles) and the grid mapping renamed ``crs``; :func:`grid_description` writes the
``grid`` attribute in the archive's suggested form ("... with 12.5 km grid spacing").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyproj
import xarray as xr

from climdl.errors import ConfigError
from climdl.preprocess.grids import rotated_to_geographic
from climdl.preprocess.length_units import metres_per_unit

__all__ = ["grid_description", "grid_variables"]


def grid_description(ds: xr.Dataset) -> str:
    """The ``grid`` attribute: the native grid and its spacing (the archive's suggested form)."""
    if "x" in ds.dims and "y" in ds.dims:
        dx_km = abs(float(np.diff(ds["x"].values[:2])[0])) * _km_factor(ds["x"])
        gm = _mapping_name(ds)
        kind = {
            "lambert_conformal_conic": "Lambert conformal conic",
            "rotated_latitude_longitude": "Rotated-pole latitude-longitude",
        }.get(gm or "", "Projected")
        return f"{kind} with {dx_km:g} km grid spacing (the emulator's target grid)"
    for y, x, kind in (
        ("rlat", "rlon", "Rotated-pole latitude-longitude"),
        ("lat", "lon", "Regular latitude-longitude"),
    ):
        if x in ds.dims and y in ds.dims:
            d = abs(float(np.diff(ds[x].values[:2])[0]))
            return f"{kind} with {d:g} degree grid spacing (the emulator's target grid)"
    return "unknown grid with unknown grid spacing"


def _km_factor(coord: xr.DataArray) -> float:
    """Kilometres per unit of a projected coordinate (metres without a known unit)."""
    return (metres_per_unit(coord.attrs.get("units", "m")) or 1.0) / 1e3


def _mapping_name(ds: xr.Dataset) -> str | None:
    for v in ds.variables.values():
        if "grid_mapping_name" in v.attrs:
            return str(v.attrs["grid_mapping_name"])
    return None


def _bounds_1d(c: np.ndarray) -> np.ndarray:
    """[n, 2] cell edges of 1-D centres (midpoints; the ends extrapolated)."""
    if c.size < 2:
        raise ConfigError("a grid axis of one cell has no spacing to publish its bounds from.")
    edges = np.concatenate(
        ([1.5 * c[0] - 0.5 * c[1]], (c[1:] + c[:-1]) / 2, [1.5 * c[-1] - 0.5 * c[-2]])
    )
    return np.stack([edges[:-1], edges[1:]], axis=1).astype(np.float64)


def _vertices(
    x_b: np.ndarray, y_b: np.ndarray, crs_attrs: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray] | None:
    """[ny, nx, 4] lat and lon of the cell corners, counter-clockwise from the lower left
    (x/y bounds in the grid mapping's own axes: metres, or rotated degrees); None for a
    mapping pyproj cannot read."""
    xs = np.stack([x_b[None, :, 0], x_b[None, :, 1], x_b[None, :, 1], x_b[None, :, 0]], axis=-1)
    ys = np.stack([y_b[:, None, 0], y_b[:, None, 0], y_b[:, None, 1], y_b[:, None, 1]], axis=-1)
    xs, ys = np.broadcast_arrays(xs, ys)
    if crs_attrs.get("grid_mapping_name") == "rotated_latitude_longitude":
        lon, lat = rotated_to_geographic(
            xs,
            ys,
            float(crs_attrs["grid_north_pole_latitude"]),
            float(crs_attrs["grid_north_pole_longitude"]),
            float(crs_attrs.get("north_pole_grid_longitude", 0.0)),
        )
    else:
        try:
            crs = pyproj.CRS.from_cf(crs_attrs)
        except pyproj.exceptions.CRSError:
            return None
        to_geo = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
        lon, lat = to_geo.transform(xs, ys)
    return np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)


def grid_variables(
    src: xr.Dataset,
) -> tuple[dict[str, xr.Variable], dict[str, xr.Variable], str | None]:
    """Coordinates (x/y in m or rlat/rlon, lat, lon) and further variables (bounds, crs) of
    the archive's grid, from the staging file's; and the name of the grid mapping (``crs``)."""
    coords: dict[str, xr.Variable] = {}
    extra: dict[str, xr.Variable] = {}
    gm_name = next(
        (str(n) for n, v in src.variables.items() if "grid_mapping_name" in v.attrs), None
    )
    crs_attrs = dict(src[gm_name].attrs) if gm_name else None
    projected = "x" in src.dims and "y" in src.dims
    if projected:
        for name in ("y", "x"):
            c = src[name]
            metres = c.values.astype(np.float64) * _km_factor(c) * 1e3
            coords[name] = xr.Variable(
                (name,),
                metres,
                {
                    "standard_name": f"projection_{name}_coordinate",
                    "long_name": f"{name} coordinate of projection",
                    "units": "m",
                    "axis": name.upper(),
                    "bounds": f"{name}_bnds",
                },
            )
            extra[f"{name}_bnds"] = xr.Variable((name, "bnds"), _bounds_1d(metres))
    else:
        for name in ("rlat", "rlon", "lat", "lon"):
            if name in src.dims:
                c = src[name]
                coords[name] = xr.Variable((name,), c.values.astype(np.float64), dict(c.attrs))
                coords[name].attrs["bounds"] = f"{name}_bnds"
                extra[f"{name}_bnds"] = xr.Variable(
                    (name, "bnds"), _bounds_1d(c.values.astype(np.float64))
                )
    for name in ("lat", "lon"):
        if name in src.coords and name not in coords:
            c = src[name]
            coords[name] = xr.Variable(
                c.dims,
                c.values.astype(np.float64),
                {
                    "standard_name": "latitude" if name == "lat" else "longitude",
                    "long_name": "latitude" if name == "lat" else "longitude",
                    "units": "degrees_north" if name == "lat" else "degrees_east",
                },
            )
    if crs_attrs is not None:
        crs_attrs.pop("long_name", None)
        extra["crs"] = xr.Variable((), np.int32(0), crs_attrs)
        ydim, xdim = ("y", "x") if projected else ("rlat", "rlon")
        if (
            ydim in coords
            and xdim in coords
            and coords.get("lat") is not None
            and coords["lat"].ndim == 2
        ):
            xb = extra[f"{xdim}_bnds"].values
            yb = extra[f"{ydim}_bnds"].values
            corners = _vertices(xb, yb, crs_attrs)
            if corners is not None:
                vlat, vlon = corners
                dims2 = (*coords["lat"].dims, "vertices")
                extra["vertices_lat"] = xr.Variable(dims2, vlat, {"units": "degrees_north"})
                extra["vertices_lon"] = xr.Variable(dims2, vlon, {"units": "degrees_east"})
                coords["lat"].attrs["bounds"] = "vertices_lat"
                coords["lon"].attrs["bounds"] = "vertices_lon"
    return coords, extra, "crs" if crs_attrs is not None else None
