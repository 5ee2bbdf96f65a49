"""CloudSEN12 patches as labelled training scenes: the GeoTIFF release's folder layout, DN / 10000
reflectance with the padding as no data, the label classes mapped onto climdl's, bands by
description or position, clear errors, and ``climdl train --data.layout cloudsen12``.

The patches are tiny (24 x 20 instead of 509 x 509) but laid out like the release:
``<root>/<ROI>/<product>/S2L1C.tif`` (13 uint16 bands B1..B12 with B8A after B8, UTM, 10 m) and
``labels/manual_hq.tif`` (uint8: 0 clear, 1 thick cloud, 2 thin cloud, 3 cloud shadow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from climdl.cli import main
from climdl.clouds.data import CloudDataModule
from climdl.clouds.layouts import (
    CLOUDSEN12_CLASSES,
    list_cloudsen12_patches,
    read_cloudsen12_patch,
)
from climdl.clouds.scene import NODATA, SENTINEL2_BANDS, validate_scene
from climdl.clouds.training_scenes import scene_sources
from climdl.errors import ConfigError, DataError
from tests.argv import train_argv
from tests.clouds_harness import CLOUDS_CONFIG, TINY_CLOUDS

H, W = 24, 20
IDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]


def _tif(path: Path, data: np.ndarray, descriptions: list[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2],
        count=data.shape[0], dtype=data.dtype, crs="EPSG:32630",
        transform=Affine(10.0, 0.0, 400_000.0, 0.0, -10.0, 4_500_000.0),
    ) as f:  # fmt: skip
        f.write(data)
        for i, d in enumerate(descriptions or []):
            f.set_band_description(i + 1, d)


def write_patch(
    root: Path, name: str, seed: int, *, descriptions: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A patch folder ``root/name`` with clouds bright in every band over a darker ground, a
    padded (DN 0) bottom row, and one label value outside 0..3; returns (DN, label)."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 4, (H, W)).astype(np.uint8)
    label[0, 0] = 9  # not a CloudSEN12 class
    refl = np.where(np.isin(label, (1, 2)), 0.6, 0.1)[None] + rng.uniform(0, 0.05, (13, H, W))
    dn = np.round(refl * 10000).astype(np.uint16)
    dn[:, -1, :] = 0  # the padding
    stored = (
        dn if descriptions is None else dn[[IDS.index(d.replace("B0", "B")) for d in descriptions]]
    )
    _tif(root / name / "S2L1C.tif", stored, descriptions)
    _tif(root / name / "labels" / "manual_hq.tif", label[None])
    return dn, label


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "cloudsen12"
    for i in range(4):
        write_patch(root, f"ROI_{i:05d}/20190212T142031_20190212T143214_T19FDF", i)
    # a scribble-only patch (no manual_hq.tif) is not a training patch
    (root / "ROI_09999" / "x").mkdir(parents=True)
    _tif(root / "ROI_09999" / "x" / "S2L1C.tif", np.ones((13, H, W), np.uint16))
    return root


def test_patches_are_listed_and_read_as_labelled_scenes(dataset: Path) -> None:
    names = list_cloudsen12_patches(dataset)
    assert names == [f"ROI_{i:05d}/20190212T142031_20190212T143214_T19FDF" for i in range(4)]
    dn, label = write_patch(dataset, names[0], 0)  # the same patch again, to compare
    ds = read_cloudsen12_patch(dataset, names[0])
    validate_scene(ds, names[0], labelled=True)
    assert list(ds["band"].values) == [b.name for b in SENTINEL2_BANDS]
    assert ds["mask"].attrs["flag_meanings"] == "clear cloud thin_cloud cloud_shadow"
    assert CLOUDSEN12_CLASSES == ("clear", "cloud", "thin_cloud", "cloud_shadow")
    img = ds["image"].values
    np.testing.assert_allclose(img[:, :-1], dn[:, :-1] / 10000.0, rtol=1e-6)
    assert np.isnan(img[:, -1]).all()
    mask = ds["mask"].values
    want = label.copy()
    want[0, 0] = NODATA
    want[-1, :] = NODATA
    np.testing.assert_array_equal(mask, want)
    assert ds.attrs["pixel_size_m"] == 10.0 and "crs_wkt" in ds["crs"].attrs


def test_bands_follow_their_descriptions(tmp_path: Path) -> None:
    shuffled = ["B12", "B01", "B8A", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09",
                "B10", "B11"]  # fmt: skip
    dn, _ = write_patch(tmp_path, "p", 3, descriptions=shuffled)
    img = read_cloudsen12_patch(tmp_path, "p")["image"].values
    np.testing.assert_allclose(img[:, :-1], dn[:, :-1] / 10000.0, rtol=1e-6)


def test_bad_patches_are_one_clear_sentence(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no labelled CloudSEN12 patches"):
        list_cloudsen12_patches(tmp_path)
    write_patch(tmp_path, "p", 1)
    _tif(tmp_path / "p" / "labels" / "manual_hq.tif", np.zeros((1, H - 1, W), np.uint8))
    with pytest.raises(DataError, match=r"the label \(23, 20\) and the bands \(24, 20\)"):
        read_cloudsen12_patch(tmp_path, "p")
    _tif(tmp_path / "q" / "S2L1C.tif", np.ones((12, H, W), np.uint16))
    with pytest.raises(DataError, match="has 12 bands without names"):
        read_cloudsen12_patch(tmp_path, "q")
    with pytest.raises(DataError, match="is not inside"):
        read_cloudsen12_patch(tmp_path / "p", "../q")
    with pytest.raises(ConfigError, match=r"needs data\.root"):
        scene_sources(None, "cloudsen12")


def test_datamodule_serves_cloudsen12_patches(dataset: Path) -> None:
    dm = CloudDataModule(
        root=str(dataset), layout="cloudsen12", crop_size=16, batch_size=2, samples_per_epoch=4,
        val_fraction=0.25, test_sample_scenes=0, pad_multiple=16,
    )  # fmt: skip
    dm.setup("fit")
    spec = dm.spec()
    assert spec.bands == tuple(b.name for b in SENTINEL2_BANDS)
    assert spec.classes == CLOUDSEN12_CLASSES
    assert len(dm.train_sources) == 3 and len(dm.val_sources) == 1
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["x"].shape) == (2, 13, 16, 16) and tuple(batch["y"].shape) == (2, 16, 16)
    assert set(np.unique(batch["y"].numpy())) <= {0, 1, 2, 3, NODATA}


def test_train_on_cloudsen12_through_the_cli(dataset: Path, tmp_path: Path) -> None:
    data = ["--data.root", str(dataset), "--data.layout", "cloudsen12",
            "--data.test_sample_scenes", "0", "--data.crop_size", "16"]  # fmt: skip
    argv = train_argv(CLOUDS_CONFIG, tmp_path / "run", *data, "--trainer.max_epochs", "1")
    assert main([*argv, *TINY_CLOUDS, "--data.crop_size", "16"]) == 0
    assert next((tmp_path / "run").rglob("best-*.ckpt"))
