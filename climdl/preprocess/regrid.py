"""Regridding weights built once on the CPU and applied as sparse matmuls on the device.

:func:`conservative_weights` (fine lat/lon, projected or rotated-pole grid to a coarse lat/lon
grid) and
:func:`bilinear_weights` (regular lat/lon grid to arbitrary points) build a
:class:`RegridWeights` with NumPy/SciPy and cache it in memory; :func:`apply` then remaps a
tensor on its own device, NaN-aware. :func:`coarsen_blocks` covers integer block averaging
without any weights matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from climdl.errors import DataError
from climdl.preprocess.grids import F64, LatLonGrid, ProjectedGrid, RotatedGrid, _digest
from climdl.preprocess.remap import _CACHE, RegridWeights, apply

__all__ = [
    "RegridWeights",
    "apply",
    "bilinear_weights",
    "coarsen_blocks",
    "conservative_weights",
]


EDGE_TOL = 1e-9
"""Degrees below which two cells' overlap is rounding, not area: edges that coincide but were
computed differently (e.g. -4.000000000000001 + 360 vs 356.0) would otherwise give a sliver of
~1e-15 coverage, and without ``min_coverage`` a full-valued destination cell from it."""


def _overlap_lat(dst: F64, src: F64) -> F64:
    """Matrix of sin(lat) overlaps ``[n_dst, n_src]`` (exact area per unit R^2 per radian lon)."""
    d, s = (
        np.sort(np.stack([dst[:-1], dst[1:]], 1), 1),
        np.sort(np.stack([src[:-1], src[1:]], 1), 1),
    )
    lo = np.maximum(d[:, None, 0], s[None, :, 0])
    hi = np.minimum(d[:, None, 1], s[None, :, 1])
    return np.where(hi - lo > EDGE_TOL, np.sin(np.deg2rad(hi)) - np.sin(np.deg2rad(lo)), 0.0)


def _overlap_lon(dst: F64, src: F64) -> F64:
    """Matrix of longitude overlaps in radians, allowing for 360-degree periodicity."""
    total = np.zeros((dst.size - 1, src.size - 1))
    for shift in (-360.0, 0.0, 360.0):
        lo = np.maximum(dst[:-1, None], src[None, :-1] + shift)
        hi = np.minimum(dst[1:, None], src[None, 1:] + shift)
        total += np.deg2rad(np.where(hi - lo > EDGE_TOL, hi - lo, 0.0))
    return total


def _latlon_conservative(src: LatLonGrid, dst: LatLonGrid) -> tuple[sp.csr_matrix, F64]:
    """Exact overlap areas between two rectilinear lat/lon grids (separable in lat and lon)."""
    a_lat, a_lon = (
        _overlap_lat(dst.lat_bounds, src.lat_bounds),
        _overlap_lon(dst.lon_bounds, src.lon_bounds),
    )
    band = np.abs(np.diff(np.sin(np.deg2rad(dst.lat_bounds))))
    cov = np.outer(a_lat.sum(1) / band, a_lon.sum(1) / np.deg2rad(np.diff(dst.lon_bounds)))
    return sp.csr_matrix(sp.kron(sp.csr_matrix(a_lat), sp.csr_matrix(a_lon))), np.clip(
        cov, 0.0, 1.0
    )


def _dst_index(dst: LatLonGrid, lon: F64, lat: F64) -> np.ndarray:
    """Flat destination cell of each point, -1 outside the destination grid."""
    ny, nx = dst.shape
    flip = dst.lat_bounds[0] > dst.lat_bounds[-1]
    lat_b = dst.lat_bounds[::-1] if flip else dst.lat_bounds
    j = np.searchsorted(lat_b, lat, side="right") - 1
    j = np.where(lat == lat_b[-1], ny - 1, j)
    j = ny - 1 - j if flip else j
    lon_n = dst.lon_bounds[0] + np.mod(lon - dst.lon_bounds[0], 360.0)
    i = np.searchsorted(dst.lon_bounds, lon_n, side="right") - 1
    ok = (j >= 0) & (j < ny) & (i >= 0) & (i < nx)
    return np.where(ok, j * nx + i, -1)


SubcellGrid = ProjectedGrid | RotatedGrid
"""Source grids split into sub-cells for conservative weights (curvilinear in true lon/lat)."""


def _subcell_conservative(
    src: SubcellGrid, dst: LatLonGrid, k: int, samples: int
) -> tuple[sp.csr_matrix, F64]:
    """Sub-cell areas assigned to destination cells by centre; coverage by equal-area sampling.

    Works for any source whose cells are curvilinear in true lon/lat (projected, rotated pole):
    each of the k x k sub-cells of a source cell carries its true area on the sphere to the
    destination cell that holds its centre, so the source area is conserved exactly.
    """
    ny, nx = src.shape
    rows, cols, vals = [], [], []
    for block, lon, lat, area in src.iter_subcells(k):
        idx = _dst_index(dst, lon, lat)
        src_idx = np.broadcast_to(
            np.arange(block.start * nx, block.stop * nx).reshape(-1, nx, 1, 1), idx.shape
        )
        keep = idx >= 0
        rows.append(idx[keep])
        cols.append(src_idx[keep])
        vals.append(area[keep])
    m = sp.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(dst.shape[0] * dst.shape[1], ny * nx),
    ).tocsr()
    m.sum_duplicates()
    return m, _sampled_coverage(src, dst, samples)


def _sampled_coverage(
    src: SubcellGrid, dst: LatLonGrid, samples: int, max_points: int = 2**21
) -> F64:
    """Fraction of each destination cell inside the source extent, from samples spread
    uniformly in lon and sin(lat) (equal area on the sphere), a block of rows at a time."""
    f = (np.arange(samples) + 0.5) / samples
    s_b = np.sin(np.deg2rad(dst.lat_bounds))
    lat_s = np.rad2deg(np.arcsin(s_b[:-1, None] + np.diff(s_b)[:, None] * f[None, :]))
    lon_s = dst.lon_bounds[:-1, None] + np.diff(dst.lon_bounds)[:, None] * f[None, :]
    ny, nx = dst.shape
    step = max(1, max_points // (nx * samples * samples))
    out = []
    for j in range(0, ny, step):
        lat_g = np.broadcast_to(
            lat_s[j : j + step, None, :, None], (lat_s[j : j + step].shape[0], nx, samples, samples)
        )
        lon_g = np.broadcast_to(lon_s[None, :, None, :], lat_g.shape)
        out.append(src.contains(lon_g, lat_g).mean(axis=(2, 3)))
    return np.concatenate(out, axis=0)


def conservative_weights(
    src: LatLonGrid | ProjectedGrid | RotatedGrid,
    dst: LatLonGrid,
    k: int = 8,
    min_coverage: float | None = 0.999,
    coverage_samples: int = 64,
    cache: bool = True,
) -> RegridWeights:
    """Area-conservative weights from a fine source grid to a coarse lat/lon grid.

    Lat/lon sources use exact spherical overlap areas, so destination cells that are unions of
    source cells get exact area-weighted block means. Projected and rotated-pole sources are
    split into k x k sub-cells in their own coordinates; each sub-cell's true area (projected
    area over the areal scale factor; for a rotated pole the exact spherical area in rotated
    coordinates) goes to the destination cell containing its centre; the source area is
    conserved exactly (``overlap`` holds the area each destination cell received), while the
    split along destination edges is off by about one sub-cell strip (ALPS 12.5 km to 2
    degrees: <0.25% of a cell's area at k=8, halving as k doubles).
    ``coverage`` comes from ``coverage_samples``^2 equal-area samples per destination cell
    tested against the source extent, so fully inside cells read exactly 1. Raises
    :class:`DataError` when some destination cell is covered less than ``min_coverage``
    (``None`` disables the check).

    Args:
        src: the fine source grid (lat/lon, projected or rotated pole).
        dst: the coarse lat/lon destination grid.
        k: sub-cells per projected or rotated source cell and axis.
        min_coverage: least covered fraction allowed for any destination cell; None: no check.
        coverage_samples: samples per destination cell and axis for its coverage.
        cache: reuse (and keep) the weights computed for the same grids in this process.

    Returns:
        The weights, with the coverage of each destination cell.

    Raises:
        DataError: a destination cell covered less than ``min_coverage``.
    """
    key = _digest("conservative", src.digest(), dst.digest(), k, coverage_samples)
    if cache and key in _CACHE:
        weights = _CACHE[key]
    else:
        if isinstance(src, LatLonGrid):
            m, cov = _latlon_conservative(src, dst)
        else:
            m, cov = _subcell_conservative(src, dst, k, coverage_samples)
        m.eliminate_zeros()
        sums = np.asarray(m.sum(axis=1)).ravel()
        m = sp.diags(np.where(sums > 0, 1.0 / np.where(sums > 0, sums, 1.0), 0.0)) @ m
        # lat/lon overlaps are areas per R^2: scale to m^2 like the sub-cell areas
        r2 = src.radius**2 if isinstance(src, LatLonGrid) else 1.0
        weights = RegridWeights(m, src.shape, dst.shape, cov, "conservative", sums * r2)
        if cache:
            _CACHE[key] = weights
    if min_coverage is not None:
        cov = weights.coverage.numpy()
        bad = cov < min_coverage
        if bad.any():
            raise DataError(
                f"The input grid does not cover the training domain: {int(bad.sum())} of {bad.size} "
                f"target cells ({bad.mean():.1%}) are less than {min_coverage:.1%} covered (lowest {cov.min():.1%})."
            )
    return weights


def bilinear_weights(
    src_lat: ArrayLike,
    src_lon: ArrayLike,
    dst_lat: ArrayLike,
    dst_lon: ArrayLike,
    cache: bool = True,
) -> RegridWeights:
    """Bilinear weights from a rectilinear lat/lon grid (1-D centres) to arbitrary points.

    ``dst_lat`` and ``dst_lon`` are broadcast together and give the destination shape (pass
    ``lat[:, None]`` and ``lon[None, :]`` for a grid). Longitudes wrap when the source is
    global; points outside the source get an empty row (NaN after :func:`apply`).

    Args:
        src_lat: the source grid's latitudes (1-D centres, degrees).
        src_lon: its longitudes (1-D centres, degrees).
        dst_lat: the destination points' latitudes.
        dst_lon: their longitudes (broadcast with ``dst_lat``).
        cache: reuse (and keep) the weights computed for the same grids in this process.

    Returns:
        The weights, with the coverage of each destination point (1 inside, 0 outside).
    """
    slat, slon = np.asarray(src_lat, np.float64), np.asarray(src_lon, np.float64)
    dlat, dlon = np.broadcast_arrays(
        np.asarray(dst_lat, np.float64), np.asarray(dst_lon, np.float64)
    )
    key = _digest("bilinear", slat, slon, dlat, dlon, dlat.shape)
    if cache and key in _CACHE:
        return _CACHE[key]
    if (
        slat.size < 2
        or slon.size < 2
        or np.any(np.diff(slon) <= 0)
        or not (np.all(np.diff(slat) > 0) or np.all(np.diff(slat) < 0))
    ):
        raise DataError(
            "Bilinear regridding needs monotonic 1-D source latitudes and increasing longitudes."
        )
    ny, nx = slat.size, slon.size
    lat_order = np.arange(ny) if slat[0] < slat[-1] else np.arange(ny)[::-1]
    lat_ax = slat[lat_order]
    lon_cols = np.arange(nx)
    lon_ax = slon
    if abs(slon[-1] + (slon[-1] - slon[-2]) - (slon[0] + 360.0)) < 1e-6:  # global: close the circle
        lon_ax, lon_cols = np.append(slon, slon[0] + 360.0), np.append(lon_cols, 0)
    plat, plon = dlat.ravel(), slon[0] + np.mod(dlon.ravel() - slon[0], 360.0)

    def locate(ax: F64, v: F64) -> tuple[np.ndarray, F64, np.ndarray]:
        i = np.clip(np.searchsorted(ax, v, side="right") - 1, 0, ax.size - 2)
        t = (v - ax[i]) / (ax[i + 1] - ax[i])
        tol = 1e-9
        return i, np.clip(t, 0.0, 1.0), (t >= -tol) & (t <= 1 + tol)

    j, ty, ok_y = locate(lat_ax, plat)
    i, tx, ok_x = locate(lon_ax, plon)
    ok = ok_y & ok_x
    n = plat.size
    rows = np.repeat(np.arange(n), 4)
    jj = np.stack([j, j, j + 1, j + 1], 1)
    ii = np.stack([i, i + 1, i, i + 1], 1)
    wv = np.stack([(1 - ty) * (1 - tx), (1 - ty) * tx, ty * (1 - tx), ty * tx], 1) * ok[:, None]
    cols = lat_order[jj] * nx + lon_cols[ii]
    m = sp.coo_matrix((wv.ravel(), (rows, cols.ravel())), shape=(n, ny * nx)).tocsr()
    m.sum_duplicates()
    m.eliminate_zeros()
    weights = RegridWeights(m, (ny, nx), dlat.shape, ok.astype(np.float64), "bilinear")
    if cache:
        _CACHE[key] = weights
    return weights


def coarsen_blocks(
    x: Tensor, factor: int | Sequence[int], area_weights: Tensor | None = None
) -> Tensor:
    """Area-weighted, NaN-aware mean over non-overlapping blocks of ``x[..., H, W]``.

    ``area_weights`` (``[H, W]``, e.g. cell areas) default to equal weights; a block with no
    valid value becomes NaN. H and W must be multiples of the factors.

    Args:
        x: the fields ``[..., H, W]``.
        factor: block size, one for both axes or (rows, columns).
        area_weights: weights ``[H, W]``; None: equal.

    Returns:
        The block means ``[..., H / fy, W / fx]``.

    Raises:
        DataError: H or W is not a multiple of its factor.
    """
    fy, fx = (factor, factor) if isinstance(factor, int) else tuple(factor)
    h, w = x.shape[-2:]
    if h % fy or w % fx:
        raise DataError(
            f"A {h} x {w} grid cannot be split into {fy} x {fx} blocks; crop it to a multiple first."
        )
    wts = (
        torch.ones((h, w), dtype=x.dtype, device=x.device)
        if area_weights is None
        else area_weights.to(x)
    )
    valid = ~torch.isnan(x)
    wv = torch.where(valid, wts, 0.0)
    shape = (*x.shape[:-2], h // fy, fy, w // fx, fx)
    num = (torch.where(valid, x, 0.0) * wv).reshape(shape).sum((-3, -1))
    den = wv.reshape(shape).sum((-3, -1))
    return torch.where(den > 0, num / den, torch.nan)
