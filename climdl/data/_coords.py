"""Coordinate handling for the reader: time, pressure levels and horizontal grids.

Canonical horizontal layout: regular grids have 1-D ``lat`` (ascending, south to north) and
``lon`` dimensions. Longitudes are in -180..180, except for domains that cross the antimeridian,
which keep 0..360 so the domain stays contiguous (a domain crossing both 0 and 180 degrees starts
at its western edge). Curvilinear and projected grids (Lambert ``x``/``y``, rotated pole) keep their
dimensions and projection coordinates untouched; only their 2-D latitude/longitude coordinates are
renamed ``lat``/``lon`` and their longitudes put on the same convention.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence

import numpy as np
import xarray as xr

from climdl.data.units import parse_units, registry
from climdl.errors import DataError
from climdl.preprocess.grids import rotated_to_geographic

log = logging.getLogger(__name__)

_LAT_NAMES = {"lat", "latitude", "nav_lat", "xlat", "lat2d", "latitudes", "y_lat"}
_LON_NAMES = {"lon", "longitude", "nav_lon", "xlong", "lon2d", "longitudes", "x_lon"}
_LAT_UNITS = {"degrees_north", "degree_north", "degree_n", "degrees_n", "degreen", "degreesn"}
_LON_UNITS = {"degrees_east", "degree_east", "degree_e", "degrees_e", "degreee", "degreese"}
_VERTICAL_NAMES = {"plev", "lev", "level", "levels", "pressure", "pressure_level", "isobaricinhpa"}


def find_time_name(ds: xr.Dataset) -> Hashable | None:
    """Name of the time dimension: ``time`` or a coordinate with axis T / standard_name time."""
    if "time" in ds.dims:
        return "time"
    for name, coord in ds.coords.items():
        attrs = coord.attrs
        if (
            coord.ndim == 1
            and coord.dims[0] == name
            and (attrs.get("axis") == "T" or attrs.get("standard_name") == "time")
        ):
            return name
    return None


def time_step_days(time: xr.DataArray) -> float | None:
    """Median spacing of a time coordinate in days (None for fewer than two steps)."""
    if time.size < 2:
        return None
    deltas = np.diff(time.values)
    seconds = [
        d / np.timedelta64(1, "s") if isinstance(d, np.timedelta64) else d.total_seconds()
        for d in deltas
    ]
    return float(np.median(seconds)) / 86400.0


#: hPa per unit of the pressure units nearly every file uses (the rest go through pint).
_HPA_PER = {"Pa": 0.01, "hPa": 1.0, "mbar": 1.0}


def _is_pressure(coord: xr.DataArray) -> bool:
    units = str(coord.attrs.get("units", "")).strip()
    if not units:
        return coord.attrs.get("standard_name", "air_pressure") == "air_pressure"
    if units in _HPA_PER:
        return True
    try:
        return bool(registry().Quantity(1.0, parse_units(units)).check("[pressure]"))
    except ValueError:
        return False


def vertical_coord(da: xr.DataArray) -> tuple[Hashable | None, bool]:
    """The vertical coordinate of ``da`` (dimension or scalar) and whether it is pressure.

    Recognised by name (plev, lev, level, pressure, ...), standard_name air_pressure, or
    ``axis: Z``/``positive``. A scalar non-pressure coordinate (``height = 2 m``) does not count.
    """
    for name, coord in da.coords.items():
        if coord.ndim > 1:
            continue
        attrs = coord.attrs
        if (
            str(name).lower() in _VERTICAL_NAMES
            or attrs.get("standard_name") == "air_pressure"
            or attrs.get("axis") == "Z"
            or "positive" in attrs
        ):
            pressure = _is_pressure(coord)
            if pressure or coord.size > 1:
                return name, pressure
    return None, False


def levels_hpa(coord: xr.DataArray, *, where: str) -> np.ndarray:
    """Pressure levels of ``coord`` in hPa (units Pa/hPa/mbar; without units, guessed by size)."""
    values = np.atleast_1d(np.asarray(coord.values, dtype=float))
    units = str(coord.attrs.get("units", "")).strip()
    if not units:
        return values / 100.0 if np.nanmax(values) > 1100.0 else values
    try:
        factor = (
            _HPA_PER.get(units) or registry().Quantity(1.0, parse_units(units)).to("hPa").magnitude
        )
    except Exception:
        raise DataError(
            f"the vertical coordinate {coord.name!r} in {where} has units {units!r}, which are "
            "not a pressure; climdl needs pressure levels in Pa or hPa."
        ) from None
    return values * float(factor)


def _find(ds: xr.Dataset, names: set[str], units: set[str], standard_name: str) -> Hashable | None:
    by_name = None
    for name, coord in ds.coords.items():
        attrs = coord.attrs
        if attrs.get("standard_name") == standard_name:
            return name
        if str(attrs.get("units", "")).lower() in units:
            return name
        if by_name is None and str(name).lower() in names:
            by_name = name
    return by_name


def promote_latlon(ds: xr.Dataset) -> xr.Dataset:
    """Make latitude/longitude data variables (files without a coordinates attribute) coords."""
    extra = [
        name
        for name, var in ds.data_vars.items()
        if var.attrs.get("standard_name") in ("latitude", "longitude")
        or str(name).lower() in _LAT_NAMES | _LON_NAMES
    ]
    return ds.set_coords(extra) if extra else ds


def lon_origin(lon: np.ndarray) -> float:
    """Western edge of the longitude frame that keeps the points contiguous (see module doc)."""
    u = np.unique(np.mod(np.asarray(lon, dtype=float)[np.isfinite(lon)], 360.0))
    if u.size < 2:
        return -180.0
    gaps = np.diff(np.append(u, u[0] + 360.0))
    i = int(np.argmax(gaps))
    if gaps[i] < 2.0 * np.median(gaps):  # global: no gap larger than a grid step
        return -180.0
    west, extent = u[(i + 1) % u.size], 360.0 - gaps[i]
    west180 = (west + 180.0) % 360.0 - 180.0
    if west180 + extent < 180.0:
        return -180.0
    if west + extent < 360.0:
        return 0.0
    return float(west180)


def _wrap(lon: np.ndarray, origin: float) -> np.ndarray:
    return origin + np.mod(lon - origin, 360.0)


def _rotated_axis(ds: xr.Dataset, standard_name: str) -> Hashable | None:
    """The 1-D dimension coordinate of ``ds`` with this standard_name (grid_latitude/longitude)."""
    for name, coord in ds.coords.items():
        if (
            coord.ndim == 1
            and coord.dims[0] == name
            and coord.attrs.get("standard_name") == standard_name
        ):
            return name
    return None


def add_rotated_latlon(ds: xr.Dataset) -> xr.Dataset:
    """Add the 2-D ``lat``/``lon`` of a rotated-pole grid that comes without them.

    CF requires true latitude/longitude beside rotated ``grid_latitude``/``grid_longitude``, but
    many writers (the Met Office UM through Iris, among others) leave them out and give only the
    ``rotated_latitude_longitude`` grid mapping. The coordinates are then computed from the
    mapping (spherical rotation, exact); any other grid is returned unchanged.
    """
    gm = next(
        (
            v
            for v in ds.variables.values()
            if v.attrs.get("grid_mapping_name") == "rotated_latitude_longitude"
        ),
        None,
    )
    ry, rx = _rotated_axis(ds, "grid_latitude"), _rotated_axis(ds, "grid_longitude")
    if gm is None or ry is None or rx is None:
        return ds
    try:
        pole_lat = float(gm.attrs["grid_north_pole_latitude"])
        pole_lon = float(gm.attrs["grid_north_pole_longitude"])
    except (KeyError, TypeError, ValueError):
        log.debug("rotated_latitude_longitude mapping without a usable pole; grid left as is")
        return ds
    offset = float(gm.attrs.get("north_pole_grid_longitude", 0.0))
    rlon = np.asarray(ds[rx].values, dtype=np.float64)[np.newaxis, :]
    rlat = np.asarray(ds[ry].values, dtype=np.float64)[:, np.newaxis]
    lon, lat = rotated_to_geographic(rlon, rlat, pole_lat, pole_lon, offset)
    dims = (ry, rx)
    return ds.assign_coords(
        lat=(dims, lat, {"standard_name": "latitude", "units": "degrees_north"}),
        lon=(dims, lon, {"standard_name": "longitude", "units": "degrees_east"}),
    )


def normalise_horizontal(ds: xr.Dataset) -> xr.Dataset:
    """Rename lat/lon, sort regular grids south to north and put longitudes on one convention.

    A rotated-pole grid without latitude/longitude gets them from its grid mapping
    (:func:`add_rotated_latlon`).
    """
    lat_name = _find(ds, _LAT_NAMES, _LAT_UNITS, "latitude")
    lon_name = _find(ds, _LON_NAMES, _LON_UNITS, "longitude")
    if lat_name is None or lon_name is None:
        ds = add_rotated_latlon(ds)
        if "lat" in ds.coords and "lon" in ds.coords and ds["lat"].ndim == 2:
            lat_name, lon_name = "lat", "lon"
    if lat_name is None or lon_name is None:
        log.debug("no latitude/longitude coordinates found; grid left as is")
        return ds
    lat, lon = ds[lat_name], ds[lon_name]
    if lat.ndim == 1 and lon.ndim == 1 and lat.dims != lon.dims:
        for name, coord in ((lat_name, lat), (lon_name, lon)):
            if coord.dims[0] != name:
                ds = ds.swap_dims({coord.dims[0]: name})
        ds = (
            ds.rename({lat_name: "lat", lon_name: "lon"})
            if (lat_name, lon_name)
            != (
                "lat",
                "lon",
            )
            else ds
        )
        values = ds["lat"].values
        if values.size > 1 and not np.all(np.diff(values) > 0):
            ds = ds.isel(lat=np.argsort(values, kind="stable"))
        wrapped = _wrap(ds["lon"].values.astype(float), lon_origin(ds["lon"].values))
        _, order = np.unique(wrapped, return_index=True)
        if order.size < wrapped.size:
            log.debug("dropping %d duplicate longitudes", wrapped.size - order.size)
        ds = ds.assign_coords(lon=("lon", wrapped.astype(ds["lon"].dtype), ds["lon"].attrs))
        if order.size < wrapped.size or np.any(np.diff(order) < 0):
            ds = ds.isel(lon=order)
        return ds
    rename = {k: v for k, v in ((lat_name, "lat"), (lon_name, "lon")) if k != v}
    ds = ds.rename(rename) if rename else ds
    values = np.asarray(ds["lon"].values, dtype=float)
    wrapped = _wrap(values, lon_origin(values))
    return ds.assign_coords(lon=(ds["lon"].dims, wrapped, ds["lon"].attrs))


def _inside(poly_x: np.ndarray, poly_y: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over the points."""
    inside = np.zeros(px.shape, dtype=bool)
    x0, y0 = poly_x, poly_y
    x1, y1 = np.roll(poly_x, -1), np.roll(poly_y, -1)
    for a, b, c, d in zip(x0, y0, x1, y1, strict=True):
        crosses = (b > py) != (d > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xcross = a + (py - b) * (c - a) / (d - b)
        inside ^= crosses & (px < xcross)
    return inside


def check_bbox(ds: xr.Dataset, bbox: Sequence[float], *, where: str) -> None:
    """Raise DataError unless the grid covers ``bbox = (lon_min, lon_max, lat_min, lat_max)``.

    Regular grids count cell edges (centres +- half a step); curvilinear grids count the polygon
    through their outermost cell centres. A bbox may cross the antimeridian (lon_min > lon_max).
    """
    if "lat" not in ds.coords or "lon" not in ds.coords:
        raise DataError(
            f"{where} has no latitude/longitude coordinates to check the domain against."
        )
    lon_min, lon_max, lat_min, lat_max = (float(v) for v in bbox)
    width = (lon_max - lon_min) % 360.0 or (360.0 if lon_max != lon_min else 0.0)
    lat = np.asarray(ds["lat"].values, dtype=float)
    lon = np.asarray(ds["lon"].values, dtype=float)
    if lat.ndim == 1:
        dlat = float(np.median(np.abs(np.diff(lat)))) / 2 if lat.size > 1 else 0.0
        dlon = float(np.median(np.abs(np.diff(lon)))) / 2 if lon.size > 1 else 0.0
        g_lat = (lat.min() - dlat, lat.max() + dlat)
        g_lon = (lon.min() - dlon, lon.max() + dlon)
        west = g_lon[0] - 1e-6 + np.mod(lon_min - g_lon[0] + 1e-6, 360.0)
        ok_lon = g_lon[1] - g_lon[0] >= 360.0 - 1e-6 or west + width <= g_lon[1] + 1e-6
        ok = ok_lon and g_lat[0] - 1e-6 <= lat_min and lat_max <= g_lat[1] + 1e-6
    else:
        g_lat, g_lon = (lat.min(), lat.max()), (lon.min(), lon.max())
        ring_x = np.concatenate([lon[0, :], lon[1:, -1], lon[-1, -2::-1], lon[-2:0:-1, 0]])
        ring_y = np.concatenate([lat[0, :], lat[1:, -1], lat[-1, -2::-1], lat[-2:0:-1, 0]])
        t = np.linspace(0.0, 1.0, 21)
        west = g_lon[0] + np.mod(lon_min - g_lon[0], 360.0)
        px = np.concatenate(
            [west + t * width, np.full(21, west + width), west + t * width, np.full(21, west)]
        )
        py = np.concatenate(
            [
                np.full(21, lat_min),
                lat_min + t * (lat_max - lat_min),
                np.full(21, lat_max),
                lat_min + t * (lat_max - lat_min),
            ]
        )
        ok = bool(np.all(_inside(ring_x, ring_y, px, py)))
    if not ok:
        raise DataError(
            f"the grid of {where} covers lon {g_lon[0]:.2f}..{g_lon[1]:.2f}, lat "
            f"{g_lat[0]:.2f}..{g_lat[1]:.2f} but the domain needs lon {lon_min:g}..{lon_max:g}, "
            f"lat {lat_min:g}..{lat_max:g}; use input data that cover the domain."
        )


def check_bbox_values(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    """``bbox`` as ``(lon_min, lon_max, lat_min, lat_max)`` floats; DataError when it is not one
    (four numbers, latitudes within -90..90 and in order; ``lon_min > lon_max`` crosses the
    antimeridian)."""
    values = list(bbox)
    if len(values) != 4:
        raise DataError(
            f"a bbox is four numbers, lon_min lon_max lat_min lat_max; got {len(values)}."
        )
    try:
        lon_min, lon_max, lat_min, lat_max = (float(v) for v in values)
    except (TypeError, ValueError):
        raise DataError(f"a bbox is four numbers; got {values}.") from None
    if not all(np.isfinite([lon_min, lon_max, lat_min, lat_max])):
        raise DataError(f"a bbox is four finite numbers; got {values}.")
    if not -90.0 <= lat_min < lat_max <= 90.0:
        raise DataError(
            f"the bbox's latitudes {lat_min:g}..{lat_max:g} must lie within -90..90 with "
            "lat_min < lat_max (the order is lon_min lon_max lat_min lat_max)."
        )
    return lon_min, lon_max, lat_min, lat_max


def cut_bbox(ds: xr.Dataset, bbox: Sequence[float], *, where: str) -> xr.Dataset:
    """``ds`` cut, lazily, to the grid cells whose centres lie in ``bbox = (lon_min, lon_max,
    lat_min, lat_max)`` (degrees; ``lon_min > lon_max`` crosses the antimeridian).

    The grid must cover the bbox (:func:`check_bbox`). Regular grids keep the rows and columns
    inside (west to east from ``lon_min``); curvilinear and projected grids keep the smallest
    window of rows and columns that holds every cell centre inside, so the cut stays a
    rectangle in the grid's own coordinates (with its projection and 2-D lat/lon). Nothing is
    read: the data variables stay lazy.
    """
    lon_min, lon_max, lat_min, lat_max = check_bbox_values(bbox)
    check_bbox(ds, bbox, where=where)
    lat = np.asarray(ds["lat"].values, dtype=float)
    lon = np.asarray(ds["lon"].values, dtype=float)
    width = (lon_max - lon_min) % 360.0 or (360.0 if lon_max != lon_min else 0.0)
    tol = 1e-6  # degrees: centres stored in float32 on the bbox's edge still count
    east = np.mod(lon - lon_min + tol, 360.0) - tol  # degrees east of lon_min
    in_lon = east <= width + tol
    in_lat = (lat >= lat_min - tol) & (lat <= lat_max + tol)
    sel: dict[Hashable, np.ndarray | slice] = {}
    if lat.ndim == 1:
        rows = np.flatnonzero(in_lat)
        cols = np.flatnonzero(in_lon)
        cols = cols[np.argsort(east[cols], kind="stable")]
        if rows.size and cols.size:
            sel = {ds["lat"].dims[0]: slice(int(rows[0]), int(rows[-1]) + 1)}
            contiguous = bool(np.all(np.diff(cols) == 1))
            sel[ds["lon"].dims[0]] = slice(int(cols[0]), int(cols[-1]) + 1) if contiguous else cols
            if not contiguous:  # across the grid's seam: longitudes continue from lon_min
                out = ds.isel(sel)
                return out.assign_coords(
                    lon=out["lon"].copy(data=(lon_min + east[cols]).astype(out["lon"].dtype))
                )
    else:
        inside = in_lat & in_lon
        rows = np.flatnonzero(inside.any(axis=1))
        cols = np.flatnonzero(inside.any(axis=0))
        ydim, xdim = ds["lat"].dims
        if rows.size and cols.size:
            sel = {
                ydim: slice(int(rows[0]), int(rows[-1]) + 1),
                xdim: slice(int(cols[0]), int(cols[-1]) + 1),
            }
    if rows.size == 0 or cols.size == 0:
        raise DataError(
            f"no grid cell of {where} has its centre in the bbox lon {lon_min:g}..{lon_max:g}, "
            f"lat {lat_min:g}..{lat_max:g} (it is smaller than one cell); widen it."
        )
    return ds.isel(sel)


#: Horizontal dimension pairs in the order climdl's arrays use them (rows, then columns).
_HORIZONTAL_PAIRS = (
    ("lat", "lon"),
    ("y", "x"),
    ("rlat", "rlon"),
    ("grid_latitude", "grid_longitude"),
)


def canonical_dim_order(ds: xr.Dataset) -> xr.Dataset:
    """Every variable as (time, other dims, rows, columns): a file that stores a field as
    (lon, lat, time) must not reach the model with its axes swapped."""
    out = {}
    for name, da in ds.data_vars.items():
        dims = list(da.dims)
        horizontal = [d for pair in _HORIZONTAL_PAIRS if set(pair) <= set(dims) for d in pair]
        head = ["time"] if "time" in dims else []
        rest = [d for d in dims if d not in head and d not in horizontal]
        order = [*head, *rest, *horizontal]
        if order != dims:
            out[name] = da.transpose(*order)
    return ds.assign(out) if out else ds
