"""Sentinel-2 Level-1C products (``.SAFE``) as climdl scenes, read lazily on one grid.

:func:`open_sentinel2` reads a Sentinel-2 MSI Level-1C product - the ``.SAFE`` folder or its
``MTD_MSIL1C.xml`` - as a scene Dataset in the layout of :mod:`climdl.clouds.scene`
(:func:`~climdl.clouds.geotiff.assemble_scene`), so that ``climdl segment``, ``climdl plot`` and
the threshold baseline take it like any scene NetCDF or Landsat product.

* **Metadata.** ``MTD_MSIL1C.xml`` gives the product type (a Level-2A product, ``S2MSI2A``, is
  refused: it holds surface, not top-of-atmosphere, reflectance), the processing baseline, the
  ``QUANTIFICATION_VALUE``, the per-band ``RADIO_ADD_OFFSET`` (baseline >= 04.00), the bands'
  central wavelengths and the band files (``IMAGE_FILE``, relative to the product; one that
  would lead outside the product is refused). The granule's ``MTD_TL.xml`` gives the tile's
  CRS, upper-left corner, size at 10/20/60 m and mean sun angles
  (:mod:`climdl.clouds.sentinel2_tile`). Both are parsed without DTDs
  or entities (:mod:`climdl.clouds.safexml`).
* **Values.** L1C digital numbers are TOA reflectance, scaled:
  ``(DN + RADIO_ADD_OFFSET) / QUANTIFICATION_VALUE``; DN 0 is no data (NaN)
  (:class:`~climdl.clouds.calibration.Sentinel2Reflectance`).
* **Bands** B01 .. B12 and B8A, named by their common names (:data:`~climdl.clouds.scene.
  SENTINEL2_BANDS`: coastal, blue, green, red, rededge1-3, nir, nir08, nir09, cirrus, swir16,
  swir22), so a checkpoint's bands are matched by name and wavelength as for any scene. There
  is no thermal band: a checkpoint trained with one (Landsat's ``tir``) cannot be applied.
  Band files missing from the folder are left out of the scene (attribute ``missing_bands``), so
  a partial download serves every checkpoint that does not need them and ``climdl segment``
  names what a checkpoint lacks.
* **One grid, lazily.** The bands come at 10, 20 and 60 m; the scene is on one grid,
  :data:`DEFAULT_RESOLUTION` (20 m) unless asked otherwise: the bands that separate clouds from
  bright ground - SWIR 1.6/2.2 um, the red edge, B8A - are native 20 m, so 20 m invents no
  detail for them, while the 10 m grid would quadruple the pixels (and the CNN's work) with
  replicated SWIR, and 60 m would blur thin-cloud and shadow edges. 10 m bands are averaged over
  2 x 2 blocks (the mean of their valid pixels), 60 m bands replicated over 3 x 3 blocks
  (:class:`~climdl.clouds.raster.BandSource`). Nothing is read when the scene opens: each read
  (a strip of rows) reads just the stored pixels it covers from each JPEG 2000 file. JPEG 2000
  is decoded by whole code tiles, and each read opens the files anew, so strips shorter than the
  files' tiles decode those tiles more than once: on a 22 km tile with 1024-pixel JPEG 2000
  tiles, strips of 256/512/1098 rows (20 m) took 2.6/1.4/1.0x the time of decoding the 13 files
  once (1 CPU core); tall strips (``climdl segment --tile 512`` or more) keep it small.
* **Checks.** A band file whose size or pixel size does not match its nominal resolution on the
  tile (10 m: 10980 x 10980 for a full tile) stops with one sentence, as does a multi-granule
  product (before 2016-12) or a baseline >= 04.00 product without its offsets.
"""

from __future__ import annotations

import logging
import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import xarray as xr

from climdl.clouds.calibration import Sentinel2Reflectance
from climdl.clouds.geotiff import assemble_scene, grid_coords
from climdl.clouds.raster import BandSource
from climdl.clouds.safexml import find, find_all, parse_xml, text_of
from climdl.clouds.scene import SENTINEL2_BANDS, Band
from climdl.clouds.sentinel2_tile import tile_metadata
from climdl.errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_RESOLUTION",
    "SENTINEL2_BAND_IDS",
    "SENTINEL2_RESOLUTIONS",
    "is_sentinel2_path",
    "open_sentinel2",
    "read_product_metadata",
]

SENTINEL2_BAND_IDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)  # fmt: skip
"""Band ids in the product's ``bandId`` order 0..12 (the order of :data:`~climdl.clouds.scene.
SENTINEL2_BANDS`)."""

SENTINEL2_RESOLUTIONS: dict[str, int] = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
    "B08": 10, "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20,
}  # fmt: skip
"""Nominal pixel size (m) of each band."""

DEFAULT_RESOLUTION = 20
"""The scene grid (m) of a product opened without a resolution (see the module docstring)."""

L1C_METADATA = "MTD_MSIL1C.xml"
L2A_METADATA = "MTD_MSIL2A.xml"
_BAND_FILE = re.compile(r"_(B(?:0[1-9]|1[0-2]|8A))$", re.IGNORECASE)


@dataclass(frozen=True)
class ProductMetadata:
    """What ``MTD_MSIL1C.xml`` says that climdl needs.

    Attributes:
        path: the metadata file.
        product_id: the product name (``PRODUCT_URI`` without ``.SAFE``).
        product_type: ``S2MSI1C``.
        baseline: the processing baseline (``05.09`` -> 5.09).
        quantification: ``QUANTIFICATION_VALUE``.
        offsets: ``RADIO_ADD_OFFSET`` per band id (0 for baselines before 04.00).
        wavelengths: central wavelength (um) per band id, where the metadata give it.
        image_files: the band files per band id, inside the product.
        attrs: further scene attributes (spacecraft, sensing time, ...).
    """

    path: Path
    product_id: str
    product_type: str
    baseline: float
    quantification: float
    offsets: dict[str, float]
    wavelengths: dict[str, float]
    image_files: dict[str, Path]
    attrs: dict[str, Any] = field(default_factory=dict)


def is_sentinel2_path(path: str | os.PathLike[str]) -> bool:
    """True for a Sentinel-2 product: a ``MTD_MSIL1C.xml``/``MTD_MSIL2A.xml`` file, or a folder
    holding one or named ``*.SAFE``.

    Args:
        path: a file or folder.

    Returns:
        Whether :func:`open_sentinel2` is the reader for it.
    """
    p = Path(path)
    if p.is_dir():
        return (
            p.suffix.upper() == ".SAFE"
            or (p / L1C_METADATA).is_file()
            or (p / L2A_METADATA).is_file()
        )
    return p.name.upper() in (L1C_METADATA.upper(), L2A_METADATA.upper())


def _needs_l1c(name: object, kind: str) -> DataError:
    return DataError(
        f"{name} is a Sentinel-2 {kind} product (surface reflectance); climdl segment needs "
        "Level-1C top-of-atmosphere reflectance, so download the L1C product (S2MSI1C) of this "
        "scene."
    )


def find_metadata(path: str | os.PathLike[str]) -> Path:
    """The ``MTD_MSIL1C.xml`` of a product given as the file or its ``.SAFE`` folder.

    Args:
        path: the metadata file or the product folder.

    Returns:
        The metadata file.

    Raises:
        DataError: a Level-2A product, or no L1C metadata there.
    """
    p = Path(path)
    if p.is_file():
        if p.name.upper() == L2A_METADATA.upper():
            raise _needs_l1c(p, "Level-2A")
        return p
    if not p.exists():
        raise DataError(f"{p} does not exist.")
    if (p / L2A_METADATA).is_file() or "_MSIL2A_" in p.name.upper():
        raise _needs_l1c(p.name, "Level-2A")
    if not (p / L1C_METADATA).is_file():
        raise DataError(
            f"{p} holds no {L1C_METADATA}; give the Sentinel-2 Level-1C .SAFE folder (unzipped) "
            "or its metadata file."
        )
    return p / L1C_METADATA


def _number(root: ET.Element, name: str, mtd: Path) -> float:
    text = text_of(root, name)
    if text is None:
        raise DataError(f"the Sentinel-2 metadata {mtd} lacks {name}, which climdl needs.")
    try:
        return float(text)
    except ValueError as exc:
        raise DataError(f"{mtd}: {name} = {text!r} is not a number.") from exc


def _inside(root: Path, rel: str, mtd: Path) -> Path:
    """``root / rel`` for a relative path named in the metadata, refused unless it stays inside
    the product (no absolute paths, no ``..``, no symbolic link leading out)."""
    pure = PurePosixPath(rel)
    if not rel or "\\" in rel or "\0" in rel or pure.is_absolute() or ".." in pure.parts:
        raise DataError(
            f"{mtd} names the file {rel!r}, which is not a path inside the product; climdl "
            "reads nothing outside it."
        )
    p = root.joinpath(*pure.parts)
    try:
        p.resolve().relative_to(root.resolve())
    except ValueError:
        raise DataError(
            f"{mtd} names the file {rel!r}, which leads outside the product (a symbolic "
            "link?); climdl reads nothing outside it."
        ) from None
    return p


def _band_id(stem: str) -> str | None:
    m = _BAND_FILE.search(stem)
    return m.group(1).upper() if m else None


def read_product_metadata(mtd: str | os.PathLike[str]) -> ProductMetadata:
    """The product metadata ``MTD_MSIL1C.xml`` (parsed safely) as :class:`ProductMetadata`.

    Args:
        mtd: the metadata file.

    Returns:
        Product type, baseline, quantification, offsets, wavelengths and band files.

    Raises:
        DataError: an L2A or otherwise foreign product, missing keys or malformed numbers, a
            multi-granule product, or a band file named outside the product.
    """
    try:
        return _product_metadata(Path(mtd))
    except ValueError as exc:  # a band id, offset or wavelength that is not a number
        raise DataError(
            f"{mtd} holds a malformed number ({exc}); re-download the product."
        ) from exc


def _product_metadata(path: Path) -> ProductMetadata:
    """:func:`read_product_metadata`, letting a malformed number raise ValueError."""
    root = parse_xml(path, "the Sentinel-2 product metadata")
    ptype = text_of(root, "PRODUCT_TYPE") or ""
    level = text_of(root, "PROCESSING_LEVEL") or ""
    if ptype.upper().endswith("2A") or "2A" in level.upper():
        raise _needs_l1c(path, f"Level-2A ({ptype or level})")
    if ptype and ptype.upper() != "S2MSI1C":
        raise DataError(
            f"{path} is a {ptype} product; climdl reads Sentinel-2 Level-1C products (S2MSI1C)."
        )
    baseline_text = text_of(root, "PROCESSING_BASELINE") or "00.00"
    try:
        baseline = float(baseline_text)
    except ValueError as exc:
        raise DataError(f"{path}: PROCESSING_BASELINE {baseline_text!r} is not a number.") from exc
    quant = _number(root, "QUANTIFICATION_VALUE", path)
    if quant <= 0:
        raise DataError(f"{path}: QUANTIFICATION_VALUE {quant:g} must be positive.")
    offsets: dict[str, float] = {}
    for el in find_all(root, "RADIO_ADD_OFFSET"):
        i = int(el.get("band_id", "-1"))
        if 0 <= i < len(SENTINEL2_BAND_IDS) and el.text:
            offsets[SENTINEL2_BAND_IDS[i]] = float(el.text)
    if baseline >= 4.0 and len(offsets) < len(SENTINEL2_BAND_IDS):
        lacking = [b for b in SENTINEL2_BAND_IDS if b not in offsets]
        raise DataError(
            f"{path} is of processing baseline {baseline_text} but lacks the RADIO_ADD_OFFSET "
            f"of band(s) {', '.join(lacking)}, without which its reflectance is wrong by 0.1."
        )
    offsets = {b: offsets.get(b, 0.0) for b in SENTINEL2_BAND_IDS}
    wavelengths: dict[str, float] = {}
    for el in find_all(root, "Spectral_Information"):
        i = int(el.get("bandId", "-1"))
        central = text_of(el, "CENTRAL")
        if 0 <= i < len(SENTINEL2_BAND_IDS) and central is not None:
            central_el = find(el, "CENTRAL")
            unit = central_el.get("unit", "nm") if central_el is not None else "nm"
            wl = float(central)
            wavelengths[SENTINEL2_BAND_IDS[i]] = wl / 1000.0 if unit == "nm" else wl
    granules = list(find_all(root, "Granule")) or list(find_all(root, "Granules"))
    if len(granules) > 1:
        raise DataError(
            f"{path} is a multi-granule product ({len(granules)} tiles, made before "
            "2016-12); climdl reads single-tile Level-1C products."
        )
    product_root = path.parent
    image_files: dict[str, Path] = {}
    for el in find_all(root, "IMAGE_FILE"):
        rel = (el.text or "").strip()
        bid = _band_id(rel)
        if bid is None:
            continue  # the true-colour image TCI
        p = _inside(product_root, rel, path)
        image_files[bid] = p if p.suffix.lower() == ".jp2" else p.with_name(p.name + ".jp2")
    if not image_files:  # metadata without a file list: the band files of the one granule
        for p in sorted(product_root.glob("GRANULE/*/IMG_DATA/*.jp2")):
            bid = _band_id(p.stem)
            if bid is not None:
                rel = p.relative_to(product_root).as_posix()
                image_files.setdefault(bid, _inside(product_root, rel, path))
    uri = text_of(root, "PRODUCT_URI") or product_root.name
    attrs: dict[str, Any] = {"processing_baseline": baseline_text}
    for key, attr in (
        ("SPACECRAFT_NAME", "spacecraft_id"),
        ("PRODUCT_START_TIME", "sensing_time"),
        ("SENSING_ORBIT_NUMBER", "relative_orbit"),
        ("Cloud_Coverage_Assessment", "esa_cloud_cover"),
    ):
        v = text_of(root, key)
        if v is not None:
            attrs[attr] = v
    return ProductMetadata(
        path=path,
        product_id=re.sub(r"\.SAFE$", "", uri, flags=re.IGNORECASE),
        product_type=ptype or "S2MSI1C",
        baseline=baseline,
        quantification=quant,
        offsets=offsets,
        wavelengths=wavelengths,
        image_files=image_files,
        attrs=attrs,
    )


@dataclass(frozen=True)
class _Grid:
    """The scene grid as :func:`~climdl.clouds.geotiff.grid_coords` reads a rasterio dataset."""

    transform: Any
    width: int
    height: int
    crs: Any


def open_sentinel2(
    path: str | os.PathLike[str],
    *,
    resolution: int = DEFAULT_RESOLUTION,
    latlon: bool | None = None,
) -> xr.Dataset:
    """A Sentinel-2 Level-1C product as a lazy scene on one grid (see the module docstring).

    Args:
        path: the ``.SAFE`` folder or its ``MTD_MSIL1C.xml``.
        resolution: the scene grid in metres: 10, 20 (default) or 60.
        latlon: add 2-D lat/lon (None: when the scene has at most
            :data:`~climdl.clouds.geotiff.LATLON_MAX_PIXELS` pixels).

    Returns:
        The scene: TOA reflectance of the bands present, read window by window.

    Raises:
        DataError: an L2A product, missing metadata, no band files, a band whose size does not
            match its nominal resolution, or a file named outside the product.
    """
    import rasterio

    if resolution not in (10, 20, 60):
        raise DataError(f"the Sentinel-2 grid must be 10, 20 or 60 m, not {resolution}.")
    mtd = find_metadata(path)
    meta = read_product_metadata(mtd)
    present = {b: p for b, p in meta.image_files.items() if p.is_file()}
    missing = [b for b in SENTINEL2_BAND_IDS if b not in present]
    if not present:
        raise DataError(
            f"none of the band files of {meta.product_id} is in {mtd.parent} (GRANULE/*/"
            "IMG_DATA/*_Bnn.jp2); download the whole product."
        )
    if missing:
        log.info("%s: band files missing, left out: %s", meta.product_id, ", ".join(missing))
    tile = tile_metadata(meta.image_files.values())
    sizes = dict(tile.sizes) if tile is not None else {}
    ids = [b for b in SENTINEL2_BAND_IDS if b in present]
    shapes: dict[str, tuple[int, int, Any, Any]] = {}
    try:
        for b in ids:
            with rasterio.open(present[b]) as f:
                shapes[b] = (f.height, f.width, f.transform, f.crs)
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(
            f"a band file of {meta.product_id} is not a readable JPEG 2000 file: "
            f"{str(exc).splitlines()[0]}; re-download the product."
        ) from exc
    # the tile's extent (m): from MTD_TL, else from the finest band present
    if sizes:
        r, (h, w) = min(sizes.items())
        extent = (h * r, w * r)
    else:
        finest = min(ids, key=lambda b: SENTINEL2_RESOLUTIONS[b])
        r = SENTINEL2_RESOLUTIONS[finest]
        extent = (shapes[finest][0] * r, shapes[finest][1] * r)
    for b in ids:
        res = SENTINEL2_RESOLUTIONS[b]
        h, w, t, crs = shapes[b]
        want = (extent[0] // res, extent[1] // res)
        georef = crs is not None and not t.is_identity
        if (h, w) != want or (georef and (abs(t.a) != res or abs(t.e) != res)):
            pix = f", pixels of {abs(t.a):g} m" if georef else ""
            raise DataError(
                f"{present[b].name} ({b}, nominal {res} m) is {h} x {w} pixels{pix}, but a "
                f"{res} m band of this {extent[0] / 1000:g} km tile is {want[0]} x {want[1]}; "
                "the product mixes resolutions or is damaged (re-download it)."
            )
    if extent[0] % resolution or extent[1] % resolution:
        raise DataError(f"the {extent} m tile of {meta.product_id} is not a whole number of "
                        f"{resolution} m pixels.")  # fmt: skip
    height, width = extent[0] // resolution, extent[1] // resolution
    # the grid: corner and CRS from MTD_TL, else from the first band file present
    _, _, t0, crs0 = shapes[ids[0]]
    ulx = tile.ulx if tile is not None and tile.ulx is not None else t0.c
    uly = tile.uly if tile is not None and tile.uly is not None else t0.f
    crs = tile.crs if tile is not None and tile.crs is not None else crs0
    from rasterio.transform import Affine

    if crs is None and t0.is_identity:
        transform = Affine(1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    else:
        transform = Affine(float(resolution), 0.0, ulx, 0.0, -float(resolution), uly)
    coords, gm, px = grid_coords(_Grid(transform, width, height, crs), mtd, latlon)
    sources: list[BandSource] = []
    bands: list[Band] = []
    for b in ids:
        res = SENTINEL2_RESOLUTIONS[b]
        conv = Sentinel2Reflectance(meta.offsets[b], meta.quantification)
        up = res // resolution if res > resolution else 1
        down = resolution // res if res < resolution else 1
        sources.append(BandSource(present[b], 1, conv, up=up, down=down))
        ref = SENTINEL2_BANDS[SENTINEL2_BAND_IDS.index(b)]
        bands.append(Band(ref.name, round(meta.wavelengths.get(b, ref.wavelength), 4), "1"))
    attrs: dict[str, Any] = {
        "title": f"Sentinel-2 scene {meta.product_id}",
        "source": "Sentinel-2 MSI Level-1C product (ESA Copernicus), converted to TOA "
        "reflectance on one grid by climdl.clouds.sentinel2",
        "comment": "TOA reflectance = (DN + RADIO_ADD_OFFSET) / QUANTIFICATION_VALUE, DN 0 -> "
        f"NaN; bands resampled to {resolution} m: finer bands by the mean of their valid "
        "pixels in each block, coarser bands by block replication",
        "scene_id": meta.product_id,
        "sentinel2_band_ids": " ".join(ids),
        "quantification_value": meta.quantification,
        "pixel_size_m": float(px if px is not None else resolution),
        "metadata_file": str(mtd.resolve()),
        **meta.attrs,
    }
    if missing:
        attrs["missing_bands"] = " ".join(missing)
    if tile is not None and tile.sun_zenith is not None and math.isfinite(tile.sun_zenith):
        attrs["sun_zenith_angle"] = tile.sun_zenith
    if tile is not None and tile.sun_azimuth is not None:
        attrs["sun_azimuth_angle"] = tile.sun_azimuth
    return assemble_scene(sources, bands, height, width, coords, gm, attrs)
