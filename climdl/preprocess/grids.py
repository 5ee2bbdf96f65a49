"""Grid descriptions for building regridding weights: cell bounds and true cell areas.

Two kinds of grid cover what climdl reads: rectilinear latitude/longitude grids with 1-D cell
bounds (predictors, the SA target) and projected grids with 1-D x/y bounds in a pyproj CRS (the
ALPS Lambert conformal target). Areas are on the CRS's own sphere or ellipsoid: for lat/lon
cells exactly, for projected cells by sub-cell quadrature (projected area divided by the
map's areal scale factor at each sub-cell centre).
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

    def cell_areas(self, k: int = 8) -> F64:
        """True cell areas (m^2) on the CRS's sphere/ellipsoid, by k x k sub-cell quadrature."""
        return np.concatenate([a.sum(axis=(2, 3)) for _, _, _, a in self.iter_subcells(k)], axis=0)

    def digest(self) -> str:
        """A hash of the bounds and CRS (names cached regridding weights)."""
        return _digest("projected", self.x_bounds, self.y_bounds, self.crs.to_wkt())
