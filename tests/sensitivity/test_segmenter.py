"""``climdl sensitivity`` on the cloud segmenter: bounds kept in physical units, the adversary
against random draws, saliency of an ignored band, the CF output and its reproducibility, and
the one-sentence errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr

from climdl.clouds.readers import load_scene
from climdl.clouds.sample import scene_dataset
from climdl.clouds.scene import CLASSES, LANDSAT_BANDS, write_scene
from climdl.clouds.synthetic import make_scene
from climdl.errors import ConfigError, DataError, OutputError
from climdl.inference.segment import segment
from climdl.sensitivity.attacks import fgsm, pgd
from climdl.sensitivity.bounds import parse_bounds
from climdl.sensitivity.segmenter import (
    TileSensitivity,
    default_scene_bounds,
    run_segmenter_sensitivity,
)
from climdl.sensitivity.segmenter_output import ATTACKS
from climdl.tasks.segmentation import SegmentationTask, load_segmenter
from tests.cfcheck import cf_errors
from tests.sensitivity.segmenters import landsat_spec, save_segmenter

BANDS = [b.name for b in LANDSAT_BANDS]
UNITS = {b.name: b.units for b in LANDSAT_BANDS}
FAST: dict[str, Any] = {
    "pgd_steps": 4,
    "random_draws": 3,
    "ig_steps": 4,
    "tile": 32,
    "overlap": 8,
    "device": "cpu",
}
"""A 48 x 40 scene in four 32-pixel tiles, one batch, few steps."""


def _train(scene: xr.Dataset) -> SegmentationTask:
    """A small segmenter fitted (60 Adam steps) to the scene's own labels: decisive enough that
    bounded nudges change some classes and not others."""
    img = scene["image"].values
    spec = landsat_spec(img)
    torch.manual_seed(0)
    task = SegmentationTask(
        depth=2, base_filters=8, max_filters=16, class_weights=None, loss="ce", augment=False
    )
    task.build(spec)
    x = torch.from_numpy(img[None])
    y = torch.from_numpy(scene["mask"].values[None].astype(np.int64))
    opt = torch.optim.Adam(task.parameters(), 1e-2)
    task.train()
    for _ in range(60):
        loss, _ = task.compute_loss(task.on_after_batch_transfer({"x": x, "y": y}, 0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return task.eval()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A synthetic 48 x 40 scene with a corner and a pixel without data, a segmenter fitted to
    it, and one sensitivity run with the default bounds."""
    root = tmp_path_factory.mktemp("seg_sensitivity")
    ds = scene_dataset(make_scene(np.random.SeedSequence([3, 0]), (48, 40)), 3, 0)
    ds["image"].values[:, :3, :5] = np.nan
    ds["image"].values[2, 20, 20] = np.nan  # one band missing: no data at that pixel
    scene = write_scene(ds, root / "scene.nc")
    task = _train(ds)
    ckpt = save_segmenter(task, root / "seg.ckpt")
    result = run_segmenter_sensitivity(ckpt, scene, out_dir=root / "out", **FAST)
    return {"root": root, "scene": scene, "ckpt": ckpt, "result": result, "task": task}


def _tiles(run: dict[str, Any]) -> torch.Tensor:
    """Two 32 x 32 tiles of the scene, the first with the pixels without data."""
    x = torch.from_numpy(load_scene(run["scene"])["image"].values)
    return torch.stack([x[:, :32, :32], x[:, 16:, 8:]])


def test_perturbations_stay_within_each_bands_bound(run: dict[str, Any]) -> None:
    task = load_segmenter(run["ckpt"]).eval()
    x = _tiles(run)
    for eps, expect in (
        (None, {b.name: 0.5 if b.thermal else 0.01 for b in LANDSAT_BANDS}),
        ("red=2 %, tir=500 mK", {"red": 0.02 * x[:, 2].nan_to_num().abs(), "tir": 0.5}),
    ):
        text = default_scene_bounds(LANDSAT_BANDS) if eps is None else eps
        sens = TileSensitivity(task, parse_bounds(text, BANDS, UNITS), pgd_steps=3)
        deltas = sens.perturbations(x)
        assert set(deltas) == {"fgsm", "pgd", "random_0", "random_1", "random_2", "random_3"}
        for name, d in deltas.items():
            assert bool(torch.isfinite(d).all()), name
            assert bool((d[~torch.isfinite(x)] == 0).all()), name  # no data stays no data
            for i, band in enumerate(BANDS):
                bound = expect.get(band, 0.0)
                assert bool((d[:, i].abs() <= torch.as_tensor(bound) * (1 + 1e-6)).all()), band
                if band in expect and name != "fgsm":  # corners and PGD use the whole box
                    assert float(d[:, i].abs().max()) > 0.5 * float(torch.as_tensor(bound).max())
        if eps is not None:  # the bands not named are held fixed
            assert float(deltas["pgd"][:, [0, 1, 3, 4, 5]].abs().max()) == 0.0


def test_pgd_objective_is_at_least_fgsms_on_every_tile(run: dict[str, Any]) -> None:
    task = load_segmenter(run["ckpt"]).eval()
    bounds = parse_bounds(default_scene_bounds(LANDSAT_BANDS), BANDS, UNITS)
    sens = TileSensitivity(task, bounds)
    x = _tiles(run)
    objective = sens.objective(x)
    box = sens.box(x)
    d_fgsm = fgsm(objective, x, box)
    d_pgd = pgd(objective, x, box, steps=5, start=d_fgsm)
    clean, with_fgsm, with_pgd = (objective(x + d) for d in (0 * x.nan_to_num(), d_fgsm, d_pgd))
    assert bool((with_pgd >= with_fgsm).all())  # PGD starts at FGSM and keeps its best iterate
    assert bool((with_pgd > clean).all())


def test_output_is_cf_with_the_schema_and_the_adversary_beats_random(run: dict[str, Any]) -> None:
    result = run["result"]
    frac = result.changed_fraction
    assert set(frac) == set(ATTACKS)
    assert frac["pgd"] > 0.0 and frac["pgd"] >= frac["random_max"] >= frac["random"] >= 0.0
    assert frac["fgsm"] >= frac["random_max"]
    assert result.path == run["root"] / "out" / "sensitivity.nc"
    assert cf_errors(result.path) == []
    with xr.open_dataset(result.path) as out, xr.open_dataset(run["scene"]) as scene:
        assert out.attrs["climdl_sensitivity"] == "segmenter"
        assert out.attrs["climdl_sensitivity_version"] == 1
        assert out.attrs["classes"] == " ".join(CLASSES)
        assert out.attrs["bounds"].startswith("blue=0.01 1;") and "tir=0.5 K" in out.attrs["bounds"]
        assert out.attrs["Conventions"] == "CF-1.10" and out.attrs["pgd_steps"] == 4
        assert list(out["attack"].values) == list(ATTACKS)
        assert list(out["band"].values) == [b.name for b in LANDSAT_BANDS]
        assert list(out["class_from"].values) == list(CLASSES) == list(out["class_to"].values)
        assert list(out["band_bound"].values) == ["0.01 1"] * 6 + ["0.5 K"]
        np.testing.assert_allclose(out["changed_fraction"].values, [frac[a] for a in ATTACKS])
        np.testing.assert_array_equal(out["x"].values, scene["x"].values)
        np.testing.assert_array_equal(out["lat"].values, scene["lat"].values)
        for name in ("changed_pgd", "band_saliency", "band_bound_sensitivity"):
            assert out[name].attrs["grid_mapping"] == "crs", name
        assert out["band_saliency"].dims == ("band", "y", "x")
        assert out["transitions"].dims == ("attack", "class_from", "class_to")
        nodata = ~np.isfinite(scene["image"].values).all(0)
        n_valid = int((~nodata).sum())
        trans = out["transitions"].values
        np.testing.assert_allclose(trans.sum((1, 2)), n_valid)
        changed = trans.sum((1, 2)) - np.trace(trans, axis1=1, axis2=2)
        np.testing.assert_allclose(changed / n_valid, out["changed_fraction"].values)
        flag = out["changed_pgd"].values
        assert np.isnan(flag[nodata]).all() and set(np.unique(flag[~nodata])) <= {0.0, 1.0}
        assert flag[~nodata].mean() == pytest.approx(frac["pgd"])
        for name in ("band_saliency", "band_bound_sensitivity"):
            v = out[name].values
            assert np.isnan(v[:, nodata]).all() and np.isfinite(v[:, ~nodata]).all(), name
        assert (out["band_bound_sensitivity"].values[:, ~nodata] >= 0).all()
        mask = out["cloud_mask"].values
    # the unperturbed classes are climdl segment's with the same tiling
    seg = segment(
        run["ckpt"], run["scene"], run["root"] / "mask.nc", tile=32, overlap=8, device="cpu"
    )
    with xr.open_dataset(seg.path) as got:
        np.testing.assert_array_equal(got["cloud_mask"].values[~nodata], mask[~nodata])


def test_same_seed_gives_the_same_file(run: dict[str, Any], tmp_path: Path) -> None:
    again = run_segmenter_sensitivity(run["ckpt"], run["scene"], out_dir=tmp_path, **FAST)
    assert again.changed_fraction == run["result"].changed_fraction
    with xr.open_dataset(again.path) as a, xr.open_dataset(run["result"].path) as b:
        xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
        assert {k: v for k, v in a.attrs.items() if k != "history"} == {
            k: v for k, v in b.attrs.items() if k != "history"
        }


def test_random_draws_do_not_depend_on_the_batching(run: dict[str, Any], tmp_path: Path) -> None:
    """Each tile draws from its own generator (seed and tile values): one tile per batch gives
    the run of four tiles per batch."""
    single = run_segmenter_sensitivity(
        run["ckpt"], run["scene"], out_dir=tmp_path, **{**FAST, "batch_size": 1}
    )
    for attack in ("random", "random_max"):
        assert single.changed_fraction[attack] == run["result"].changed_fraction[attack]


def test_a_band_the_model_ignores_has_zero_saliency(run: dict[str, Any], tmp_path: Path) -> None:
    raw = torch.load(run["ckpt"], map_location="cpu", weights_only=True)
    swir22 = [b.name for b in LANDSAT_BANDS].index("swir22")
    raw["state_dict"]["net.encoder.0.conv1.weight"][:, swir22] = 0.0  # the only use of the input
    torch.save(raw, tmp_path / "blind.ckpt")
    result = run_segmenter_sensitivity(
        tmp_path / "blind.ckpt", run["scene"], out_dir=tmp_path / "out", **FAST
    )
    with xr.open_dataset(result.path) as out:
        for name in ("band_saliency", "band_bound_sensitivity"):
            v = np.nan_to_num(out[name].values)
            assert (v[swir22] == 0).all(), name
            assert np.abs(v[[b for b in range(7) if b != swir22]]).max() > 0, name


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"eps": "pan=0.01 1"}, ConfigError, "'pan', which is neither a channel"),
        ({"eps": "tir=0.5 m"}, ConfigError, "cannot be converted to the units of tir"),
        ({"eps": "red=0.01"}, ConfigError, "has no unit"),
        ({"pgd_steps": 0}, ConfigError, "--pgd-steps must be at least 1"),
        ({"seed": -1}, ConfigError, r"--seed must be an integer from 0 to 2\*\*63-1"),
        ({"tile": 30}, ConfigError, "--tile must be a positive multiple of 4"),
        ({}, OutputError, "already exists; pass --overwrite"),
    ],
)
def test_mistakes_stop_with_one_sentence(
    run: dict[str, Any], options: dict[str, Any], error: type[Exception], match: str
) -> None:
    kw = {**FAST, **options}
    with pytest.raises(error, match=match):
        run_segmenter_sensitivity(run["ckpt"], run["scene"], out_dir=run["root"] / "out", **kw)


def test_a_scene_without_a_models_band_is_refused(run: dict[str, Any], tmp_path: Path) -> None:
    ds = load_scene(run["scene"]).isel(band=[0, 1, 2, 3, 4, 6])
    write_scene(ds, tmp_path / "no_swir22.nc")
    with pytest.raises(DataError, match="lacks the band"):
        run_segmenter_sensitivity(run["ckpt"], tmp_path / "no_swir22.nc", out_dir=tmp_path, **FAST)
    assert not (tmp_path / "sensitivity.nc").exists()
