"""GeoTIFF bands as climdl scenes: the pixel grid, the scene Dataset, and multi-band GeoTIFFs.

:func:`grid_coords` turns a GeoTIFF's affine transform and CRS into the scene's ``y``/``x``
pixel-centre coordinates and CF grid mapping; :func:`assemble_scene` puts lazily read bands
(:class:`~climdl.clouds.raster.RasterBands`) and that grid into a scene Dataset in the layout of
:mod:`climdl.clouds.scene` (``image`` ``(band, y, x)`` float32 with the ``band``, ``wavelength``
and ``band_units`` coordinates, projected ``y``/``x`` and a grid-mapping variable ``crs``), so
that ``climdl segment`` and the threshold baseline take it like any scene NetCDF.
:func:`open_geotiff` reads a multi-band GeoTIFF whose bands are named that way;
:func:`climdl.clouds.landsat.open_landsat` reads a Landsat product with the same two functions.

2-D ``lat``/``lon`` (float32) are auxiliary coordinates, computed with pyproj window by window
when read, for scenes up to :data:`LATLON_MAX_PIXELS`; larger scenes (a full Landsat scene) go
without them, since the grid mapping and ``x``/``y`` define them and written out they would
outweigh the mask a hundredfold.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from xarray.core import indexing

from climdl.clouds.calibration import Scaled
from climdl.clouds.mtl import is_landsat_path
from climdl.clouds.raster import BandSource, LatLonArray, LatLonGrid, RasterBands
from climdl.clouds.scene import BAND_DIM, IMAGE_VAR, LANDSAT_BANDS, Band, make_scene
from climdl.errors import DataError
from climdl.io.provenance import CF_CONVENTIONS

LATLON_MAX_PIXELS = 4096 * 4096
"""Scenes with more pixels than this get no 2-D lat/lon coordinates (see the module docstring)."""

CRS_VAR = "crs"
"""Name of the scene's grid-mapping variable."""


def grid_coords(
    src: Any, path: Path, latlon: bool | None
) -> tuple[dict[str, Any], dict[str, Any], float | None]:
    """The pixel grid of an open rasterio dataset ``src`` (read from ``path``, named in errors).

    ``latlon``: add lazy 2-D ``lat``/``lon`` (None: when the scene has at most
    :data:`LATLON_MAX_PIXELS` pixels). Returns the spatial coordinates (pixel centres from the
    affine transform; ``xr.Dataset`` coordinate specs), the grid-mapping variable's attributes
    (empty without a CRS) and the pixel size in metres (None unless projected); a rotated or
    sheared grid is a :class:`~climdl.errors.DataError`."""
    from pyproj import CRS

    t = src.transform
    if t.b != 0 or t.d != 0:
        raise DataError(
            f"{path} has a rotated or sheared pixel grid; warp it to a north-up grid first "
            "(gdalwarp)."
        )
    x = t.c + (np.arange(src.width) + 0.5) * t.a
    y = t.f + (np.arange(src.height) + 0.5) * t.e
    coords: dict[str, Any]
    if src.crs is None:
        coords = {
            "y": ("y", y, {"long_name": "row coordinate (no CRS in the GeoTIFF)", "axis": "Y"}),
            "x": ("x", x, {"long_name": "column coordinate (no CRS in the GeoTIFF)", "axis": "X"}),
        }
        return coords, {}, None
    crs = CRS.from_wkt(src.crs.to_wkt())
    cf = crs.to_cf()
    gm = {k: v for k, v in cf.items() if k != "crs_wkt"} | {
        "crs_wkt": cf.get("crs_wkt", crs.to_wkt())
    }
    if crs.is_geographic:
        coords = {
            "y": ("y", y, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}),
            "x": ("x", x, {"standard_name": "longitude", "units": "degrees_east", "axis": "X"}),
        }
        return coords, gm, None
    unit = crs.axis_info[0].unit_name if crs.axis_info else "metre"
    factor = float(crs.axis_info[0].unit_conversion_factor) if crs.axis_info else 1.0
    units = "m" if unit in ("metre", "meter") else unit
    coords = {
        "y": (
            "y",
            y,
            {
                "standard_name": "projection_y_coordinate",
                "units": units,
                "long_name": "y coordinate of projection",
                "axis": "Y",
            },
        ),
        "x": (
            "x",
            x,
            {
                "standard_name": "projection_x_coordinate",
                "units": units,
                "long_name": "x coordinate of projection",
                "axis": "X",
            },
        ),
    }
    if latlon is None:
        latlon = src.width * src.height <= LATLON_MAX_PIXELS
    if latlon:
        grid = LatLonGrid(crs.to_wkt(), x, y)
        for name, which, attrs in (
            ("lat", 0, {"standard_name": "latitude", "units": "degrees_north"}),
            ("lon", 1, {"standard_name": "longitude", "units": "degrees_east"}),
        ):
            lazy = indexing.LazilyIndexedArray(LatLonArray(grid, which))
            coords[name] = xr.Variable(("y", "x"), lazy, attrs)
    return coords, gm, abs(float(t.a)) * factor


def assemble_scene(
    sources: Sequence[BandSource],
    bands: Sequence[Band],
    height: int,
    width: int,
    coords: Mapping[str, Any],
    grid_mapping: Mapping[str, Any],
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """The scene Dataset: the lazy image, the band coordinates of :func:`make_scene`, the grid.

    ``sources``: where each band lives (one per entry of ``bands``, in order); ``height`` x
    ``width``: the image size; ``coords``, ``grid_mapping``: from :func:`grid_coords`;
    ``attrs``: the global attributes. Returns the scene, read lazily."""
    image = xr.Variable(
        (BAND_DIM, "y", "x"),
        indexing.LazilyIndexedArray(RasterBands(sources, height, width)),
        {
            "long_name": "top-of-atmosphere reflectance (reflective bands) or brightness "
            "temperature (thermal bands); see band_units",
        },
    )
    # the band coordinates exactly as make_scene builds them (an empty image costs nothing)
    band_coords = make_scene(np.zeros((len(bands), 0, 0), np.float32), bands, {}).coords
    ds = xr.Dataset({IMAGE_VAR: image}, coords=dict(coords), attrs=dict(attrs))
    ds = ds.assign_coords({k: band_coords[k] for k in (BAND_DIM, "wavelength", "band_units")})
    if grid_mapping:
        ds[CRS_VAR] = xr.DataArray(np.int32(0), attrs=dict(grid_mapping))
        ds[IMAGE_VAR].attrs["grid_mapping"] = CRS_VAR
    ds.attrs.setdefault("Conventions", CF_CONVENTIONS)
    return ds


def _tag_number(value: str | None) -> float | None:
    """A GDAL metadata tag (always text) as a float, None if empty or not a number."""
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _geotiff_band(f: Any, i: int, path: Path) -> Band | None:
    """The band ``i`` (1-based) from its description, ``wavelength`` tags and units; None if
    nothing names it."""
    known = {b.name: b for b in LANDSAT_BANDS}
    tags = {k.lower(): v for k, v in f.tags(i).items()}
    imagery = f.tags(i, ns="IMAGERY")
    desc = (f.descriptions[i - 1] or "").strip()
    wl = _tag_number(tags.get("wavelength"))
    if wl is not None and tags.get("wavelength_units", "um").lower() in ("nm", "nanometers"):
        wl /= 1000.0
    if wl is None:
        wl = _tag_number(imagery.get("CENTRAL_WAVELENGTH_UM"))
    if not desc and wl is None:
        return None
    if not desc:
        assert wl is not None
        close = [b for b in LANDSAT_BANDS if abs(b.wavelength - wl) <= 0.05 * b.wavelength]
        desc = close[0].name if close else f"band{i}"
    ref = known.get(desc)
    if wl is None:
        if ref is None:
            raise DataError(
                f"{path} band {i} is named {desc!r}, which is none of climdl's bands "
                f"({', '.join(known)}), and has no 'wavelength' tag (um) to say what it is."
            )
        wl = ref.wavelength
    unit = str(tags.get("band_units") or tags.get("units") or (f.units[i - 1] or "")).strip()
    if unit in ("", "reflectance"):
        unit = ref.units if ref is not None else ("K" if wl > 3.0 else "1")
    if unit.lower() in ("kelvin", "k"):
        unit = "K"
    return Band(desc, wl, unit)


def open_geotiff(path: str | os.PathLike[str], *, latlon: bool | None = None) -> xr.Dataset:
    """A multi-band GeoTIFF whose bands are named (GDAL band descriptions such as ``blue``,
    ``green``, ..., or ``wavelength`` tags in um) as a lazy scene.

    Values are taken as TOA reflectance (reflective bands) and brightness temperature in K
    (thermal bands), after the GDAL scale/offset; the nodata value becomes NaN. Dataset-level
    tags (``sun_zenith_angle``, ...) become attributes. ``latlon`` as in :func:`~climdl.clouds.landsat.open_landsat`.
    """
    import rasterio

    p = Path(path)
    if not p.is_file():
        raise DataError(f"scene {p} does not exist.")
    try:
        f = rasterio.open(p)
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"{p} is not a readable GeoTIFF: {str(exc).splitlines()[0]}") from exc
    with f:
        bands = [_geotiff_band(f, i, p) for i in range(1, f.count + 1)]
        unnamed = [i + 1 for i, b in enumerate(bands) if b is None]
        if unnamed and re.search(r"_B\d+$", p.stem, re.IGNORECASE) and is_landsat_path(p.parent):
            raise DataError(
                f"{p.name} is one band of a Landsat product; pass its *_MTL.txt file or its "
                "folder instead."
            )
        if unnamed:
            raise DataError(
                f"{p}: band(s) {', '.join(map(str, unnamed))} of {f.count} have no name; set "
                f"each band's GDAL description to its name ({', '.join(b.name for b in LANDSAT_BANDS)}), "
                f"e.g. rio edit-info --bidx 1 --description blue {p.name}."
            )
        coords, gm, px = grid_coords(f, p, latlon)
        sources = [
            BandSource(p, i, Scaled(f.scales[i - 1], f.offsets[i - 1], f.nodatavals[i - 1]))
            for i in range(1, f.count + 1)
        ]
        attrs: dict[str, Any] = {
            "title": f"GeoTIFF scene {p.stem}",
            "source": f"multi-band GeoTIFF {p.name}, values as stored (after GDAL scale/offset)",
        }
        for k, v in f.tags().items():
            if k in ("AREA_OR_POINT",) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
                continue
            num = _tag_number(v)
            attrs[k] = num if num is not None else v
        if px is not None:
            attrs.setdefault("pixel_size_m", px)
        height, width = f.height, f.width
    named = [b for b in bands if b is not None]
    return assemble_scene(sources, named, height, width, coords, gm, attrs)
