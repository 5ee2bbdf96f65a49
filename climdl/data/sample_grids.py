"""The sample generator's grids beyond the benchmark's: widened ALPS target grids for domain
parallelism and the coarse lat/lon boxes that cover them.

``size`` 256 or 512 widens the ALPS domain (:func:`wide_target_grid`): the same 12.5 km EUR-11
Lambert projection and spacing, centred where the benchmark grid is, 3200 km or 6400 km a side.
Its coarse predictor grid (:func:`covering_coarse_grid`) is the 2-degree lat/lon box that covers
the Lambert domain with one cell to spare (18 x 29 cells for 256, 32 x 67 for 512). Kept apart
from :mod:`climdl.data.synthetic`, whose physics is evaluated on whichever grid these give.
"""

from __future__ import annotations

import re

import numpy as np
import pyproj
import xarray as xr

from climdl.data.grids import coarse_grid, domain_spec, grid_mapping_name, target_grid
from climdl.errors import ConfigError

SAMPLE_SIZES = (128, 256, 512)
BENCHMARK_SIZE = 128
#: domains whose (projected) target grid can be widened; SA's regular grid cannot yet
WIDE_DOMAINS = ("ALPS",)
#: noise lattice cells per side on the benchmark grid (~47 km each); scaled with the grid


def sample_domain(domain: str, size: int | None = None) -> tuple[str, int]:
    """The benchmark domain and the grid size of a sample domain.

    Args:
        domain: ``ALPS``/``SA``, or a sized sample's folder name such as ``ALPS512``.
        size: cells per side of the target grid (None: the name's size, else 128).

    Returns:
        ``(domain, size)``, e.g. ``("ALPS", 512)``.

    Raises:
        ConfigError: an unknown domain, an unsupported size, or a name and size that disagree.
    """
    m = re.fullmatch(r"([A-Za-z]+?)(\d+)?", domain.strip())
    base, named = (m[1], int(m[2])) if m and m[2] else (domain, None)
    spec = domain_spec(base)
    if named is not None and size is not None and named != size:
        raise ConfigError(f"the domain {domain!r} has size {named}, not --size {size}.")
    size = size if size is not None else (named if named is not None else BENCHMARK_SIZE)
    if size not in SAMPLE_SIZES:
        raise ConfigError(
            f"--size {size} is not available; choose one of {', '.join(map(str, SAMPLE_SIZES))}."
        )
    if size != BENCHMARK_SIZE and spec.name not in WIDE_DOMAINS:
        raise ConfigError(
            f"--size {size} is available for {', '.join(WIDE_DOMAINS)} only; {spec.name} has "
            f"its benchmark grid of {BENCHMARK_SIZE} x {BENCHMARK_SIZE} cells."
        )
    return spec.name, size


def sample_domain_name(domain: str, size: int | None = None) -> str:
    """Folder and label name of a sample domain: ``ALPS`` at 128 cells, ``ALPS512`` at 512."""
    base, size = sample_domain(domain, size)
    return base if size == BENCHMARK_SIZE else f"{base}{size}"


def wide_target_grid(domain: str, size: int) -> xr.Dataset:
    """A ``size`` x ``size`` target grid: the benchmark grid's projection and spacing, widened.

    Same Lambert projection (grid-mapping variable and attributes), same 12.5 km spacing and the
    same centre as the benchmark's 128 x 128 grid; x/y in km, 2-D lat/lon from the projection
    (pyproj reproduces the benchmark's own lat/lon to 1e-8 degrees). At ``size`` 128 it is the
    benchmark grid itself.

    Args:
        domain: a domain with a projected grid (``ALPS``).
        size: cells per side.

    Returns:
        Coordinates (x, y, lat, lon) and the grid-mapping variable, like :func:`target_grid`.
    """
    base, size = sample_domain(domain, size)
    ref = target_grid(base)
    if size == BENCHMARK_SIZE:
        return ref
    gm = grid_mapping_name(ref)
    ydim, xdim = ref.lat.dims
    step = float(ref[xdim][1] - ref[xdim][0])
    offsets = step * (np.arange(size) - (size - 1) / 2)
    x = float(ref[xdim].mean()) + offsets
    y = float(ref[ydim].mean()) + offsets
    crs = pyproj.CRS.from_cf(ref[gm].attrs)
    to_geo = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    scale = 1000.0 if ref[xdim].attrs.get("units") == "km" else 1.0
    xx, yy = np.meshgrid(x * scale, y * scale)
    lon, lat = (np.asarray(a, dtype=np.float64) for a in to_geo.transform(xx, yy))
    ds = xr.Dataset(
        coords={
            xdim: (xdim, x, dict(ref[xdim].attrs)),
            ydim: (ydim, y, dict(ref[ydim].attrs)),
            "lon": ((ydim, xdim), lon, dict(ref.lon.attrs)),
            "lat": ((ydim, xdim), lat, dict(ref.lat.attrs)),
        }
    )
    ds[gm] = ref[gm].copy()
    ds.attrs = {
        "title": f"climdl widened {base} target grid ({size} x {size}, {step:g} km spacing)",
        "source": f"the projection and spacing of the {base} benchmark grid, widened by climdl",
    }
    return ds


def covering_coarse_grid(target: xr.Dataset, step: float = 2.0, margin: int = 1) -> xr.Dataset:
    """The regular ``step``-degree lat/lon predictor grid that covers a target grid.

    Cell edges are multiples of ``step`` (like the benchmark's ALPS predictor box), spanning the
    target's lat/lon range plus ``margin`` cells on every side; coordinates and CF bounds as
    :func:`climdl.data.grids.coarse_grid` writes them. The grid is rectangular: a Lambert domain
    fans out in longitude towards the pole (the Doury UNet's entry convolution takes any H x W).

    Args:
        target: a target grid with 1-D or 2-D lat/lon.
        step: cell size in degrees.
        margin: spare cells around the target's range.

    Returns:
        The coarse grid (ascending lat and lon).
    """
    lat, lon = np.asarray(target.lat.values), np.asarray(target.lon.values)
    ref = coarse_grid("ALPS")  # attributes only

    def edges(lo: float, hi: float) -> np.ndarray:
        k0 = int(np.floor(lo / step)) - margin
        k1 = int(np.ceil(hi / step)) + margin
        return step * np.arange(k0, k1 + 1)

    lat_e = np.clip(edges(float(lat.min()), float(lat.max())), -90.0, 90.0)
    lat_e = np.unique(lat_e)
    lon_e = edges(float(lon.min()), float(lon.max()))
    ds = xr.Dataset(
        coords={
            "lat": ("lat", 0.5 * (lat_e[1:] + lat_e[:-1]), dict(ref.lat.attrs)),
            "lon": ("lon", 0.5 * (lon_e[1:] + lon_e[:-1]), dict(ref.lon.attrs)),
        }
    )
    ds["lat_bnds"] = (("lat", "bnds"), np.stack([lat_e[:-1], lat_e[1:]], axis=1))
    ds["lon_bnds"] = (("lon", "bnds"), np.stack([lon_e[:-1], lon_e[1:]], axis=1))
    return ds
