"""Grid descriptions for building regridding weights: cell bounds and true cell areas.

Three kinds of grid cover what climdl reads: rectilinear latitude/longitude grids with 1-D cell
bounds (predictors, the SA target), projected grids with 1-D x/y bounds in a pyproj CRS (the
ALPS Lambert conformal target) and rotated-pole grids with 1-D rlon/rlat bounds (EURO-CORDEX
EUR-11 and most CORDEX domains). Areas are on the CRS's own sphere or ellipsoid: for lat/lon
and rotated cells exactly (a rotation of the sphere preserves areas), for projected cells by
sub-cell quadrature (projected area divided by the map's areal scale factor at each sub-cell
centre). Projected and rotated grids share the sub-cell interface (``iter_subcells``,
``contains``) that conservative regridding to a lat/lon grid uses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyproj
from numpy.typing import ArrayLike, NDArray

from climdl.errors import DataError
from climdl.preprocess.length_units import metres_per_unit

EARTH_RADIUS = 6371229.0
"""Sphere radius (m) used by the CORDEX grids and assumed for lat/lon areas."""

F64 = NDArray[np.float64]


def bounds_from_centres(centres: ArrayLike) -> F64:
    """Cell edges of a monotonic 1-D axis: midpoints inside, half a spacing beyond each end.

    Args:
        centres: the cell centres (1-D, monotonic).

    Returns:
        The ``n + 1`` cell edges, float64.
    """
    c = np.asarray(centres, dtype=np.float64)
    if c.ndim != 1 or c.size < 2:
        raise DataError("A grid axis needs at least two coordinate values to derive cell bounds.")
    d = np.diff(c)
    if not (np.all(d > 0) or np.all(d < 0)):
        raise DataError("A grid axis is not strictly monotonic, so its cell bounds are undefined.")
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - 0.5 * d[0]], mid, [c[-1] + 0.5 * d[-1]]])


def _check_bounds(b: ArrayLike, name: str) -> F64:
    a = np.asarray(b, dtype=np.float64)
    d = np.diff(a)
    if a.ndim != 1 or a.size < 2 or not (np.all(d > 0) or np.all(d < 0)):
        raise DataError(
            f"The {name} cell bounds must be a strictly monotonic 1-D array of at least two edges."
        )
    return a


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(
            np.ascontiguousarray(p).tobytes() if isinstance(p, np.ndarray) else repr(p).encode()
        )
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class LatLonGrid:
    """Rectilinear lat/lon grid given by 1-D cell bounds in degrees (lat may run either way).

    Attributes:
        lat_bounds: cell edges in latitude (degrees), ``n_lat + 1`` values.
        lon_bounds: cell edges in longitude (degrees, ascending), ``n_lon + 1`` values.
        radius: the sphere's radius (m) for cell areas.
    """

    lat_bounds: F64
    lon_bounds: F64
    radius: float = EARTH_RADIUS

    def __post_init__(self) -> None:
        object.__setattr__(self, "lat_bounds", _check_bounds(self.lat_bounds, "latitude"))
        object.__setattr__(self, "lon_bounds", _check_bounds(self.lon_bounds, "longitude"))
        lat, lon = self.lat_bounds, self.lon_bounds
        if np.any(np.abs(lat) > 90.0 + 1e-9):
            raise DataError("Latitude bounds must lie within -90 and 90 degrees.")
        if lon[-1] < lon[0] or lon[-1] - lon[0] > 360.0 + 1e-9:
            raise DataError("Longitude bounds must increase and span at most 360 degrees.")

    @classmethod
    def from_centres(
        cls, lat: ArrayLike, lon: ArrayLike, radius: float = EARTH_RADIUS
    ) -> LatLonGrid:
        """Grid whose bounds are the midpoints between the given cell centres (clipped at the poles)."""
        return cls(np.clip(bounds_from_centres(lat), -90.0, 90.0), bounds_from_centres(lon), radius)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of cells."""
        return (self.lat_bounds.size - 1, self.lon_bounds.size - 1)

    @property
    def lat(self) -> F64:
        """Cell-centre latitudes (degrees)."""
        return 0.5 * (self.lat_bounds[1:] + self.lat_bounds[:-1])

    @property
    def lon(self) -> F64:
        """Cell-centre longitudes (degrees)."""
        return 0.5 * (self.lon_bounds[1:] + self.lon_bounds[:-1])

    def cell_areas(self) -> F64:
        """Exact cell areas on the sphere (m^2): R^2 * dlon * (sin lat2 - sin lat1)."""
        s = np.abs(np.diff(np.sin(np.deg2rad(self.lat_bounds))))
        return self.radius**2 * np.outer(s, np.deg2rad(np.diff(self.lon_bounds)))

    def digest(self) -> str:
        """A hash of the bounds and radius (names cached regridding weights)."""
        return _digest("latlon", self.lat_bounds, self.lon_bounds, self.radius)


@dataclass(frozen=True, eq=False)
class ProjectedGrid:
    """Grid rectilinear in a projection: 1-D x/y cell bounds in metres and the pyproj CRS.

    Attributes:
        x_bounds: cell edges along x (m), ``nx + 1`` values.
        y_bounds: cell edges along y (m), ``ny + 1`` values.
        crs: the projection.
    """

    x_bounds: F64
    y_bounds: F64
    crs: pyproj.CRS

    def __post_init__(self) -> None:
        object.__setattr__(self, "x_bounds", _check_bounds(self.x_bounds, "x"))
        object.__setattr__(self, "y_bounds", _check_bounds(self.y_bounds, "y"))
        if not self.crs.is_projected:
            raise DataError("A projected grid needs a projected coordinate reference system.")

    @classmethod
    def from_centres(
        cls, x: ArrayLike, y: ArrayLike, crs: pyproj.CRS, units: str = "m"
    ) -> ProjectedGrid:
        """Grid from cell-centre coordinates in ``units`` (``m`` or ``km``)."""
        f = metres_per_unit(units)
        if f is None:
            raise DataError(
                f"Projected coordinates in {units!r} are not supported; use metres or kilometres."
            )
        return cls(bounds_from_centres(x) * f, bounds_from_centres(y) * f, crs)

    @classmethod
    def from_cf(
        cls, x: ArrayLike, y: ArrayLike, grid_mapping: Mapping[str, Any], units: str = "m"
    ) -> ProjectedGrid:
        """Grid from centres and the attributes of a CF grid-mapping variable."""
        try:
            crs = pyproj.CRS.from_cf(dict(grid_mapping))
        except pyproj.exceptions.CRSError as err:
            raise DataError(
                f"The grid mapping {dict(grid_mapping)} cannot be read as a projection ({err})."
            ) from err
        return cls.from_centres(x, y, crs, units)

    @classmethod
    def from_dataset(cls, ds: Any) -> ProjectedGrid:
        """Grid of an ``xr.Dataset`` with projection_x/y_coordinate axes and a grid-mapping variable."""
        axes = {ds[c].attrs.get("standard_name"): ds[c] for c in ds.coords}
        mapping = [v for v in ds.variables if "grid_mapping_name" in ds[v].attrs]
        if (
            "projection_x_coordinate" not in axes
            or "projection_y_coordinate" not in axes
            or not mapping
        ):
            raise DataError(
                "The dataset has no projection_x/y_coordinate axes with a grid-mapping variable."
            )
        x, y = axes["projection_x_coordinate"], axes["projection_y_coordinate"]
        return cls.from_cf(x.values, y.values, ds[mapping[0]].attrs, x.attrs.get("units", "m"))

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of cells."""
        return (self.y_bounds.size - 1, self.x_bounds.size - 1)

    def subcells(self, k: int, rows: slice | None = None) -> tuple[F64, F64, F64]:
        """Centre lon, lat (degrees) and true area (m^2) of k x k sub-cells of each cell.

        Arrays have shape ``[ny, nx, k, k]`` (``ny`` limited to ``rows``). The area is the
        projected sub-cell area divided by the areal scale factor at its centre, which is
        second-order accurate in the sub-cell size.
        """
        f = (np.arange(k) + 0.5) / k
        rows = rows if rows is not None else slice(None)
        dy = np.diff(self.y_bounds)[rows]
        dx = np.diff(self.x_bounds)
        yb = self.y_bounds[:-1][rows]
        ys = yb[:, None, None, None] + dy[:, None, None, None] * f[None, None, :, None]
        xs = (
            self.x_bounds[:-1][None, :, None, None]
            + dx[None, :, None, None] * f[None, None, None, :]
        )
        ys, xs = np.broadcast_arrays(ys, xs)
        to_geo = pyproj.Transformer.from_crs(self.crs, self.crs.geodetic_crs, always_xy=True)
        lon, lat = to_geo.transform(xs, ys)
        proj_area = np.abs(dy[:, None, None, None] * dx[None, :, None, None]) / k**2
        scale = pyproj.Proj(self.crs).get_factors(lon, lat).areal_scale
        return np.asarray(lon), np.asarray(lat), proj_area / np.asarray(scale)

    def iter_subcells(
        self, k: int, max_points: int = 2**21
    ) -> Iterator[tuple[slice, F64, F64, F64]]:
        """:meth:`subcells` over blocks of rows, to bound memory on large grids."""
        ny, nx = self.shape
        step = max(1, max_points // (nx * k * k))
        for start in range(0, ny, step):
            rows = slice(start, min(ny, start + step))
            yield (rows, *self.subcells(k, rows))

    def contains(self, lon: ArrayLike, lat: ArrayLike) -> NDArray[np.bool_]:
        """Whether true (lon, lat) points lie inside the grid's outer cell edges."""
        to_xy = pyproj.Transformer.from_crs(self.crs.geodetic_crs, self.crs, always_xy=True)
        x, y = (np.asarray(a) for a in to_xy.transform(lon, lat))
        (x0, x1), (y0, y1) = np.sort(self.x_bounds[[0, -1]]), np.sort(self.y_bounds[[0, -1]])
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)

    def cell_areas(self, k: int = 8) -> F64:
        """True cell areas (m^2) on the CRS's sphere/ellipsoid, by k x k sub-cell quadrature."""
        return np.concatenate([a.sum(axis=(2, 3)) for _, _, _, a in self.iter_subcells(k)], axis=0)

    def digest(self) -> str:
        """A hash of the bounds and CRS (names cached regridding weights)."""
        return _digest("projected", self.x_bounds, self.y_bounds, self.crs.to_wkt())


# ----------------------------------------------------------------------------- rotated pole
def _unit(lon: ArrayLike, lat: ArrayLike) -> F64:
    """Unit vectors ``[..., 3]`` of points given in degrees."""
    lo, la = np.broadcast_arrays(
        np.deg2rad(np.asarray(lon, np.float64)), np.deg2rad(np.asarray(lat, np.float64))
    )
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def _angles(v: F64) -> tuple[F64, F64]:
    """Longitude (-180..180) and latitude (degrees) of vectors ``[..., 3]``."""
    lat = np.rad2deg(np.arcsin(np.clip(v[..., 2], -1.0, 1.0)))
    return np.rad2deg(np.arctan2(v[..., 1], v[..., 0])), lat


def _rotation(pole_lat: float, pole_lon: float, offset: float) -> F64:
    """The 3 x 3 matrix taking rotated unit vectors to geographic ones (CF rotated pole).

    Its columns are the geographic positions of the rotated frame's axes: the point
    (rlon = ``offset``, rlat = 0), the point 90 degrees east of it, and the rotated north pole
    (``pole_lat``, ``pole_lon``), after a turn by ``offset`` about the rotated polar axis. The
    formulas are CF's (and cartopy's ``RotatedPole``).
    """
    sp, cp = np.sin(np.deg2rad(pole_lat)), np.cos(np.deg2rad(pole_lat))

    def geo(x_deg: float) -> F64:  # a point on the rotated equator, rotated longitude x
        x = np.deg2rad(x_deg)
        lat = np.rad2deg(np.arcsin(cp * np.cos(x)))
        lon = pole_lon - 180.0 + np.rad2deg(np.arctan2(np.sin(x), sp * np.cos(x)))
        return _unit(lon, lat)

    return np.stack([geo(0.0), geo(90.0), _unit(pole_lon, pole_lat)], axis=-1) @ np.array(
        [
            [np.cos(np.deg2rad(offset)), np.sin(np.deg2rad(offset)), 0.0],
            [-np.sin(np.deg2rad(offset)), np.cos(np.deg2rad(offset)), 0.0],
            [0.0, 0.0, 1.0],
        ]
    )


def rotated_to_geographic(
    rlon: ArrayLike,
    rlat: ArrayLike,
    pole_lat: float,
    pole_lon: float,
    north_pole_grid_longitude: float = 0.0,
) -> tuple[F64, F64]:
    """True longitude (-180..180) and latitude of rotated-pole coordinates (degrees).

    Args:
        rlon: grid longitudes (CF ``grid_longitude``), broadcast with ``rlat``.
        rlat: grid latitudes (CF ``grid_latitude``).
        pole_lat: ``grid_north_pole_latitude`` of the CF mapping.
        pole_lon: ``grid_north_pole_longitude``.
        north_pole_grid_longitude: the mapping's ``north_pole_grid_longitude`` (usually 0).

    Returns:
        ``(lon, lat)`` arrays, exact up to rounding (a rotation of the sphere).
    """
    r = _rotation(pole_lat, pole_lon, north_pole_grid_longitude)
    return _angles(_unit(rlon, rlat) @ r.T)


def geographic_to_rotated(
    lon: ArrayLike,
    lat: ArrayLike,
    pole_lat: float,
    pole_lon: float,
    north_pole_grid_longitude: float = 0.0,
) -> tuple[F64, F64]:
    """Rotated longitude (-180..180) and latitude of true coordinates: the inverse of
    :func:`rotated_to_geographic`."""
    r = _rotation(pole_lat, pole_lon, north_pole_grid_longitude)
    return _angles(_unit(lon, lat) @ r)


@dataclass(frozen=True, eq=False)
class RotatedGrid:
    """Grid regular in rotated-pole coordinates: 1-D rlon/rlat cell bounds and the pole.

    A rotated-pole grid (EURO-CORDEX EUR-11, ...) is a lat/lon grid on a sphere turned so that
    its equator crosses the domain. The rotation preserves areas and shapes, so a cell's area
    is the exact spherical formula R^2 * dlon * d(sin lat) in rotated coordinates, and every
    sub-cell of it is again such a rectangle; only the true lon/lat of its points need the
    rotation (:func:`rotated_to_geographic`).

    Attributes:
        rlon_bounds: cell edges in grid longitude (degrees, increasing), ``nx + 1`` values.
        rlat_bounds: cell edges in grid latitude (degrees, either way), ``ny + 1`` values.
        pole_lat: the CF ``grid_north_pole_latitude``.
        pole_lon: the CF ``grid_north_pole_longitude``.
        north_pole_grid_longitude: the CF ``north_pole_grid_longitude`` (usually 0).
        radius: the sphere's radius (m).
    """

    rlon_bounds: F64
    rlat_bounds: F64
    pole_lat: float
    pole_lon: float
    north_pole_grid_longitude: float = 0.0
    radius: float = EARTH_RADIUS

    def __post_init__(self) -> None:
        object.__setattr__(self, "rlon_bounds", _check_bounds(self.rlon_bounds, "grid longitude"))
        object.__setattr__(self, "rlat_bounds", _check_bounds(self.rlat_bounds, "grid latitude"))
        if self.rlon_bounds[-1] < self.rlon_bounds[0] or np.ptp(self.rlon_bounds) > 360.0:
            raise DataError("Grid longitude bounds must increase and span at most 360 degrees.")
        if np.any(np.abs(self.rlat_bounds) > 90.0 + 1e-9):
            raise DataError("Grid latitude bounds must lie within -90 and 90 degrees.")
        if not -90.0 <= self.pole_lat <= 90.0:
            raise DataError(f"The rotated pole's latitude {self.pole_lat} is not within -90..90.")

    @classmethod
    def from_cf(
        cls,
        rlon: ArrayLike,
        rlat: ArrayLike,
        grid_mapping: Mapping[str, Any],
        radius: float | None = None,
    ) -> RotatedGrid:
        """Grid from 1-D cell centres and a CF ``rotated_latitude_longitude`` mapping's attributes
        (its ``earth_radius`` when given, else ``radius`` or the CORDEX sphere)."""
        gm = dict(grid_mapping)
        if gm.get("grid_mapping_name") != "rotated_latitude_longitude":
            raise DataError(
                f"The grid mapping {gm.get('grid_mapping_name')!r} is not a rotated pole "
                "(rotated_latitude_longitude)."
            )
        try:
            pole_lat = float(gm["grid_north_pole_latitude"])
            pole_lon = float(gm["grid_north_pole_longitude"])
            offset = float(gm.get("north_pole_grid_longitude", 0.0))
            r = float(gm.get("earth_radius", radius if radius is not None else EARTH_RADIUS))
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(
                f"The rotated-pole grid mapping lacks a usable pole ({err}); it needs "
                "grid_north_pole_latitude and grid_north_pole_longitude."
            ) from None
        return cls(bounds_from_centres(rlon), bounds_from_centres(rlat), pole_lat, pole_lon,
                   offset, r)  # fmt: skip

    @classmethod
    def from_dataset(cls, ds: Any) -> RotatedGrid:
        """Grid of an ``xr.Dataset`` with 1-D grid_longitude/grid_latitude axes and a
        ``rotated_latitude_longitude`` grid-mapping variable."""
        axes = {ds[c].attrs.get("standard_name"): ds[c] for c in ds.coords if ds[c].ndim == 1}
        mapping = [
            v
            for v in ds.variables
            if ds[v].attrs.get("grid_mapping_name") == "rotated_latitude_longitude"
        ]
        if "grid_longitude" not in axes or "grid_latitude" not in axes or not mapping:
            raise DataError(
                "The dataset has no grid_longitude/grid_latitude axes with a "
                "rotated_latitude_longitude grid mapping."
            )
        return cls.from_cf(
            axes["grid_longitude"].values, axes["grid_latitude"].values, ds[mapping[0]].attrs
        )

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of cells."""
        return (self.rlat_bounds.size - 1, self.rlon_bounds.size - 1)

    @property
    def pole(self) -> tuple[float, float, float]:
        """(pole latitude, pole longitude, north_pole_grid_longitude)."""
        return (self.pole_lat, self.pole_lon, self.north_pole_grid_longitude)

    def to_geographic(self, rlon: ArrayLike, rlat: ArrayLike) -> tuple[F64, F64]:
        """True (lon, lat) of rotated coordinates on this grid's pole."""
        return rotated_to_geographic(rlon, rlat, *self.pole)

    def to_rotated(self, lon: ArrayLike, lat: ArrayLike) -> tuple[F64, F64]:
        """Rotated (rlon, rlat) of true coordinates, rlon continued across the grid's range."""
        rlon, rlat = geographic_to_rotated(lon, lat, *self.pole)
        west = float(self.rlon_bounds[0])
        return west + np.mod(rlon - west, 360.0), rlat

    def contains(self, lon: ArrayLike, lat: ArrayLike) -> NDArray[np.bool_]:
        """Whether true (lon, lat) points lie inside the grid's outer cell edges."""
        rlon, rlat = self.to_rotated(lon, lat)
        lo, hi = np.sort(self.rlat_bounds[[0, -1]])
        return (rlon <= self.rlon_bounds[-1]) & (rlat >= lo) & (rlat <= hi)

    def subcells(self, k: int, rows: slice | None = None) -> tuple[F64, F64, F64]:
        """Centre lon, lat (degrees) and exact area (m^2) of k x k sub-cells of each cell.

        Arrays have shape ``[ny, nx, k, k]`` (``ny`` limited to ``rows``). Each sub-cell is a
        rectangle in rotated lon/lat, so its area R^2 * dlon * d(sin lat) is exact.
        """
        f = np.arange(k + 1) / k
        rows = rows if rows is not None else slice(None)
        yb = self.rlat_bounds[:-1][rows, None] + np.diff(self.rlat_bounds)[rows, None] * f
        xb = self.rlon_bounds[:-1, None] + np.diff(self.rlon_bounds)[:, None] * f
        s = np.abs(np.diff(np.sin(np.deg2rad(yb)), axis=1))  # [ny, k]
        dx = np.deg2rad(np.diff(xb, axis=1))  # [nx, k]
        area = self.radius**2 * s[:, None, :, None] * dx[None, :, None, :]
        yc, xc = 0.5 * (yb[:, 1:] + yb[:, :-1]), 0.5 * (xb[:, 1:] + xb[:, :-1])
        ys, xs = np.broadcast_arrays(yc[:, None, :, None], xc[None, :, None, :])
        lon, lat = self.to_geographic(xs, ys)
        return lon, lat, area

    def iter_subcells(
        self, k: int, max_points: int = 2**21
    ) -> Iterator[tuple[slice, F64, F64, F64]]:
        """:meth:`subcells` over blocks of rows, to bound memory on large grids."""
        ny, nx = self.shape
        step = max(1, max_points // (nx * k * k))
        for start in range(0, ny, step):
            rows = slice(start, min(ny, start + step))
            yield (rows, *self.subcells(k, rows))

    def cell_areas(self) -> F64:
        """Exact cell areas on the sphere (m^2): R^2 * drlon * (sin rlat2 - sin rlat1)."""
        s = np.abs(np.diff(np.sin(np.deg2rad(self.rlat_bounds))))
        return self.radius**2 * np.outer(s, np.deg2rad(np.diff(self.rlon_bounds)))

    def outline(self, n: int = 257) -> tuple[F64, F64]:
        """True (lon, lat) of ``n`` points per side along the grid's outer cell edges."""
        (x0, x1), (y0, y1) = self.rlon_bounds[[0, -1]], self.rlat_bounds[[0, -1]]
        t = np.linspace(0.0, 1.0, n)
        ones = np.ones_like(t)
        xs = np.concatenate([x0 + t * (x1 - x0), x1 * ones, x1 - t * (x1 - x0), x0 * ones])
        ys = np.concatenate([y0 * ones, y0 + t * (y1 - y0), y1 * ones, y1 - t * (y1 - y0)])
        return self.to_geographic(xs, ys)

    def digest(self) -> str:
        """A hash of the bounds, pole and radius (names cached regridding weights)."""
        return _digest("rotated", self.rlon_bounds, self.rlat_bounds, self.pole, self.radius)
