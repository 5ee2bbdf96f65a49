"""A Sentinel-2 granule's tile metadata (``MTD_TL.xml``): CRS, corner, sizes, sun angles.

:func:`climdl.clouds.sentinel2.open_sentinel2` places the product's bands on the tile's grid
with it; the XML is parsed without DTDs or entities (:mod:`climdl.clouds.safexml`), and a
malformed number or an unknown CRS code is one sentence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from climdl.clouds.safexml import find, find_all, parse_xml, text_of
from climdl.errors import DataError

__all__ = ["TileMetadata", "read_tile_metadata", "tile_metadata"]


@dataclass(frozen=True)
class TileMetadata:
    """What the granule's ``MTD_TL.xml`` says: CRS, corner, sizes per resolution, sun."""

    crs: Any
    ulx: float | None
    uly: float | None
    sizes: dict[int, tuple[int, int]]
    sun_zenith: float | None
    sun_azimuth: float | None


def tile_metadata(band_files: Iterable[Path]) -> TileMetadata | None:
    """The ``MTD_TL.xml`` of the granule holding the band files (``GRANULE/<g>/IMG_DATA/``),
    if it is there."""
    any_file = next(iter(band_files), None)
    if any_file is None:
        return None
    tl = any_file.parent.parent / "MTD_TL.xml"
    if not tl.is_file():
        return None
    try:
        return read_tile_metadata(tl)
    except ValueError as exc:
        raise DataError(f"{tl} holds a malformed number ({exc}); re-download the product.") from exc


def read_tile_metadata(tl: Path) -> TileMetadata:
    """The tile metadata ``tl``, letting a malformed number raise ValueError."""
    from rasterio.crs import CRS

    root = parse_xml(tl, "the Sentinel-2 tile metadata")
    code = text_of(root, "HORIZONTAL_CS_CODE")
    crs = None
    if code:
        try:
            crs = CRS.from_string(code)
        except Exception as exc:  # rasterio's CRSError
            raise DataError(f"{tl}: HORIZONTAL_CS_CODE {code!r} is not a known CRS.") from exc
    sizes: dict[int, tuple[int, int]] = {}
    for el in find_all(root, "Size"):
        rows, cols = text_of(el, "NROWS"), text_of(el, "NCOLS")
        if rows and cols and el.get("resolution"):
            sizes[int(el.get("resolution", "0"))] = (int(rows), int(cols))
    ulx = uly = None
    for el in find_all(root, "Geoposition"):
        x, y = text_of(el, "ULX"), text_of(el, "ULY")
        if x is not None and y is not None:
            ulx, uly = float(x), float(y)
            break
    zen = azi = None
    sun = find(root, "Mean_Sun_Angle")
    if sun is not None:
        z, a = text_of(sun, "ZENITH_ANGLE"), text_of(sun, "AZIMUTH_ANGLE")
        zen = float(z) if z is not None else None
        azi = float(a) if a is not None else None
    return TileMetadata(crs, ulx, uly, sizes, zen, azi)
