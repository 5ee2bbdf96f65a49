"""Landsat 8/9 Collection 2 Level-1 products as climdl scenes, read lazily.

:func:`open_landsat` reads a Landsat 8/9 OLI/TIRS Collection 2 Level-1 product (one GeoTIFF of
digital numbers per band plus the ``*_MTL.txt`` or ``*_MTL.json`` metadata,
:mod:`climdl.clouds.mtl`) as a scene Dataset in the layout of :mod:`climdl.clouds.scene`
(:func:`~climdl.clouds.geotiff.assemble_scene`), so that ``climdl segment`` and the threshold
baseline take it like any scene NetCDF. Bands blue..swir22 (B2-B7) become top-of-atmosphere reflectance and tir (B10) brightness
temperature (:mod:`climdl.clouds.calibration`, after the USGS Landsat 8 Data Users Handbook).

Nothing is read when a scene is opened: the image is an xarray lazily indexed array whose reads
(a strip of rows, say) open the GeoTIFFs, read just that window and convert it
(:class:`~climdl.clouds.raster.RasterBands`), so memory follows the window, never the
~7800 x 7700 x 7 scene.
"""

from __future__ import annotations

import math
import os
from typing import Any

import xarray as xr

from climdl.clouds.calibration import BrightnessTemperature, Reflectance
from climdl.clouds.geotiff import assemble_scene, grid_coords
from climdl.clouds.mtl import find_mtl, mtl_number, read_mtl
from climdl.clouds.raster import BandSource, Converter
from climdl.clouds.scene import LANDSAT_BANDS
from climdl.errors import DataError

LANDSAT_BAND_NUMBERS: dict[str, int] = {
    "blue": 2,
    "green": 3,
    "red": 4,
    "nir": 5,
    "swir16": 6,
    "swir22": 7,
    "tir": 10,
}
"""OLI/TIRS band number of each of :data:`~climdl.clouds.scene.LANDSAT_BANDS`."""


def open_landsat(path: str | os.PathLike[str], *, latlon: bool | None = None) -> xr.Dataset:
    """A Landsat 8/9 Collection 2 Level-1 product as a lazy scene.

    ``path`` is the ``*_MTL.txt`` or ``*_MTL.json`` file, or the folder holding it; the band
    files are those the MTL names (``FILE_NAME_BAND_n``, else ``<product>_Bn.TIF``) beside it.
    Bands blue..swir22 (B2-B7) become TOA reflectance, tir (B10) brightness temperature (K).
    Level-2 products (``PROCESSING_LEVEL`` L2SP/L2SR) are refused: they hold no DNs to convert.
    ``latlon``: add 2-D lat/lon (None: when the scene has at most
    :data:`~climdl.clouds.geotiff.LATLON_MAX_PIXELS` pixels).
    """
    import rasterio

    mtl_path = find_mtl(path)
    mtl = read_mtl(mtl_path)
    sensor = str(mtl.get("SENSOR_ID", "OLI_TIRS"))
    if sensor not in ("OLI_TIRS", "OLI", "TIRS"):
        raise DataError(
            f"{mtl_path} is a {mtl.get('SPACECRAFT_ID', 'Landsat')} {sensor} product; climdl "
            "reads Landsat 8/9 OLI/TIRS Collection 2 Level-1 products only."
        )
    level = str(mtl.get("PROCESSING_LEVEL", "L1")).strip()
    if not level.upper().startswith("L1"):
        kind = "a Level-2 product" if level.upper().startswith("L2") else "not a Level-1 product"
        raise DataError(
            f"{mtl_path.name} is {kind} ({level}); climdl segment needs Level-1 "
            "top-of-atmosphere data (L1TP/L1GT/L1GS), so download the Collection 2 Level-1 "
            "product of this scene."
        )
    elevation = mtl_number(mtl, "SUN_ELEVATION", mtl_path)
    azimuth = mtl_number(mtl, "SUN_AZIMUTH", mtl_path)
    if elevation <= 0:
        raise DataError(
            f"{mtl_path}: the sun is below the horizon (SUN_ELEVATION {elevation:g}), so the "
            "scene has no top-of-atmosphere reflectance."
        )
    sin_elev = math.sin(math.radians(elevation))
    name = mtl_path.name
    prefix = name[: name.upper().rfind("_MTL.")]
    product = str(mtl.get("LANDSAT_PRODUCT_ID", prefix))
    sources: list[BandSource] = []
    for band in LANDSAT_BANDS:
        n = LANDSAT_BAND_NUMBERS[band.name]
        key = f"FILE_NAME_BAND_{n}"
        fname = str(mtl.get(key, f"{prefix}_B{n}.TIF"))
        fpath = mtl_path.parent / fname
        if not fpath.is_file():
            raise DataError(
                f"the {band.name} band file {fname} (Landsat band {n}) of {mtl_path.name} is "
                f"missing from {mtl_path.parent}."
            )
        if band.thermal:
            conv: Converter = BrightnessTemperature(
                mtl_number(mtl, f"RADIANCE_MULT_BAND_{n}", mtl_path),
                mtl_number(mtl, f"RADIANCE_ADD_BAND_{n}", mtl_path),
                mtl_number(mtl, f"K1_CONSTANT_BAND_{n}", mtl_path),
                mtl_number(mtl, f"K2_CONSTANT_BAND_{n}", mtl_path),
            )
        else:
            conv = Reflectance(
                mtl_number(mtl, f"REFLECTANCE_MULT_BAND_{n}", mtl_path),
                mtl_number(mtl, f"REFLECTANCE_ADD_BAND_{n}", mtl_path),
                sin_elev,
            )
        sources.append(BandSource(fpath, 1, conv))
    try:
        with rasterio.open(sources[0].path) as f:
            coords, gm, px = grid_coords(f, sources[0].path, latlon)
            height, width, transform = f.height, f.width, f.transform
        for s in sources[1:]:
            with rasterio.open(s.path) as f:
                if (f.height, f.width, f.transform) != (height, width, transform):
                    raise DataError(
                        f"the band files of {mtl_path.name} are not on one grid: "
                        f"{s.path.name} is {f.height} x {f.width} at {tuple(f.transform)[:6]}, "
                        f"{sources[0].path.name} {height} x {width} at {tuple(transform)[:6]}."
                    )
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"a band file of {mtl_path.name} is not a readable GeoTIFF: {exc}") from exc
    attrs: dict[str, Any] = {
        "title": f"Landsat scene {product}",
        "source": "Landsat 8/9 OLI/TIRS Collection 2 Level-1 product (USGS), converted to TOA "
        "reflectance and brightness temperature by climdl.clouds.landsat",
        "comment": "TOA reflectance = (REFLECTANCE_MULT * DN + REFLECTANCE_ADD) / "
        "sin(SUN_ELEVATION); brightness temperature = K2 / ln(K1 / (RADIANCE_MULT * DN + "
        "RADIANCE_ADD) + 1); DN 0 -> NaN (Landsat 8 Data Users Handbook, section 5)",
        "scene_id": product,
        "sun_zenith_angle": round(90.0 - elevation, 6),
        "sun_azimuth_angle": azimuth,
        "pixel_size_m": px if px is not None else float(mtl.get("GRID_CELL_SIZE_REFLECTIVE", 30.0)),
        "metadata_file": str(mtl_path.resolve()),
    }
    for key, attr in (
        ("LANDSAT_SCENE_ID", "landsat_scene_id"),
        ("SPACECRAFT_ID", "spacecraft_id"),
        ("SENSOR_ID", "sensor_id"),
        ("DATE_ACQUIRED", "date_acquired"),
        ("SCENE_CENTER_TIME", "scene_center_time"),
        ("CLOUD_COVER", "usgs_cloud_cover"),
        ("EARTH_SUN_DISTANCE", "earth_sun_distance"),
    ):
        if key in mtl:
            v = mtl[key]
            attrs[attr] = v if isinstance(v, int | float) else str(v)
    return assemble_scene(sources, LANDSAT_BANDS, height, width, coords, gm, attrs)
