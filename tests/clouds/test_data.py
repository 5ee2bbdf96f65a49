"""Cloud scenes: the synthetic generator, CF scene files, the 38-Cloud reader, the DataModule,
the threshold baseline and the scores."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from climdl.clouds.batches import CropDataset
from climdl.clouds.data import CloudDataModule
from climdl.clouds.layouts import list_38cloud_patches, read_38cloud_patch, stitch_38cloud_scene
from climdl.clouds.readers import open_scene
from climdl.clouds.sample import write_cloud_sample
from climdl.clouds.scene import (
    CLASSES,
    LANDSAT_BANDS,
    NODATA,
    bands_of,
    classes_of,
    read_mask,
    validate_scene,
)
from climdl.clouds.synthetic import make_scene
from climdl.clouds.training_scenes import scene_sources
from climdl.errors import DataError
from climdl.models.threshold import threshold_labels
from climdl.tasks.seg_metrics import confusion, scores


@pytest.fixture(scope="module")
def scenes() -> list:
    return [make_scene(np.random.SeedSequence([7, i]), (64, 64)) for i in range(12)]


def test_generator_is_deterministic() -> None:
    a = make_scene(np.random.SeedSequence([3, 1]), (48, 40))
    b = make_scene(np.random.SeedSequence([3, 1]), (48, 40))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.attrs == b.attrs and a.image.shape == (7, 48, 40)
    c = make_scene(np.random.SeedSequence([3, 2]), (48, 40))
    assert not np.array_equal(np.nan_to_num(a.image), np.nan_to_num(c.image))


def test_labels_follow_the_physics(scenes: list) -> None:
    """Every class occurs; clouds are colder than clear ground, snow has a high NDSI and clouds
    a low one, shadows are darker in the NIR, and no-data pixels are exactly the NaN ones."""
    img = np.concatenate([s.image.reshape(7, -1) for s in scenes], axis=1)
    lab = np.concatenate([s.mask.ravel() for s in scenes])
    assert set(np.unique(lab)) >= {0, 1, 2, 3, 4}
    assert np.array_equal(np.isnan(img).any(0), lab == NODATA)
    green, nir, swir, bt = img[1], img[3], img[4], img[6]
    ndsi = (green - swir) / (green + swir)
    cloud, clear, snow, shadow = (lab == 1), (lab == 0), (lab == 4), (lab == 3)
    assert np.median(bt[cloud]) < np.median(bt[clear]) - 10
    assert np.median(ndsi[snow]) > 0.6 > np.median(ndsi[cloud])
    assert np.median(nir[shadow]) < np.median(nir[clear])


def test_brightness_fails_where_the_threshold_test_reasons_spectrally(scenes: list) -> None:
    """Snow and bright deserts defeat a visible-brightness threshold; the Fmask-like test
    does better on "any cloud"."""
    k = len(CLASSES)
    naive = sum(
        confusion((np.nan_to_num(s.image[2]) > 0.3).astype(np.uint8), s.mask, k) for s in scenes
    )
    fmask = sum(
        confusion(threshold_labels(s.image, LANDSAT_BANDS, CLASSES, s.attrs), s.mask, k)
        for s in scenes
    )
    naive_iou = scores(naive, CLASSES)["cloud_iou"]
    fmask_iou = scores(fmask, CLASSES)["cloud_iou"]
    assert fmask_iou > naive_iou + 0.2, (fmask_iou, naive_iou)


def test_threshold_marks_no_data_and_needs_visible_and_nir(scenes: list) -> None:
    s = next(s for s in scenes if (s.mask == NODATA).any())
    pred = threshold_labels(s.image, LANDSAT_BANDS, CLASSES, s.attrs)
    assert np.array_equal(pred == NODATA, s.mask == NODATA)
    with pytest.raises(DataError, match="missing nir"):
        threshold_labels(s.image[:3], LANDSAT_BANDS[:3], CLASSES)


def test_scores_from_a_known_confusion() -> None:
    conf = torch.tensor([[8, 2, 0], [1, 4, 1], [0, 0, 0]])
    sc = scores(conf, ["clear", "cloud", "thin_cloud"])
    assert sc["iou_clear"] == pytest.approx(8 / 11)
    assert sc["precision_cloud"] == pytest.approx(4 / 6)
    assert sc["recall_cloud"] == pytest.approx(4 / 6)
    assert sc["f1_clear"] == pytest.approx(16 / 19)
    assert np.isnan(sc["recall_thin_cloud"]) and sc["iou_thin_cloud"] == 0.0
    assert sc["cloud_iou"] == pytest.approx(5 / 8)  # any cloud: {cloud, thin} vs clear
    assert sc["accuracy"] == pytest.approx(12 / 16)


def test_scene_files_are_cf_and_round_trip(tmp_path: Path) -> None:
    res = write_cloud_sample(tmp_path / "s", 2, (40, 56), seed=5)
    assert [p.name for p in res.files] == ["scene_000.nc", "scene_001.nc"]
    with open_scene(res.files[0]) as ds:
        validate_scene(ds, labelled=True)
        assert classes_of(ds) == list(CLASSES)
        assert [b.name for b in bands_of(ds)] == [b.name for b in LANDSAT_BANDS]
        assert ds["wavelength"].attrs["standard_name"] == "sensor_band_central_radiation_wavelength"
        assert ds["image"].attrs["grid_mapping"] == "crs"
        assert ds["crs"].attrs["grid_mapping_name"] == "azimuthal_equidistant"
        assert ds["lat"].attrs["units"] == "degrees_north"
        mask = read_mask(ds)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 2, 3, 4, NODATA}
        again = make_scene(np.random.SeedSequence([5, 0]), (40, 56))
        np.testing.assert_array_equal(mask, again.mask)
        np.testing.assert_allclose(ds["image"].values, again.image, atol=1e-4)
    raw = xr.open_dataset(res.files[0], mask_and_scale=False)
    assert raw["mask"].attrs["_FillValue"] == NODATA
    assert raw["mask"].attrs["flag_meanings"] == "clear cloud thin_cloud cloud_shadow snow"
    raw.close()
    with pytest.raises(Exception, match="already exists"):
        write_cloud_sample(tmp_path / "s", 1, (40, 56), seed=5)


def test_unlabelled_or_foreign_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.nc"
    xr.Dataset({"t": (("y", "x"), np.zeros((3, 3)))}).to_netcdf(bad)
    with pytest.raises(DataError, match="no image variable"):
        open_scene(bad)
    (tmp_path / "junk.nc").write_text("not netcdf")
    with pytest.raises(DataError, match="not a readable"):
        open_scene(tmp_path / "junk.nc")
    res = write_cloud_sample(tmp_path / "s", 1, (32, 32), seed=0)
    with open_scene(res.files[0]) as ds:
        unlabelled = ds.drop_vars("mask")
        with pytest.raises(DataError, match="no 'mask'"):
            validate_scene(unlabelled, labelled=True)
        odd = ds.copy()
        odd["mask"].attrs["flag_values"] = np.array([0, 2, 3, 4, 5])
        with pytest.raises(DataError, match="flag_values"):
            classes_of(odd)


# ---------------------------------------------------------------------------- 38-Cloud
SCENE_ID = "LC08_L1TP_002053_20160520_20170324_01_T1"


def _write_38cloud(
    root: Path, n_rows: int = 2, n_cols: int = 2, size: int = 16, with_csv: bool = True
) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    base = root / "38-Cloud_training"
    for band in ("red", "green", "blue", "nir", "gt"):
        (base / f"train_{band}").mkdir(parents=True)
    names = []
    n = 0
    for r in range(1, n_rows + 1):
        for c in range(1, n_cols + 1):
            n += 1
            name = f"patch_{n}_{r}_by_{c}_{SCENE_ID}"
            names.append(name)
            cloud = rng.random((size, size)) > 0.6
            for band in ("red", "green", "blue", "nir"):
                dn = np.where(cloud, 30000, 9000 + 1000 * r).astype(np.uint16)
                if n == 1:
                    dn[:3] = 0  # the black no-data margin
                Image.fromarray(dn).save(base / f"train_{band}" / f"{band}_{name}.TIF")
            Image.fromarray((cloud * 255).astype(np.uint8)).save(
                base / "train_gt" / f"gt_{name}.TIF"
            )
    if with_csv:
        with (base / "training_patches_38-Cloud.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["name"])
            w.writerows([[nm] for nm in names])
    return names


@pytest.mark.parametrize("with_csv", [True, False])
def test_38cloud_patches_read_as_scenes(tmp_path: Path, with_csv: bool) -> None:
    names = _write_38cloud(tmp_path, with_csv=with_csv)
    assert sorted(list_38cloud_patches(tmp_path)) == sorted(names)
    ds = read_38cloud_patch(tmp_path, names[0])
    assert [b.name for b in bands_of(ds)] == ["blue", "green", "red", "nir"]
    assert classes_of(ds) == ["clear", "cloud"]
    mask = read_mask(ds)
    assert (mask[:3] == NODATA).all() and set(np.unique(mask[3:])) == {0, 1}
    refl = ds["image"].values
    assert np.isnan(refl[:, :3]).all()
    np.testing.assert_allclose(refl[2][3:][mask[3:] == 1], 2e-5 * 30000 - 0.1, rtol=1e-5)


def test_38cloud_scene_is_stitched_from_its_patches(tmp_path: Path) -> None:
    names = _write_38cloud(tmp_path, n_rows=2, n_cols=3)
    ds = stitch_38cloud_scene(tmp_path, SCENE_ID)
    assert ds["image"].shape == (4, 32, 48)
    patch = read_38cloud_patch(tmp_path, names[5])  # row 2, col 3
    np.testing.assert_array_equal(ds["mask"].values[16:, 32:], patch["mask"].values)
    with pytest.raises(DataError, match="no 38-Cloud patches of scene"):
        stitch_38cloud_scene(tmp_path, "LC08_nothing")
    with pytest.raises(DataError, match="not a 38-Cloud folder"):
        list_38cloud_patches(tmp_path / "38-Cloud_training" / "train_red")


def test_38cloud_trains_through_the_datamodule(tmp_path: Path) -> None:
    _write_38cloud(tmp_path, n_rows=2, n_cols=2, size=32)
    dm = CloudDataModule(
        root=str(tmp_path / "38-Cloud_training"),
        layout="38-cloud",
        crop_size=16,
        batch_size=2,
        samples_per_epoch=4,
        val_fraction=0.25,
    )
    dm.setup()
    spec = dm.spec()
    assert spec.bands == ("blue", "green", "red", "nir") and spec.classes == ("clear", "cloud")
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (2, 4, 32, 32) and batch["y"].dtype == torch.int64


# ---------------------------------------------------------------------------- data module
def test_datamodule_split_stats_and_batches(tmp_path: Path) -> None:
    res = write_cloud_sample(tmp_path / "s", 5, (40, 48), seed=2)
    dm = CloudDataModule(
        root=str(res.root),
        crop_size=32,
        batch_size=3,
        samples_per_epoch=6,
        val_fraction=0.4,
        split_seed=1,
    )
    dm.setup()
    assert len(dm.val_sources) == 2 and len(dm.train_sources) == 3
    assert not {s.name for s in dm.val_sources} & {s.name for s in dm.train_sources}
    spec = dm.spec()
    xs = np.concatenate([s.read()[0].reshape(7, -1) for s in dm.train_sources], axis=1)
    np.testing.assert_allclose(spec.mean.numpy(), np.nanmean(xs, 1), rtol=1e-4)
    assert spec.class_counts is not None
    assert spec.class_counts.sum() == sum((s.read()[1] != NODATA).sum() for s in dm.train_sources)
    train = next(iter(dm.train_dataloader()))
    assert train["x"].shape == (3, 7, 32, 32) and train["y"].shape == (3, 32, 32)
    val = next(iter(dm.val_dataloader()))
    assert val["x"].shape == (1, 7, 64, 64)  # padded to a multiple of 32
    assert (val["y"][0, 40:] == NODATA).all() and torch.isnan(val["x"][0, :, 40:]).all()
    # crops are reproducible: item i is the crop seeded by i
    ds = CropDataset(dm.train_sources, 32, seed=1)
    torch.testing.assert_close(ds[5]["x"], ds[5]["x"], equal_nan=True)


def test_scenes_with_other_band_orders_are_reordered_and_mismatches_refused(tmp_path: Path) -> None:
    res = write_cloud_sample(tmp_path / "s", 2, (32, 32), seed=0)
    with open_scene(res.files[1]) as ds:
        flipped = ds.isel(band=slice(None, None, -1)).load()
    flipped.to_netcdf(res.files[1].with_name("z_flipped.nc"))
    res.files[1].unlink()
    srcs = scene_sources(res.root)
    x0, _ = srcs[1].read()
    with open_scene(tmp_path / "s" / "z_flipped.nc") as ds:
        np.testing.assert_allclose(x0, ds["image"].values[::-1], equal_nan=True)
    with open_scene(res.files[0]) as ds:
        ds.isel(band=slice(0, 6)).to_netcdf(tmp_path / "s" / "fewer.nc")
    with pytest.raises(DataError, match="same bands"):
        scene_sources(res.root)
    with pytest.raises(DataError, match="does not exist"):
        scene_sources(tmp_path / "nothing")
