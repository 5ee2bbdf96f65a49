"""The grids of ``climdl prepare``: the fine grid of the input, and the coarse grid to fill.

:func:`fine_grid` recognises a regular lat/lon, a projected x/y or a rotated-pole rlat/rlon grid
with a CF grid mapping;
:func:`resolve_coarse_grid` turns a domain name, ``covered[:STEP]``, a file or a Dataset into a
coarse lat/lon grid; :func:`covered_coarse_grid` finds the largest regular grid whose cells lie
wholly inside the fine domain (the ALPS Lambert domain does not cover its predictor box).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyproj
import xarray as xr

from climdl.data._coords import lon_origin
from climdl.data._prepare_io import CoarseGrid, coarse_from_dataset, latlon_grid_dataset
from climdl.data.grids import DOMAINS
from climdl.data.grids import coarse_grid as domain_coarse_grid
from climdl.errors import ConfigError, DataError
from climdl.preprocess import LatLonGrid, ProjectedGrid
from climdl.preprocess.grids import RotatedGrid

__all__ = ["FineGrid", "covered_coarse_grid", "fine_grid", "resolve_coarse_grid"]


FineGrid = LatLonGrid | ProjectedGrid | RotatedGrid
"""The fine grids ``climdl prepare`` upscales conservatively."""


def fine_grid(ds: xr.Dataset) -> tuple[FineGrid, tuple[str, str]]:
    """The fine grid of a reader dataset and its (y, x) dimension names.

    Projected grids (1-D ``projection_x/y_coordinate`` axes and a CF grid-mapping variable,
    e.g. Lambert), rotated-pole grids (1-D ``grid_latitude``/``grid_longitude`` axes and a
    ``rotated_latitude_longitude`` mapping, e.g. EURO-CORDEX EUR-11) and regular lat/lon grids
    (1-D ``lat``/``lon``) are supported.
    """
    axes = {ds[c].attrs.get("standard_name"): c for c in ds.coords if ds[c].ndim == 1}
    if "projection_x_coordinate" in axes and "projection_y_coordinate" in axes:
        ydim = str(ds[axes["projection_y_coordinate"]].dims[0])
        xdim = str(ds[axes["projection_x_coordinate"]].dims[0])
        return ProjectedGrid.from_dataset(ds), (ydim, xdim)
    if "grid_longitude" in axes and "grid_latitude" in axes:
        ydim = str(ds[axes["grid_latitude"]].dims[0])
        xdim = str(ds[axes["grid_longitude"]].dims[0])
        return RotatedGrid.from_dataset(ds), (ydim, xdim)
    if "lat" in ds.dims and "lon" in ds.dims:
        return LatLonGrid.from_centres(ds["lat"].values, ds["lon"].values), ("lat", "lon")
    raise DataError(
        "the fine fields are on none of the grids prepare supports (regular lat/lon, projected "
        "x/y or rotated-pole rlat/rlon with a CF grid mapping); remap them to one of those first."
    )


def resolve_coarse_grid(spec: xr.Dataset | str | os.PathLike[str], fine: xr.Dataset) -> CoarseGrid:
    """The coarse grid named by ``spec`` (see :func:`climdl.data.prepare.prepare`).

    Args:
        spec: a Dataset with 1-D lat/lon (and bounds), a domain name (its predictor grid),
            ``covered[:STEP]`` (:func:`covered_coarse_grid` of ``fine``) or a NetCDF path.
        fine: the fine dataset, for ``covered``.

    Returns:
        The coarse grid with its cell edges.
    """
    if isinstance(spec, xr.Dataset):
        return coarse_from_dataset(spec, "the coarse grid dataset")
    text = os.fspath(spec)
    m = re.fullmatch(r"covered(?::([0-9.]+))?", text.strip(), re.IGNORECASE)
    if m:
        return coarse_from_dataset(covered_coarse_grid(fine, float(m[1] or 2.0)), text)
    if text.upper() in DOMAINS:
        return coarse_from_dataset(domain_coarse_grid(text), f"the {text.upper()} coarse grid")
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"coarse grid {text!r} is neither a domain ({', '.join(DOMAINS)}), 'covered[:STEP]' "
            "nor an existing NetCDF file."
        )
    try:
        with xr.open_dataset(path, decode_times=False) as ds:
            return coarse_from_dataset(ds.load(), str(path))
    except (OSError, ValueError, RuntimeError) as exc:  # netCDF-C: RuntimeError
        raise DataError(f"the coarse grid file {path} cannot be read ({exc}).") from exc


def _max_rectangle(ok: np.ndarray) -> tuple[int, int, int, int, int]:
    """Largest all-True rectangle of a 2-D mask: (area, row0, row1, col0, col1), ends exclusive."""
    best = (0, 0, 0, 0, 0)
    heights = np.zeros(ok.shape[1], dtype=int)
    for r in range(ok.shape[0]):
        heights = np.where(ok[r], heights + 1, 0)
        stack: list[int] = []
        for c in range(ok.shape[1] + 1):
            h = heights[c] if c < ok.shape[1] else 0
            while stack and heights[stack[-1]] >= h:
                top = stack.pop()
                left = stack[-1] + 1 if stack else 0
                area = int(heights[top]) * (c - left)
                if area > best[0]:
                    best = (area, r + 1 - int(heights[top]), r + 1, left, c)
            stack.append(c)
    return best


def _aligned_edges(lo: float, hi: float, offset: float, step: float) -> np.ndarray:
    """Edges ``offset + k * step`` spanning [lo, hi]."""
    k0, k1 = np.floor((lo - offset) / step), np.ceil((hi - offset) / step)
    return offset + step * np.arange(k0, k1 + 1)


def _domain_test(
    grid: FineGrid,
) -> tuple[
    Callable[[np.ndarray, np.ndarray], np.ndarray], tuple[float, float], tuple[float, float]
]:
    """A point-in-domain test ``inside(lon, lat)`` and the domain's lat and lon ranges."""
    if isinstance(grid, LatLonGrid):
        lat_b, lon_b = np.sort(grid.lat_bounds[[0, -1]]), grid.lon_bounds[[0, -1]]
        tol = 1e-9

        def inside_ll(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
            in_lat = (lat >= lat_b[0] - tol) & (lat <= lat_b[1] + tol)
            return in_lat & (lon >= lon_b[0] - tol) & (lon <= lon_b[1] + tol)

        return inside_ll, (lat_b[0], lat_b[1]), (lon_b[0], lon_b[1])
    if isinstance(grid, RotatedGrid):
        ring_lon, ring_lat = grid.outline()
        origin = lon_origin(ring_lon)
        ring_lon = origin + np.mod(ring_lon - origin, 360.0)
        return grid.contains, (ring_lat.min(), ring_lat.max()), (ring_lon.min(), ring_lon.max())
    (x0, x1), (y0, y1) = np.sort(grid.x_bounds[[0, -1]]), np.sort(grid.y_bounds[[0, -1]])
    t = np.linspace(0.0, 1.0, 257)
    ones = np.ones_like(t)
    ring_x = np.concatenate([x0 + t * (x1 - x0), x1 * ones, x1 - t * (x1 - x0), x0 * ones])
    ring_y = np.concatenate([y0 * ones, y0 + t * (y1 - y0), y1 * ones, y1 - t * (y1 - y0)])
    to_geo = pyproj.Transformer.from_crs(grid.crs, grid.crs.geodetic_crs, always_xy=True)
    to_xy = pyproj.Transformer.from_crs(grid.crs.geodetic_crs, grid.crs, always_xy=True)
    ring_lon, ring_lat = (np.asarray(a) for a in to_geo.transform(ring_x, ring_y))
    origin = lon_origin(ring_lon)  # keep domains across the antimeridian contiguous
    ring_lon = origin + np.mod(ring_lon - origin, 360.0)

    def inside_xy(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        x, y = (np.asarray(a) for a in to_xy.transform(lon, lat))
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)

    return inside_xy, (ring_lat.min(), ring_lat.max()), (ring_lon.min(), ring_lon.max())


def covered_coarse_grid(fine: xr.Dataset, step: float = 2.0, samples: int = 16) -> xr.Dataset:
    """The largest regular ``step``-degree lat/lon grid whose cells lie wholly in the fine domain.

    Candidate grids aligned at quarter-steps are tested on ``samples`` points per cell side
    (edges included) against the fine grid's outer cell edges (x/y for projected grids,
    rotated lon/lat for rotated-pole ones, lat/lon for regular ones); the one with most cells
    wins. Returns coordinates with CF
    bounds, like :func:`climdl.data.grids.coarse_grid`.
    """
    grid, _ = fine_grid(fine)
    if step <= 0:
        raise ConfigError(f"the coarse grid step must be positive, got {step}.")
    inside, (lat_lo, lat_hi), (lon_lo, lon_hi) = _domain_test(grid)
    best: tuple[int, np.ndarray, np.ndarray] | None = None
    for oy in np.arange(4) * step / 4:
        for ox in np.arange(4) * step / 4:
            lat_e = _aligned_edges(lat_lo, lat_hi, oy, step)
            lat_e = lat_e[(lat_e >= -90) & (lat_e <= 90)]
            lon_e = _aligned_edges(lon_lo, lon_hi, ox, step)
            if lat_e.size < 2 or lon_e.size < 2:
                continue
            ny, nx = lat_e.size - 1, lon_e.size - 1
            lon_g, lat_g = np.meshgrid(
                lon_e[0] + step / samples * np.arange(nx * samples + 1),
                lat_e[0] + step / samples * np.arange(ny * samples + 1),
            )
            # number of outside samples per cell, edges included, from 2-D cumulative sums
            c = np.pad(
                (~inside(lon_g, lat_g)).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0))
            )
            r0, c0 = np.arange(ny) * samples, np.arange(nx) * samples
            r1, c1 = r0 + samples + 1, c0 + samples + 1
            bad = c[r1][:, c1] - c[r0][:, c1] - c[r1][:, c0] + c[r0][:, c0]
            area, j0, j1, i0, i1 = _max_rectangle(bad == 0)
            if area and (best is None or area > best[0]):
                best = (area, lat_e[j0 : j1 + 1], lon_e[i0 : i1 + 1])
    if best is None:
        raise DataError(
            f"the fine domain is too small to hold a single {step:g}-degree cell; use a smaller step."
        )
    return latlon_grid_dataset(best[1], best[2])
