"""Where a field lives on the globe: its coordinate reference system and the map frame to draw it.

A CF grid-mapping variable (``Lambert_Conformal`` of the ALPS grid, a rotated pole, ...) becomes
the matching cartopy CRS, and a Lambert or rotated-pole field is drawn in its own projection, so
the map is the model's rectangle, not a warped box. Regular and curvilinear lat/lon fields are
drawn on an equirectangular map centred on the domain (Robinson when global). x/y in km are
turned into the metres cartopy works in.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from climdl.errors import ConfigError, DataError
from climdl.preprocess.length_units import metres_per_unit

if TYPE_CHECKING:
    import cartopy.crs as ccrs
    import xarray as xr

_X_NAMES = ("x", "rlon", "lon", "longitude", "nav_lon", "xc", "west_east", "i", "col")
_Y_NAMES = ("y", "rlat", "lat", "latitude", "nav_lat", "yc", "south_north", "j", "row")
_X_STD = ("projection_x_coordinate", "grid_longitude", "longitude")
_Y_STD = ("projection_y_coordinate", "grid_latitude", "latitude")


# ----------------------------------------------------------------------------- CF -> cartopy
def _globe(attrs: Mapping[str, Any]) -> ccrs.Globe:
    import cartopy.crs as ccrs

    if "earth_radius" in attrs:
        r = float(attrs["earth_radius"])
        return ccrs.Globe(ellipse=None, semimajor_axis=r, semiminor_axis=r)
    if "semi_major_axis" in attrs:
        a = float(attrs["semi_major_axis"])
        if "semi_minor_axis" in attrs:
            return ccrs.Globe(
                ellipse=None, semimajor_axis=a, semiminor_axis=float(attrs["semi_minor_axis"])
            )
        if "inverse_flattening" in attrs and float(attrs["inverse_flattening"]) != 0:
            return ccrs.Globe(
                ellipse=None,
                semimajor_axis=a,
                inverse_flattening=float(attrs["inverse_flattening"]),
            )
        return ccrs.Globe(ellipse=None, semimajor_axis=a, semiminor_axis=a)
    return ccrs.Globe()


def _floats(value: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in np.atleast_1d(np.asarray(value, dtype=float)))


def crs_from_cf(attrs: Mapping[str, Any]) -> ccrs.CRS:
    """The cartopy CRS of a CF grid-mapping attribute dict.

    Lambert conformal conic, rotated pole and lat/lon map to cartopy's own classes (with their
    map boundaries); any other mapping that pyproj understands becomes a generic projection whose
    bounds :func:`map_frame` sets from the data.

    Args:
        attrs: the grid-mapping variable's attributes (``grid_mapping_name``, ...).

    Returns:
        The CRS (PlateCarree for a lat/lon mapping or no mapping).

    Raises:
        ConfigError: a mapping that neither cartopy nor pyproj can use.
    """
    import cartopy.crs as ccrs

    gm = str(attrs.get("grid_mapping_name", "")).strip()
    if gm == "lambert_conformal_conic":
        parallels = _floats(
            attrs.get("standard_parallel", attrs.get("latitude_of_projection_origin", 40.0))
        )
        if len(parallels) == 1:
            parallels = (parallels[0], parallels[0])
        south = np.mean(parallels) < 0
        return ccrs.LambertConformal(
            central_longitude=float(attrs.get("longitude_of_central_meridian", 0.0)),
            central_latitude=float(attrs.get("latitude_of_projection_origin", 0.0)),
            false_easting=float(attrs.get("false_easting", 0.0)),
            false_northing=float(attrs.get("false_northing", 0.0)),
            standard_parallels=parallels[:2],
            globe=_globe(attrs),
            cutoff=30.0 if south else -30.0,
        )
    if gm == "rotated_latitude_longitude":
        return ccrs.RotatedPole(
            pole_longitude=float(attrs.get("grid_north_pole_longitude", 0.0)),
            pole_latitude=float(attrs.get("grid_north_pole_latitude", 90.0)),
            central_rotated_longitude=float(attrs.get("north_pole_grid_longitude", 0.0)),
            globe=_globe(attrs),
        )
    if gm == "latitude_longitude":
        return ccrs.PlateCarree()
    try:
        import pyproj

        crs = pyproj.CRS.from_cf(dict(attrs))
        return ccrs.Projection(crs)
    except Exception as exc:  # pyproj raises CRSError, KeyError, ... for unusable mappings
        raise ConfigError(
            f"cannot draw grid mapping {gm or '(no grid_mapping_name)'!r}: {exc}; pass crs= "
            "explicitly (a cartopy CRS)."
        ) from None


def find_grid_mapping(da: xr.DataArray) -> Mapping[str, Any] | None:
    """CF grid-mapping attributes of ``da``: the variable named by its ``grid_mapping`` attribute
    or encoding (``decode_coords="all"`` moves it there), or any coordinate that has a
    ``grid_mapping_name``; ``None`` when there is none."""
    names: list[Hashable] = []
    for where in (da.attrs, da.encoding):
        ref = str(where.get("grid_mapping", "")).split(":")[0].strip()
        if ref:
            names.append(ref)
    names += [n for n, c in da.coords.items() if "grid_mapping_name" in c.attrs]
    for name in names:
        if name in da.coords and "grid_mapping_name" in da.coords[name].attrs:
            return dict(da.coords[name].attrs)
    return None


# ----------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class Grid:
    """Horizontal coordinates of a 2-D field in the units of ``crs`` (metres or degrees).

    ``x``/``y`` are 1-D (rectilinear) or 2-D (curvilinear, same shape as the field); the field is
    ``values`` with dims (y, x).
    """

    crs: ccrs.CRS
    x: np.ndarray
    y: np.ndarray
    values: np.ndarray
    geographic: bool


def _axis_of(da: xr.DataArray, dim: Hashable) -> str | None:
    name = str(dim).lower()
    attrs = da.coords[dim].attrs if dim in da.coords else {}
    axis = str(attrs.get("axis", "")).upper()
    std = str(attrs.get("standard_name", ""))
    if axis == "X" or std in _X_STD or name in _X_NAMES:
        return "x"
    if axis == "Y" or std in _Y_STD or name in _Y_NAMES:
        return "y"
    return None


def _length_factor(coord: xr.DataArray) -> float:
    metres = metres_per_unit(coord.attrs.get("units", ""))
    if metres is not None:
        return metres
    values = np.asarray(coord.values, dtype=float)
    step = float(np.nanmedian(np.abs(np.diff(values)))) if values.size > 1 else 0.0
    return 1000.0 if 0 < step < 200 else 1.0  # no units: a step under 200 "m" must be km


def _latlon_2d(da: xr.DataArray) -> tuple[np.ndarray, np.ndarray] | None:
    lon = lat = None
    for name, c in da.coords.items():
        if c.ndim != 2 or set(c.dims) != set(da.dims):
            continue
        std, n = str(c.attrs.get("standard_name", "")), str(name).lower()
        if std == "longitude" or n in ("lon", "longitude", "nav_lon"):
            lon = c.transpose(*da.dims).values
        elif std == "latitude" or n in ("lat", "latitude", "nav_lat"):
            lat = c.transpose(*da.dims).values
    return (
        (np.asarray(lon, float), np.asarray(lat, float))
        if lon is not None and lat is not None
        else None
    )


def grid_of(da: xr.DataArray, crs: ccrs.CRS | Mapping[str, Any] | None = None) -> Grid:
    """Coordinates and CRS of a 2-D field; raises DataError when they cannot be found.

    The grid mapping comes from ``crs`` (a cartopy CRS or CF attribute dict) or from the
    DataArray (:func:`find_grid_mapping`); without one, 1-D or 2-D lat/lon coordinates are used.

    Args:
        da: the 2-D field.
        crs: its CRS (cartopy CRS or CF grid-mapping attributes); None: found from ``da``.

    Returns:
        The field's values with their x/y coordinates and CRS.

    Raises:
        DataError: no lat/lon coordinates and no grid mapping to place the field.
    """
    import cartopy.crs as ccrs

    if da.ndim != 2:
        raise DataError(
            f"{da.name or 'the field'} has dimensions {tuple(da.dims)}; a map needs a "
            "2-D field (select one time step or average over time first)."
        )
    axes = {_axis_of(da, d): d for d in da.dims}
    if "x" in axes and "y" in axes:
        da = da.transpose(axes["y"], axes["x"])
    ydim, xdim = da.dims
    values = np.asarray(da.values, dtype=float)
    if isinstance(crs, Mapping):
        crs = crs_from_cf(crs)
    if crs is None:
        attrs = find_grid_mapping(da)
        crs = crs_from_cf(attrs) if attrs is not None else None
    has_dims = xdim in da.coords and ydim in da.coords
    if crs is not None and has_dims and not isinstance(crs, ccrs.PlateCarree):
        xc, yc = da.coords[xdim], da.coords[ydim]
        geographic = isinstance(crs, ccrs.RotatedPole)
        fx = 1.0 if geographic else _length_factor(xc)
        fy = 1.0 if geographic else _length_factor(yc)
        return Grid(
            crs,
            np.asarray(xc.values, float) * fx,
            np.asarray(yc.values, float) * fy,
            values,
            geographic,
        )
    plate = ccrs.PlateCarree()
    if has_dims and "x" in axes and "y" in axes and str(xdim).lower().startswith("lon"):
        return Grid(
            plate,
            np.asarray(da[xdim].values, float),
            np.asarray(da[ydim].values, float),
            values,
            True,
        )
    if has_dims and {_std(da, xdim), _std(da, ydim)} == {"longitude", "latitude"}:
        return Grid(
            plate,
            np.asarray(da[xdim].values, float),
            np.asarray(da[ydim].values, float),
            values,
            True,
        )
    ll = _latlon_2d(da)
    if ll is not None:
        return Grid(plate, ll[0], ll[1], values, True)
    raise DataError(
        f"cannot place {da.name or 'the field'} on a map: dims {tuple(da.dims)} have no lat/lon "
        "coordinates and no grid mapping; open the file with decode_coords='all' or pass crs=."
    )


def _std(da: xr.DataArray, dim: Hashable) -> str:
    return str(da.coords[dim].attrs.get("standard_name", "")) if dim in da.coords else ""


# ----------------------------------------------------------------------------- frame
@dataclass(frozen=True)
class MapFrame:
    """The map a field is drawn on: projection, extent in its coordinates, lon/lat box.

    Panels of one figure share a frame so that a coarse predictor on a lat/lon grid is drawn in
    the Lambert rectangle of the target next to it.

    Attributes:
        projection: the cartopy projection of the map.
        extent: (x0, x1, y0, y1) in the projection's coordinates; None: the whole globe.
        lonlat_extent: (lon0, lon1, lat0, lat1) box of the map, for picking coastlines.
    """

    projection: ccrs.Projection
    extent: tuple[float, float, float, float] | None  # None: the whole globe
    lonlat_extent: tuple[float, float, float, float]


def _edges(c: np.ndarray) -> np.ndarray:
    """Cell edges of 1-D centres (half a step beyond the first and last)."""
    if c.size < 2:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])


def _outline(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Points along the outer cell edges of the grid, in its CRS."""
    if grid.x.ndim == 1:
        xe, ye = _edges(grid.x), _edges(grid.y)
        xs = np.concatenate([xe, np.full(ye.size, xe[-1]), xe[::-1], np.full(ye.size, xe[0])])
        ys = np.concatenate([np.full(xe.size, ye[0]), ye, np.full(xe.size, ye[-1]), ye[::-1]])
        return xs, ys
    x, y = grid.x, grid.y
    xs = np.concatenate([x[0, :], x[:, -1], x[-1, ::-1], x[::-1, 0]])
    ys = np.concatenate([y[0, :], y[:, -1], y[-1, ::-1], y[::-1, 0]])
    return xs, ys


def _unwrap_lon(lon: np.ndarray, centre: float) -> np.ndarray:
    return centre + (lon - centre + 180.0) % 360.0 - 180.0


def _lonlat_box(
    lon: np.ndarray, lat: np.ndarray, margin: float
) -> tuple[float, float, float, float]:
    ok = np.isfinite(lon) & np.isfinite(lat)
    lon, lat = lon[ok], lat[ok]
    # centre on the circular mean so that domains across the antimeridian stay contiguous
    rad = np.deg2rad(lon)
    centre = float(np.rad2deg(np.arctan2(np.sin(rad).mean(), np.cos(rad).mean())))
    lon = _unwrap_lon(lon, centre)
    lo, hi = float(lon.min()), float(lon.max())
    if hi - lo > 300:
        lo, hi = -180.0, 180.0
    return (
        lo - margin,
        hi + margin,
        max(float(lat.min()) - margin, -90.0),
        min(float(lat.max()) + margin, 90.0),
    )


def map_frame(grid: Grid, projection: ccrs.Projection | None = None) -> MapFrame:
    """The frame a grid is drawn in: its own projection (Lambert, rotated pole) and cell-edge
    extent, or for lat/lon grids an equirectangular map centred on the domain (Robinson when the
    grid spans most of the globe). ``projection`` forces another map projection.

    Args:
        grid: the field's grid (:func:`grid_of`).
        projection: a map projection to use instead.

    Returns:
        The projection, extent and lon/lat box of the map.

    Raises:
        DataError: the field lies outside ``projection``.
    """
    import cartopy.crs as ccrs

    xs, ys = _outline(grid)
    plate = ccrs.PlateCarree()
    if isinstance(grid.crs, ccrs.PlateCarree):
        lon, lat = xs, ys
    else:
        pts = plate.transform_points(grid.crs, xs, ys)
        lon, lat = pts[:, 0], pts[:, 1]
    box = _lonlat_box(lon, lat, margin=0.0)
    if (
        projection is None
        and isinstance(grid.crs, ccrs.Projection)
        and not isinstance(grid.crs, ccrs.PlateCarree)
    ):
        projection = grid.crs
        if projection.bounds is None:  # generic pyproj projection: bound it by the data
            w, h = np.ptp(xs), np.ptp(ys)
            projection.bounds = (xs.min() - w, xs.max() + w, ys.min() - h, ys.max() + h)
            projection.threshold = min(w, h) / 500.0
    centre = 0.5 * (box[0] + box[1])
    if box[1] - box[0] >= 300 and box[3] - box[2] >= 120:  # (nearly) global: the whole map
        if projection is None:
            projection = ccrs.Robinson(central_longitude=centre)
        return MapFrame(projection, None, (-180.0, 180.0, -90.0, 90.0))
    if projection is None:
        projection = ccrs.PlateCarree(central_longitude=centre)
    pts = projection.transform_points(grid.crs, xs, ys)
    ok = np.all(np.isfinite(pts[:, :2]), axis=1)
    if not ok.any():
        raise DataError("the field lies outside the chosen map projection.")
    px, py = pts[ok, 0], pts[ok, 1]
    extent = (float(px.min()), float(px.max()), float(py.min()), float(py.max()))
    lo0, lo1, la0, la1 = _lonlat_box(lon, lat, margin=1.0)
    for pole in (90.0, -90.0):  # a frame around a pole: all longitudes up to the pole
        pp = projection.transform_point(0.0, pole, plate)
        if (
            np.all(np.isfinite(pp))
            and extent[0] <= pp[0] <= extent[1]
            and extent[2] <= pp[1] <= extent[3]
        ):
            lo0, lo1 = -180.0, 180.0
            la0, la1 = min(la0, pole), max(la1, pole)
    return MapFrame(projection, extent, (lo0, lo1, la0, la1))
