"""Readers for public labelled cloud datasets: 38-Cloud (Mohajerani & Saeedi 2019) and
CloudSEN12 (Aybar et al. 2022).

38-Cloud cuts 38 Landsat 8 scenes into 384 x 384 patches, one single-band TIFF per band and
patch, in per-band folders::

    38-Cloud_training/
      train_red/red_<patch>.TIF   train_green/green_<patch>.TIF   train_blue/blue_<patch>.TIF
      train_nir/nir_<patch>.TIF   train_gt/gt_<patch>.TIF         training_patches_38-Cloud.csv
    38-Cloud_test/
      test_red/ ... test_nir/                                      test_patches_38-Cloud.csv

``<patch>`` is ``patch_<n>_<row>_by_<col>_<Landsat scene id>``; the CSV lists the patch names
(column ``name``). Bands are 16-bit Landsat Level-1 digital numbers, turned here into TOA
reflectance without sun-angle correction (the Landsat 8 rescaling ``2e-5 * DN - 0.1``; DN 0 is
the no-data margin), and the ground truth (0 clear, anything else cloud; thin clouds count as
cloud) becomes a ``mask`` with the two classes ``clear cloud`` and no-data where the bands are.
Each patch becomes a scene (:mod:`climdl.clouds.scene`); :func:`stitch_38cloud_scene` puts a
Landsat scene's patches back together.

CloudSEN12 (Aybar et al. 2022, Scientific Data 9:782; CloudSEN12+ 2024) cuts Sentinel-2 scenes
into image patches of 509 x 509 pixels at 10 m (padded to 512 x 512 in CloudSEN12+, zeros on the
left and bottom), with hand-made labels. climdl reads the GeoTIFF release, one folder per patch
(at any depth below the root; the ROI and product folders of the release)::

    <root>/<ROI>/<Sentinel-2 product id>/S2L1C.tif              13 bands B1..B12 (B8A after B8)
    <root>/<ROI>/<Sentinel-2 product id>/labels/manual_hq.tif   high-quality label, uint8

The bands are L1C digital numbers scaled by 1e-4 (reflectance = DN / 10000, as exported from
Earth Engine's harmonised collection; DN 0 is the padding, no data), matched to
:data:`~climdl.clouds.scene.SENTINEL2_BANDS` by the GeoTIFF's band descriptions (``B1``/``B01``
.. ``B8A``) where it has them, else by position. The label's classes 0 clear, 1 thick cloud,
2 thin cloud, 3 cloud shadow map one to one onto climdl's ``clear cloud thin_cloud
cloud_shadow`` (:data:`CLOUDSEN12_CLASSES`, the first four of
:data:`~climdl.clouds.scene.CLASSES`); any other value, and the padding, is no label
(:data:`~climdl.clouds.scene.NODATA`). Patches without ``manual_hq.tif`` (the scribble and
unlabelled parts) are skipped.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from climdl.clouds.scene import (
    BINARY_CLASSES,
    CLASSES,
    NODATA,
    SENTINEL2_BANDS,
    Band,
    make_scene,
)
from climdl.errors import DataError

Split = Literal["train", "test"]
CLOUD38_BANDS: tuple[Band, ...] = (
    Band("blue", 0.482),
    Band("green", 0.561),
    Band("red", 0.655),
    Band("nir", 0.865),
)
_FOLDERS = {"blue": "blue", "green": "green", "red": "red", "nir": "nir"}
_PATCH = re.compile(r"^patch_(?P<n>\d+)_(?P<row>\d+)_by_(?P<col>\d+)_(?P<scene>.+)$")
PATCH_SIZE = 384


def _split_dir(root: Path, split: Split) -> Path:
    """The folder holding ``<split>_red`` etc.: ``root`` itself or its ``38-Cloud_<...>``."""
    for cand in (root, root / ("38-Cloud_training" if split == "train" else "38-Cloud_test")):
        if (cand / f"{split}_red").is_dir():
            return cand
    raise DataError(
        f"{root} is not a 38-Cloud folder: no {split}_red/ in it or in "
        f"{root.name}/38-Cloud_{'training' if split == 'train' else 'test'}/."
    )


def list_38cloud_patches(root: str | Path, split: Split = "train") -> list[str]:
    """Patch names of a 38-Cloud split: from its CSV when present, else from ``<split>_red/``."""
    base = _split_dir(Path(root), split)
    csv_path = base / (
        "training_patches_38-Cloud.csv" if split == "train" else "test_patches_38-Cloud.csv"
    )
    if csv_path.is_file():
        with csv_path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        names = [r["name"].strip() for r in rows if r.get("name")]
    else:
        names = sorted(
            p.name[len("red_") :].rsplit(".", 1)[0]
            for p in (base / f"{split}_red").glob("red_*.[Tt][Ii][Ff]")
        )
    if not names:
        raise DataError(f"no 38-Cloud patches found in {base}.")
    return names


def _read_tif(path: Path) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        for alt in (path.with_suffix(".tif"), path.with_suffix(".TIF")):
            if alt.is_file():
                path = alt
                break
        else:
            raise DataError(f"38-Cloud file {path} is missing.")
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except OSError as exc:
        raise DataError(f"cannot read the TIFF {path}: {exc}") from exc


def read_38cloud_patch(root: str | Path, name: str, split: Split = "train") -> xr.Dataset:
    """One 38-Cloud patch as a scene (``mask`` only where the split has ground truth)."""
    base = _split_dir(Path(root), split)
    dns = [
        _read_tif(base / f"{split}_{_FOLDERS[b.name]}" / f"{b.name}_{name}.TIF")
        for b in CLOUD38_BANDS
    ]
    shapes = {d.shape for d in dns}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise DataError(f"38-Cloud patch {name}: the band TIFFs differ in shape {sorted(shapes)}.")
    dn = np.stack(dns).astype(np.float32)
    nodata = (dn == 0).all(axis=0)
    image = 2e-5 * dn - 0.1
    image[:, nodata] = np.nan
    gt_path = base / f"{split}_gt" / f"gt_{name}.TIF"
    mask = None
    if gt_path.is_file() or gt_path.with_suffix(".tif").is_file():
        gt = _read_tif(gt_path)
        if gt.shape != dn.shape[1:]:
            raise DataError(
                f"38-Cloud patch {name}: ground truth {gt.shape} and bands "
                f"{dn.shape[1:]} differ in shape."
            )
        mask = (gt > 0).astype(np.uint8)
        mask[nodata] = NODATA
    h, w = dn.shape[1:]
    m = _PATCH.match(name)
    attrs = {
        "title": f"38-Cloud patch {name}",
        "source": "38-Cloud (Mohajerani & Saeedi 2019), "
        "Landsat 8 OLI; TOA reflectance without sun-angle correction (2e-5 DN - 0.1)",
        "patch": name,
    }
    if m:
        attrs["landsat_scene_id"] = m["scene"]
    coords = {
        "y": ("y", np.arange(h, dtype=np.float64)),
        "x": ("x", np.arange(w, dtype=np.float64)),
    }
    return make_scene(image, CLOUD38_BANDS, coords, mask=mask, classes=BINARY_CLASSES, attrs=attrs)


def stitch_38cloud_scene(root: str | Path, scene_id: str, split: Split = "train") -> xr.Dataset:
    """All patches of one Landsat scene put back on their ``row`` x ``col`` grid."""
    names = [n for n in list_38cloud_patches(root, split) if n.endswith("_" + scene_id)]
    if not names:
        raise DataError(f"no 38-Cloud patches of scene {scene_id} in {root}.")
    parts = {}
    for n in names:
        m = _PATCH.match(n)
        if m is None:
            raise DataError(f"38-Cloud patch name {n!r} is not patch_<n>_<row>_by_<col>_<scene>.")
        parts[(int(m["row"]), int(m["col"]))] = read_38cloud_patch(root, n, split)
    nr = max(r for r, _ in parts)
    nc = max(c for _, c in parts)
    first = next(iter(parts.values()))
    p = first.sizes["y"]
    image = np.full((len(CLOUD38_BANDS), nr * p, nc * p), np.nan, dtype=np.float32)
    labelled = "mask" in first
    mask = np.full((nr * p, nc * p), NODATA, dtype=np.uint8) if labelled else None
    for (r, c), ds in parts.items():
        win = (slice((r - 1) * p, r * p), slice((c - 1) * p, c * p))
        image[:, win[0], win[1]] = ds["image"].values
        if mask is not None:
            mask[win] = ds["mask"].values
    coords = {
        "y": ("y", np.arange(nr * p, dtype=np.float64)),
        "x": ("x", np.arange(nc * p, dtype=np.float64)),
    }
    attrs = dict(first.attrs) | {"title": f"38-Cloud scene {scene_id}"}
    attrs.pop("patch", None)
    return make_scene(image, CLOUD38_BANDS, coords, mask=mask, classes=BINARY_CLASSES, attrs=attrs)


# ---------------------------------------------------------------------------- CloudSEN12
CLOUDSEN12_IMAGE = "S2L1C.tif"
"""The L1C bands of a CloudSEN12 patch, in its folder."""
CLOUDSEN12_LABEL = "labels/manual_hq.tif"
"""The high-quality label of a CloudSEN12 patch, relative to its folder."""
CLOUDSEN12_CLASSES: tuple[str, ...] = CLASSES[:4]
"""climdl's names of CloudSEN12's label values 0 clear, 1 thick cloud, 2 thin cloud, 3 cloud
shadow: ``clear cloud thin_cloud cloud_shadow``."""
CLOUDSEN12_SCALE = 1e-4
"""Reflectance per digital number of the CloudSEN12 L1C bands."""
_S2_IDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")


def list_cloudsen12_patches(root: str | Path) -> list[str]:
    """The labelled patches below ``root``: folders holding ``S2L1C.tif`` and
    ``labels/manual_hq.tif``, as paths relative to ``root`` (sorted).

    Args:
        root: the CloudSEN12 folder (or any folder of patch folders below it).

    Returns:
        The patch names.

    Raises:
        DataError: ``root`` is missing or holds no labelled patch.
    """
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"CloudSEN12 folder {base} does not exist.")
    names = sorted(
        p.parent.relative_to(base).as_posix()
        for p in base.rglob(CLOUDSEN12_IMAGE)
        if (p.parent / CLOUDSEN12_LABEL).is_file()
    )
    if not names:
        raise DataError(
            f"no labelled CloudSEN12 patches in {base}: none of its folders holds both "
            f"{CLOUDSEN12_IMAGE} and {CLOUDSEN12_LABEL} (the high-quality labels)."
        )
    return names


def _cloudsen12_band_order(descriptions: tuple[str | None, ...], path: Path) -> list[int]:
    """0-based file band of each of :data:`~climdl.clouds.scene.SENTINEL2_BANDS`: by the
    band descriptions (``B1``, ``B01``, ``B8A``), else by position (13 bands)."""
    names = [re.sub(r"^B0(\d)$", r"B\1", (d or "").strip().upper()) for d in descriptions]
    if all(n in _S2_IDS for n in names) and len(set(names)) == len(names):
        missing = [b for b in _S2_IDS if b not in names]
        if missing:
            raise DataError(
                f"CloudSEN12 patch {path} lacks the band(s) {', '.join(missing)}; the L1C "
                "image has all 13 Sentinel-2 bands B1..B12 and B8A."
            )
        return [names.index(b) for b in _S2_IDS]
    if len(descriptions) != len(_S2_IDS):
        raise DataError(
            f"CloudSEN12 patch {path} has {len(descriptions)} bands without names; the L1C "
            "image has the 13 Sentinel-2 bands B1..B12 with B8A after B8."
        )
    return list(range(len(_S2_IDS)))


def _read_raster(
    path: Path,
) -> tuple[np.ndarray, tuple[str | None, ...], tuple[dict[str, Any], dict[str, Any], float | None]]:
    """All bands of a patch file, their descriptions and its grid (coordinates, grid mapping,
    pixel size: :func:`~climdl.clouds.geotiff.grid_coords`)."""
    import rasterio

    from climdl.clouds.geotiff import grid_coords

    if not path.is_file():
        raise DataError(f"the CloudSEN12 file {path} is missing.")
    try:
        with rasterio.open(path) as f:
            return f.read(), tuple(f.descriptions), grid_coords(f, path, False)
    except rasterio.errors.RasterioError as exc:
        detail = str(exc.__cause__ or exc).strip().splitlines()[0]
        raise DataError(f"cannot read the CloudSEN12 file {path}: {detail}.") from exc


def read_cloudsen12_patch(root: str | Path, name: str) -> xr.Dataset:
    """One CloudSEN12 patch as a labelled scene: TOA reflectance of the 13 bands and the
    ``mask`` in :data:`CLOUDSEN12_CLASSES` (see the module docstring).

    Args:
        root: the CloudSEN12 folder.
        name: the patch, relative to ``root`` (from :func:`list_cloudsen12_patches`).

    Returns:
        The scene, in memory.

    Raises:
        DataError: a name outside ``root``, missing or unreadable files, bands that are not
            the 13 of Sentinel-2, or a label of another size.
    """
    from climdl.clouds.geotiff import CRS_VAR

    base = Path(root)
    folder = base / name
    try:
        folder.resolve().relative_to(base.resolve())
    except ValueError:
        raise DataError(f"CloudSEN12 patch {name!r} is not inside {base}.") from None
    dn, desc, (coords, gm, px) = _read_raster(folder / CLOUDSEN12_IMAGE)
    order = _cloudsen12_band_order(desc, folder / CLOUDSEN12_IMAGE)
    dn = dn[order]
    label, _, _ = _read_raster(folder / CLOUDSEN12_LABEL)
    if label.shape[1:] != dn.shape[1:] or label.shape[0] != 1:
        raise DataError(
            f"CloudSEN12 patch {name}: the label {label.shape[1:]} and the bands "
            f"{dn.shape[1:]} differ in shape."
        )
    nodata = (dn == 0).all(axis=0)
    image = dn.astype(np.float32) * np.float32(CLOUDSEN12_SCALE)
    image[:, nodata] = np.nan
    mask = label[0].astype(np.int64)
    mask = np.where((mask < 0) | (mask >= len(CLOUDSEN12_CLASSES)) | nodata, NODATA, mask)
    attrs: dict[str, Any] = {
        "title": f"CloudSEN12 patch {name}",
        "source": "CloudSEN12 (Aybar et al. 2022), Sentinel-2 L1C; TOA reflectance = DN / 10000; "
        "labels manual_hq (0 clear, 1 thick cloud, 2 thin cloud, 3 cloud shadow)",
        "patch": name,
    }
    if px is not None:
        attrs["pixel_size_m"] = px
    ds = make_scene(
        image, SENTINEL2_BANDS, coords, mask=mask.astype(np.uint8),
        classes=CLOUDSEN12_CLASSES, attrs=attrs,
    )  # fmt: skip
    if gm:
        ds[CRS_VAR] = xr.DataArray(np.int32(0), attrs=dict(gm))
        for v in ("image", "mask"):
            ds[v].attrs["grid_mapping"] = CRS_VAR
    return ds


def read_patch(layout: str, root: str | Path, name: str, split: Split = "train") -> xr.Dataset:
    """One patch of a public dataset by layout: ``38-cloud`` (:func:`read_38cloud_patch`,
    ``split`` train or test) or ``cloudsen12`` (:func:`read_cloudsen12_patch`).

    Args:
        layout: ``38-cloud`` or ``cloudsen12``.
        root: the dataset's folder.
        name: the patch's name.
        split: the 38-Cloud split.

    Returns:
        The patch as a scene.
    """
    if layout == "cloudsen12":
        return read_cloudsen12_patch(root, name)
    return read_38cloud_patch(root, name, split)
