"""Readers for public labelled cloud datasets: 38-Cloud (Mohajerani & Saeedi 2019).

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
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Literal

import numpy as np
import xarray as xr

from climdl.clouds.scene import BINARY_CLASSES, NODATA, Band, make_scene
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
