"""End to end through the real CLI: sample-clouds -> train a few steps -> segment, and the
one-line errors of each predictable mistake."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from climdl.cli import main
from climdl.clouds.readers import open_scene
from climdl.clouds.scene import NODATA
from tests.argv import segment_argv, train_argv
from tests.cfcheck import cf_errors
from tests.clouds_harness import (
    CLOUDS_CONFIG,
    TINY_CLOUDS,
    sample_clouds_argv,
    train_tiny_segmenter,
)
from tests.fuzzing import SEED, Case, byte_damage, run_cases


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Sample scenes, a short training run with checkpoints, and a segmented scene."""
    root = tmp_path_factory.mktemp("clouds")
    ckpt = train_tiny_segmenter(root)
    scene = root / "scenes" / "scene_000.nc"
    out = root / "mask.nc"
    options = "--probabilities --tile 16 --overlap 4 --batch-size 3 --device cpu --quiet"
    # the long option names, once
    argv = ["segment", "--checkpoint", str(ckpt), "--input", str(scene), "--output", str(out)]
    assert main([*argv, *options.split()]) == 0
    return {"root": root, "ckpt": ckpt, "scene": scene, "out": out}


def test_sample_clouds_is_deterministic(run: dict[str, Path], tmp_path: Path) -> None:
    assert main(sample_clouds_argv(tmp_path, 1, (48, 40), 3)) == 0
    with open_scene(tmp_path / "scene_000.nc") as a, open_scene(run["scene"]) as b:
        xr.testing.assert_identical(a["image"], b["image"])
        xr.testing.assert_identical(a["mask"], b["mask"])


def test_training_writes_summary_with_baseline_comparison(run: dict[str, Path]) -> None:
    summary = json.loads(next((run["root"] / "run").rglob("summary.json")).read_text())
    assert summary["task"] == "cloud_segmentation"
    assert summary["classes"] == ["clear", "cloud", "thin_cloud", "cloud_shadow", "snow"]
    for part in ("val", "test"):
        assert set(summary[part]["model"]) >= {
            "iou_cloud",
            "f1_cloud",
            "precision_cloud",
            "recall_cloud",
            "accuracy_cloud",
            "miou",
            "cloud_iou",
        }
        assert 0.0 <= summary[part]["baseline"]["accuracy"] <= 1.0
    assert len(summary["test"]["scenes"]) == 2 and summary["train_scenes"] == 4
    raw = torch.load(run["ckpt"], map_location="cpu", weights_only=True)
    stats = raw["climdl"]["spec"]["stats"]
    assert stats["mean"].shape == (7,) and float(stats["mean"][6]) > 200  # thermal band in K


def test_segment_output_is_cf_with_the_inputs_coordinates(run: dict[str, Path]) -> None:
    out = xr.open_dataset(run["out"], mask_and_scale=False)
    scene = xr.open_dataset(run["scene"])
    try:
        mask = out["cloud_mask"]
        assert mask.dtype == np.uint8 and mask.dims == ("y", "x")
        assert mask.attrs["flag_meanings"] == "clear cloud thin_cloud cloud_shadow snow"
        assert list(mask.attrs["flag_values"]) == [0, 1, 2, 3, 4]
        assert mask.attrs["_FillValue"] == NODATA and mask.attrs["grid_mapping"] == "crs"
        np.testing.assert_array_equal(out["x"].values, scene["x"].values)
        np.testing.assert_array_equal(out["lat"].values, scene["lat"].values)
        assert out["crs"].attrs["grid_mapping_name"] == "azimuthal_equidistant"
        nodata = np.isnan(scene["image"].values).any(0)
        np.testing.assert_array_equal(mask.values == NODATA, nodata)
        assert out.attrs["Conventions"] == "CF-1.10"
        assert len(out.attrs["climdl_checkpoint_sha256"]) == 64
        assert "climdl segment" in out.attrs["history"]
        probs = out["probability"]
        assert list(probs["class"].values) == mask.attrs["flag_meanings"].split()
        ok = ~nodata
        p = np.where(probs.values == probs.attrs.get("_FillValue", np.nan), np.nan, probs.values)
        np.testing.assert_allclose(p.sum(0)[ok], 1.0, atol=2e-3)
        np.testing.assert_array_equal(p.argmax(0)[ok], mask.values[ok])
    finally:
        out.close()
        scene.close()
    assert cf_errors(run["out"]) == []


def test_segment_equals_the_model_on_the_whole_scene(run: dict[str, Path], tmp_path: Path) -> None:
    """One tile over the whole 48 x 40 scene gives the bare model's probabilities."""
    from climdl.tasks.segmentation import load_segmenter

    out = tmp_path / "whole.nc"
    options = ["--tile", "48", "--overlap", "0", "--quiet", "--probabilities"]
    assert main(segment_argv(run["ckpt"], run["scene"], out, *options)) == 0
    from climdl.tasks.seg_inputs import whole_scene_context

    task = load_segmenter(run["ckpt"])
    assert task.spec is not None
    with open_scene(run["scene"]) as ds:
        x = torch.from_numpy(ds["image"].values[None])
    # the sample config reads the scene's thermal context: here the input is the whole scene
    ctx = whole_scene_context(x, task.spec) if task.needs_context else None
    expect = task.predict_proba(x, ctx)[0].numpy()
    with xr.open_dataset(out) as got:
        ok = np.isfinite(got["probability"].values)
        np.testing.assert_allclose(got["probability"].values[ok], expect[ok], atol=1e-3)


def _scene_variant(run: dict[str, Path], tmp_path: Path, how: str) -> Path:
    with open_scene(run["scene"]) as ds:
        ds = ds.load()
    if how == "missing":
        ds = ds.isel(band=[0, 1, 2, 3, 4, 6])
    elif how == "mislabelled":  # nir and swir16 swapped in the data, names kept
        ds["wavelength"].values[[3, 4]] = ds["wavelength"].values[[4, 3]]
    elif how == "celsius":
        ds["image"].values[6] -= 273.15
    elif how == "misordered":  # the thermal values sit under the name of a reflective band
        vals = ds["image"].values.copy()
        ds["image"].values[0], ds["image"].values[6] = vals[6], vals[0]
    path = tmp_path / f"{how}.nc"
    ds.to_netcdf(path)
    return path


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("missing", "lacks the band"),
        ("mislabelled", "mislabelled or in the wrong order"),
        ("celsius", "wrong order or other units"),
        ("misordered", "wrong order or other units"),
    ],
)
def test_band_mistakes_give_one_clear_line(
    run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str, match: str
) -> None:
    scene = _scene_variant(run, tmp_path, how)
    out = tmp_path / "m.nc"
    rc = main(segment_argv(run["ckpt"], scene, out, "--quiet"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and match in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".m.nc*"))  # nothing half-written


def test_reordered_bands_are_matched_by_name(run: dict[str, Path], tmp_path: Path) -> None:
    with open_scene(run["scene"]) as ds:
        ds.isel(band=slice(None, None, -1)).load().to_netcdf(tmp_path / "rev.nc")
    assert (
        main(segment_argv(run["ckpt"], tmp_path / "rev.nc", tmp_path / "rev_mask.nc", "--quiet"))
        == 0
    )
    with xr.open_dataset(tmp_path / "rev_mask.nc") as a, xr.open_dataset(run["out"]) as b:
        np.testing.assert_array_equal(a["cloud_mask"].values, b["cloud_mask"].values)


def test_other_mistakes_give_one_clear_line(
    run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"nope")
    emulator_like = tmp_path / "emu.ckpt"
    torch.save({"state_dict": {}, "climdl": {"spec": {}, "version": "0.1.0"}}, emulator_like)
    base = ["segment", "-c", str(run["ckpt"]), "-i", str(run["scene"]), "--quiet"]
    cases = [
        ([*base, "-o", str(run["out"])], "already exists; pass --overwrite"),
        ([*base, "-o", str(run["scene"]), "--overwrite"], "would replace the input"),
        ([*base, "-o", str(tmp_path / "a.nc"), "--tile", "30"], "multiple of 4"),
        ([*base, "-o", str(tmp_path / "a.nc"), "--overlap", "400"], "--overlap"),
        ([*base, "-o", str(tmp_path / "a.nc"), "--batch-size", "0"], "--batch-size"),
        ([*base, "-o", str(tmp_path / "a.nc"), "--device", "tpu"], "unknown device"),
        (segment_argv(run["ckpt"], tmp_path / "none.nc", tmp_path / "a.nc"), "does not exist"),
        (
            segment_argv(junk, run["scene"], tmp_path / "a.nc"),
            "not a readable climdl checkpoint",
        ),
        (
            segment_argv(emulator_like, run["scene"], tmp_path / "a.nc"),
            "not a cloud-segmentation checkpoint",
        ),
        (["sample-clouds", str(tmp_path / "s"), "--n-scenes", "0"], "--n-scenes"),
        (["sample-clouds", str(tmp_path / "s"), "--size", "4", "4"], "--size"),
    ]
    for argv, match in cases:
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2, (argv, err)
        assert match in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "a.nc").exists()


def test_training_on_a_missing_folder_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = train_argv(CLOUDS_CONFIG, tmp_path, "--data.root", str(tmp_path / "nothing"))
    rc = main([*argv, *TINY_CLOUDS])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "does not exist" in err[-1] and "sample-clouds" in err[-1]


@pytest.mark.parametrize("where", ["readonly_dir", "full_disk_dir"])
def test_segment_into_a_read_only_or_full_folder_is_one_line(
    where: str,
    run: dict[str, Path],
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder: Path = request.getfixturevalue(where)
    out = folder / "mask.nc"
    argv = segment_argv(run["ckpt"], run["scene"], out, "-q")
    assert main([*argv, "--probabilities"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    expected = ("read-only", "permission denied") if where == "readonly_dir" else ("no space",)
    assert any(word in err for word in expected), err
    assert [p.name for p in folder.iterdir() if p.name != ".filler"] == []


def _scene_damage(ds: xr.Dataset) -> list[tuple[str, xr.Dataset]]:
    """A clean scene damaged one way each (the byte-level damage comes from tests/fuzzing.py)."""
    tir = [str(b) for b in ds.band.values if str(b) == "tir"]
    return [
        ("no-wavelength", ds.drop_vars("wavelength")),
        ("unknown-bands", ds.assign_coords(band=[f"b{i}" for i in range(ds.sizes["band"])])),
        ("no-thermal", ds.drop_sel(band=tir)),
        ("one-band", ds.isel(band=[0])),
        ("all-nan", ds.assign(image=ds.image * np.nan)),
        ("as-int16", ds.assign(image=(ds.image * 1000).astype("int16"))),
        ("band-last", ds.assign(image=ds.image.transpose("y", "x", "band"))),
        ("no-crs", ds.drop_vars("crs")),
        ("no-band-units", ds.drop_vars("band_units")),
        ("one-pixel", ds.isel(y=[0], x=[0])),
        ("flipped", ds.isel(y=slice(None, None, -1))),
        ("no-image", ds.drop_vars("image")),
        ("huge", ds.assign(image=ds.image * 1e30)),
    ]


def test_segment_on_damaged_scenes_never_shows_a_traceback(
    run: dict[str, Path], tmp_path: Path
) -> None:
    with xr.open_dataset(run["scene"]) as src:
        clean = src.load()
    cases = []
    for name, ds in _scene_damage(clean):
        cases.append(Case(name, tmp_path / f"{name}.nc"))
        ds.to_netcdf(cases[-1].path)
    rng = np.random.default_rng(SEED)
    for name, data in byte_damage(run["scene"].read_bytes(), rng):
        cases.append(Case(name, tmp_path / f"{name}.nc"))
        cases[-1].path.write_bytes(data)
    mask = tmp_path / "mask.nc"

    def argv(case: Case) -> list[str]:
        return segment_argv(run["ckpt"], case.path, mask, "--tile", "16", "--overwrite", "-q")

    n, bad = run_cases(cases, argv)
    assert n == 13 + 17
    assert not bad, "\n".join(bad)
