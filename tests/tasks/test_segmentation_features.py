"""The cloud CNN's optional spectral-index inputs (``features: bands+indices``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from climdl.clouds.scene import LANDSAT_BANDS, NODATA
from climdl.clouds.spec import SegmenterSpec
from climdl.errors import ConfigError, DataError
from climdl.models.spectral_indices import SpectralIndices, index_names
from climdl.tasks.segmentation import SegmentationTask

LANDSAT = [b.name for b in LANDSAT_BANDS]  # blue .. swir22, tir


def _spec(bands: list[str]) -> SegmenterSpec:
    n = len(bands)
    return SegmenterSpec.from_dict(
        {
            "bands": bands,
            "wavelengths": [0.5 + i for i in range(n)],
            "band_units": ["1"] * n,
            "classes": ["clear", "cloud", "thin_cloud", "cloud_shadow", "snow"],
            "ignore_index": NODATA,
            "stats": {"mean": torch.full((n,), 0.2), "std": torch.full((n,), 0.1)},
            "class_counts": torch.tensor([500.0, 200.0, 100.0, 50.0, 50.0]),
        }
    )


def test_indices_follow_the_bands_a_sensor_has() -> None:
    assert index_names(LANDSAT) == [
        "ndsi",
        "ndvi",
        "ndmi",
        "swir_ratio",
        "blue_red",
        "blue_swir",
    ]
    # 38-Cloud: red, green, blue, nir only (no SWIR): the SWIR indices are left out
    assert index_names(["red", "green", "blue", "nir"]) == ["ndvi", "blue_red"]
    assert SpectralIndices(["b0", "b1"]).num_features == 0


def test_indices_are_normalised_differences_bounded_and_nan_preserving() -> None:
    # a snow pixel (bright green, dark SWIR) and a cloud pixel (bright everywhere)
    snow = [0.9, 0.9, 0.88, 0.8, 0.1, 0.05, 265.0]
    cloud = [0.7, 0.7, 0.7, 0.7, 0.6, 0.45, 240.0]
    x = torch.tensor([snow, cloud]).T.reshape(1, 7, 1, 2).clone()
    x[0, 0, 0, 1] = -0.5  # noise can make a dark reflectance negative: still bounded
    out = SpectralIndices(LANDSAT)(x)
    assert out.shape == (1, 6, 1, 2)
    ndsi = out[0, 0, 0]
    assert ndsi[0] == pytest.approx((0.9 - 0.1) / (0.9 + 0.1 + 0.02))
    assert ndsi[0] > 0.7 > 0.1 > ndsi[1]
    assert out.abs().max() <= 1.0
    x[0, 1, 0, 0] = float("nan")
    assert torch.isnan(SpectralIndices(LANDSAT)(x)[0, 0, 0, 0])


def _task(**kw: Any) -> SegmentationTask:
    task = SegmentationTask(depth=2, base_filters=4, max_filters=8, **kw)
    task.build(_spec(LANDSAT))
    return task


def test_task_appends_indices_to_the_standardised_bands() -> None:
    plain, with_idx = _task(), _task(features="bands+indices")
    assert plain.net is not None and with_idx.net is not None
    assert plain.net.in_channels == 7 and with_idx.net.in_channels == 13
    x = 0.3 * torch.rand(2, 7, 16, 16)
    x[:, 6] = 280.0
    x[0, :, 0, 0] = float("nan")  # no data: zero input, ignored label
    xn, valid = with_idx.normalise(x)
    assert xn.shape == (2, 13, 16, 16)
    assert torch.isfinite(xn).all() and not valid[0, 0, 0]
    torch.testing.assert_close(xn[:, :7], plain.normalise(x)[0])
    torch.testing.assert_close(xn[:, 7:], SpectralIndices(LANDSAT)(x).nan_to_num(0.0))
    prob = with_idx.predict_proba(x)
    assert prob.shape == (2, 5, 16, 16)
    torch.testing.assert_close(prob.sum(1), torch.ones(2, 16, 16))


def _checkpoint_of(task: SegmentationTask) -> dict[str, object]:
    """What a checkpoint file holds for ``task`` (as :func:`torch.load` gives it back)."""
    assert task.spec is not None
    return {
        "hyper_parameters": dict(task.hparams),
        "climdl": {"spec": task.spec.to_dict()},
        "state_dict": task.state_dict(),
    }


def test_checkpoint_remembers_the_features() -> None:
    task = _task(features="bands+indices")
    assert task.spec is not None
    again = SegmentationTask.from_checkpoint(_checkpoint_of(task))
    assert again.indices is not None and again.net is not None
    assert again.net.in_channels == 13
    x = torch.rand(1, 7, 16, 16)
    torch.testing.assert_close(again.predict_proba(x), task.eval().predict_proba(x))


def test_unknown_features_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown features"):
        _task(features="ratios")


def _thermal_spec() -> SegmenterSpec:
    d = _spec(LANDSAT).to_dict()
    d["band_units"] = ["1"] * 6 + ["K"]
    d["stats"] = {"mean": torch.tensor([0.2] * 6 + [280.0]), "std": torch.tensor([0.1] * 6 + [8.0])}
    return SegmenterSpec.from_dict(d)


def test_scene_feature_appends_the_temperature_relative_to_the_scene() -> None:
    """``+scene``: (BT - p82.5, BT - p50) of the sample's scene, in units of the thermal std;
    the context comes with the batch (``ctx``); none is an error, never a silent fallback."""
    task = SegmentationTask(depth=2, base_filters=4, max_filters=8, features="bands+indices+scene")
    task.build(_thermal_spec())
    assert task.needs_context and task.net is not None and task.net.in_channels == 15
    x = 0.3 * torch.rand(2, 7, 16, 16)
    x[:, 6] = 270.0 + 20.0 * torch.rand(2, 16, 16)
    ctx = torch.tensor([[285.0, 280.0], [275.0, 270.0]])
    xn, _ = task.normalise(x, ctx)
    assert xn.shape == (2, 15, 16, 16)
    torch.testing.assert_close(xn[:, 13], (x[:, 6] - ctx[:, :1, None]) / 8.0)
    torch.testing.assert_close(xn[:, 14], (x[:, 6] - ctx[:, 1:, None]) / 8.0)
    from climdl.tasks.seg_inputs import whole_scene_context

    own = whole_scene_context(x, _thermal_spec())
    q = torch.quantile(x[:, 6].reshape(2, -1).double(), torch.tensor([0.825, 0.5]).double(), 1)
    torch.testing.assert_close(own, q.T.float())
    # no silent fallback to the input's own percentiles (a tile's would be wrong): ctx or an error
    with pytest.raises(ValueError, match="pass ctx"):
        task.normalise(x)
    with pytest.raises(DataError, match="scene context"):
        task.on_after_batch_transfer({"x": x, "y": torch.zeros(2, 16, 16).long()}, 0)
    batch = task.on_after_batch_transfer(
        {"x": x, "y": torch.zeros(2, 16, 16).long(), "ctx": own}, 0
    )
    torch.testing.assert_close(batch["x_n"], task.normalise(x, own)[0])


def test_scene_feature_without_thermal_band_adds_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Sentinel-2-like bands (no thermal band): the sample config's ``+scene`` trains as
    ``bands+indices`` would, with a warning, and its checkpoint needs no context."""
    from climdl.tasks.seg_inputs import build_inputs

    task = _task(features="bands+indices+scene")  # _spec: all reflectances
    assert not task.needs_context and task.net is not None and task.net.in_channels == 13
    with caplog.at_level("WARNING"):
        indices, context = build_inputs("bands+indices+scene", _spec(LANDSAT[:6]))
    assert indices is not None and context is None and "no thermal band" in caplog.text


def test_checkpoint_remembers_the_scene_feature() -> None:
    task = SegmentationTask(depth=2, base_filters=4, max_filters=8, features="bands+scene")
    task.build(_thermal_spec())
    assert task.spec is not None
    again = SegmentationTask.from_checkpoint(_checkpoint_of(task))
    assert again.needs_context and again.indices is None
    x = torch.rand(1, 7, 16, 16)
    x[:, 6] += 280.0
    ctx = torch.tensor([[281.0, 280.5]])
    torch.testing.assert_close(again.predict_proba(x, ctx), task.eval().predict_proba(x, ctx))


def test_checkpoint_records_the_scene_percentiles_and_refuses_others(tmp_path: Path) -> None:
    """A ``+scene`` checkpoint records the percentiles its context was computed with; one
    recorded with other percentiles is refused in one sentence (its network would silently get
    inputs it was not trained on), one without a record (older) loads."""
    from climdl import __version__
    from climdl.clouds.context import PERCENTILES
    from climdl.tasks.segmentation import load_segmenter

    task = SegmentationTask(depth=2, base_filters=4, max_filters=8, features="bands+scene")
    task.build(_thermal_spec())
    ckpt: dict[str, Any] = _checkpoint_of(task)
    ckpt["climdl"] = {**ckpt["climdl"], "version": __version__, "kind": task.KIND}
    task.on_save_checkpoint(ckpt)
    assert ckpt["climdl"]["scene_percentiles"] == list(PERCENTILES)
    path = tmp_path / "seg.ckpt"
    torch.save(ckpt, path)
    assert load_segmenter(path).needs_context
    ckpt["climdl"]["scene_percentiles"] = [90.0, 50.0]
    torch.save(ckpt, path)
    with pytest.raises(DataError, match=r"seg\.ckpt: its scene context .*\[90\.0, 50\.0\]"):
        load_segmenter(path)
    del ckpt["climdl"]["scene_percentiles"]
    torch.save(ckpt, path)
    assert load_segmenter(path).needs_context
