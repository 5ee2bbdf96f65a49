"""The scene's thermal context (:mod:`climdl.clouds.context`): percentiles of the whole scene's
brightness temperature from a bounded subsample, the same at training and in ``segment``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from climdl.clouds import context as C
from climdl.clouds.batches import CropDataset, PadCollate, SceneDataset
from climdl.clouds.readers import open_scene
from climdl.clouds.scene import LANDSAT_BANDS, SENTINEL2_SAMPLE_BANDS
from climdl.clouds.training_scenes import scene_sources
from climdl.inference.segment_context import segment_context


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two 70 x 90 Landsat sample scenes."""
    from climdl.cli import main
    from tests.clouds_harness import sample_clouds_argv

    folder = tmp_path_factory.mktemp("scenes")
    assert main(sample_clouds_argv(folder, 2, (90, 70), 5)) == 0
    return sorted(folder.glob("*.nc"))


def test_stride_bounds_the_subsample() -> None:
    assert C.context_stride(100, 100, 10_000) == 1
    assert C.context_stride(100, 100, 9_999) == 2
    for h, w, m in [(10_980, 10_980, C.MAX_PIXELS), (7_000, 300, 1_000), (5, 3, 1)]:
        s = C.context_stride(h, w, m)
        assert -(-h // s) * -(-w // s) <= m
        assert s == 1 or -(-h // (s - 1)) * -(-w // (s - 1)) > m  # the smallest such step


def test_percentiles_of_valid_pixels_only() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((7, 30, 40)).astype(np.float32)
    image[6] = 250.0 + 50.0 * rng.random((30, 40))
    image[2, :5] = np.nan  # no data in one band: the pixel is left out
    ctx = C.scene_context(image, LANDSAT_BANDS)
    expect = np.percentile(image[6, 5:].astype(np.float64), C.PERCENTILES)
    np.testing.assert_allclose(ctx, expect.astype(np.float32))
    assert ctx.dtype == np.float32 and ctx.shape == (len(C.PERCENTILES),)
    assert np.isnan(C.scene_context(np.full((7, 4, 4), np.nan, np.float32), LANDSAT_BANDS)).all()
    # no thermal band (Sentinel-2): no context
    assert C.thermal_band(SENTINEL2_SAMPLE_BANDS) is None
    assert C.scene_context(image, SENTINEL2_SAMPLE_BANDS).shape == (0,)


def test_strided_reads_take_the_same_pixels_whatever_the_reader(
    scenes: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of sampled rows from the lazily opened file (segment's way) and from memory
    (training's way) give the same numbers, and the subsample's percentiles are those of
    ``[::s, ::s]``."""
    monkeypatch.setattr(C, "_ROWS_PER_READ", 3)  # several blocks per scene
    with open_scene(scenes[0]) as ds:
        image = ds["image"].values.astype(np.float32)
        lazy = ds["image"].transpose("band", "y", "x")
        h, w = image.shape[1:]
        from_file = C.read_context(
            lambda r, c: lazy.isel(y=r, x=c).values.astype(np.float32), h, w, 6, 500
        )
    in_memory = C.read_context(lambda r, c: image[:, r, c], h, w, 6, 500)
    s = C.context_stride(h, w, 500)
    assert s > 1
    sub = image[:, ::s, ::s]
    ok = np.isfinite(sub).all(0)
    expect = np.percentile(sub[6][ok].astype(np.float64), C.PERCENTILES).astype(np.float32)
    np.testing.assert_array_equal(from_file, in_memory)
    np.testing.assert_array_equal(in_memory, expect)


def test_training_and_segment_compute_the_same_context(scenes: list[Path]) -> None:
    """A scene's context is the same read from its file, from memory, in every training crop,
    in the validation batch and in ``segment`` (the whole scene, before its tiles)."""
    on_disk = scene_sources(None, "netcdf", [str(p) for p in scenes])
    loaded = scene_sources(None, "netcdf", [str(p) for p in scenes])
    for s in loaded:
        s.load()
    for a, b, path in zip(on_disk, loaded, scenes, strict=True):
        with open_scene(path) as ds:
            image = ds["image"].transpose("band", "y", "x")
            seg = segment_context(image, LANDSAT_BANDS, "y", "x", torch.device("cpu"))
            whole = C.scene_context(image.values.astype(np.float32), LANDSAT_BANDS)
        np.testing.assert_array_equal(a.context(), b.context())
        np.testing.assert_array_equal(b.context(), whole)
        np.testing.assert_array_equal(seg[0].numpy(), whole)
        assert np.isfinite(whole).all() and whole[0] >= whole[1]  # p82.5 >= p50
    crops = CropDataset(loaded, 32, seed=0)
    batch = PadCollate(8)([crops[i] for i in range(6)])
    assert batch["ctx"].shape == (6, len(C.PERCENTILES))
    contexts = {tuple(s.context()) for s in loaded}
    assert {tuple(row.tolist()) for row in batch["ctx"]} <= contexts  # the scene's, not the crop's
    val = PadCollate(32)([SceneDataset(loaded)[i] for i in range(2)])
    np.testing.assert_array_equal(val["ctx"].numpy(), np.stack([s.context() for s in loaded]))
