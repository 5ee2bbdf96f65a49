"""Opening a scene from any file climdl reads: scene NetCDF, Landsat or Sentinel-2 product, GeoTIFF.

:func:`open_scene` picks the reader by name (a Landsat MTL file or its folder:
:mod:`climdl.clouds.landsat`; a Sentinel-2 ``.SAFE`` folder or its ``MTD_MSIL1C.xml``:
:mod:`climdl.clouds.sentinel2`; a ``.tif``/``.tiff``: :mod:`climdl.clouds.geotiff`; else a scene
NetCDF in the layout of :mod:`climdl.clouds.scene`) and returns the scene lazily;
:func:`load_scene` reads a whole (small) scene into memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import xarray as xr

from climdl.clouds.geotiff import open_geotiff
from climdl.clouds.landsat import open_landsat
from climdl.clouds.mtl import is_landsat_path
from climdl.clouds.scene import image_name
from climdl.clouds.sentinel2 import is_sentinel2_path, open_sentinel2
from climdl.errors import DataError

__all__ = ["load_scene", "open_scene"]


def open_scene(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a scene lazily (nothing is read yet); clear errors for missing or foreign files.

    By name: a Landsat 8/9 Collection 2 Level-1 ``*_MTL.txt``/``*_MTL.json`` file or a folder
    holding one (:func:`climdl.clouds.landsat.open_landsat`), a Sentinel-2 Level-1C ``.SAFE``
    folder or its ``MTD_MSIL1C.xml`` (:func:`climdl.clouds.sentinel2.open_sentinel2`, on its
    20 m grid), a ``.tif``/``.tiff`` multi-band GeoTIFF with named bands
    (:func:`climdl.clouds.geotiff.open_geotiff`), else a scene NetCDF.

    Args:
        path: a scene NetCDF, a Landsat MTL file or its folder, a Sentinel-2 L1C product (the
            ``.SAFE`` folder or its ``MTD_MSIL1C.xml``), or a multi-band GeoTIFF.

    Returns:
        The scene: band variables with names, wavelengths and units, and the mask when labelled.

    Raises:
        DataError: a missing, unreadable or foreign file.
    """
    p = Path(path)
    if is_sentinel2_path(p):
        return open_sentinel2(p)
    if p.suffix.lower() == ".jp2":
        raise DataError(
            f"{p.name} is one band file of a Sentinel-2 product; pass its .SAFE folder or "
            "MTD_MSIL1C.xml instead."
        )
    if p.name.upper().endswith(".SAFE.ZIP"):
        raise DataError(
            f"{p.name} is a zipped Sentinel-2 product; unzip it and pass the .SAFE folder."
        )
    if p.is_dir() or p.name.upper().endswith(("_MTL.TXT", "_MTL.JSON")):
        if p.is_dir() and not is_landsat_path(p):
            raise DataError(
                f"{p} is a folder without a Landsat *_MTL.txt or *_MTL.json file or a Sentinel-2 "
                "MTD_MSIL1C.xml; give a scene NetCDF, a Landsat MTL file (or its folder), a "
                "Sentinel-2 .SAFE folder or a GeoTIFF."
            )
        return open_landsat(p)
    if p.suffix.lower() in (".tif", ".tiff"):
        return open_geotiff(p)
    if not p.is_file():
        if p.exists():
            raise DataError(f"scene {p} is not a regular file; give a NetCDF file.")
        raise DataError(f"scene {p} does not exist.")
    try:
        ds = xr.open_dataset(p)
    except (OSError, ValueError, RuntimeError) as exc:  # netCDF-C reports damage as RuntimeError
        raise DataError(
            f"{p} is not a readable NetCDF scene (truncated or corrupt?); download or write it "
            "again."
        ) from exc
    try:
        image_name(ds, p)
    except DataError:
        ds.close()
        raise
    return ds


def load_scene(path: str | os.PathLike[str]) -> xr.Dataset:
    """Read a whole scene into memory and close the file.

    For scenes that fit in memory (notebooks, plots). Closing matters: with the netCDF-C
    library a file that stays open while it is opened and closed again elsewhere (by
    ``climdl segment``, say) can fail to reopen later in the same process with "NetCDF: HDF
    error". Use :func:`open_scene` for lazy, windowed reads of large scenes.

    Args:
        path: anything :func:`open_scene` opens.

    Returns:
        The scene, in memory.

    Raises:
        DataError: a missing, unreadable or foreign file.
    """
    with open_scene(path) as ds:
        return ds.load()
