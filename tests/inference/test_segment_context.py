"""``climdl segment`` with a checkpoint that reads the scene's thermal context
(``features: bands+indices+scene``): the context of the whole scene, computed before the
tiles, gives tiled output equal to the model on the whole scene; a scene without a thermal
band is refused in one sentence; old checkpoints are untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr

from climdl import __version__
from climdl.cli import main
from climdl.clouds.context import scene_context
from climdl.clouds.readers import open_scene
from climdl.clouds.scene import LANDSAT_BANDS, NODATA
from climdl.clouds.spec import SegmenterSpec
from climdl.tasks.segmentation import SegmentationTask, load_segmenter
from tests.argv import segment_argv
from tests.clouds_harness import sample_clouds_argv
from tests.paths import FIXTURES


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 100 x 90 Landsat scene, a Sentinel-2 scene and a tiny (untrained, seeded) depth-2
    checkpoint with ``features: bands+indices+scene``."""
    root = tmp_path_factory.mktemp("ctx")
    assert main(sample_clouds_argv(root / "l8", 1, (90, 100), 1)) == 0
    s2 = sample_clouds_argv(root / "s2", 1, (40, 40), 1)
    assert main([*s2, "--sensor", "sentinel2"]) == 0
    scene = next((root / "l8").glob("*.nc"))
    with open_scene(scene) as ds:
        image = ds["image"].values.astype(np.float64)
    n = len(LANDSAT_BANDS)
    spec = SegmenterSpec(
        bands=tuple(b.name for b in LANDSAT_BANDS),
        wavelengths=tuple(b.wavelength for b in LANDSAT_BANDS),
        band_units=tuple(b.units for b in LANDSAT_BANDS),
        classes=("clear", "cloud", "thin_cloud", "cloud_shadow", "snow"),
        mean=torch.tensor(np.nanmean(image.reshape(n, -1), 1), dtype=torch.float32),
        std=torch.tensor(np.nanstd(image.reshape(n, -1), 1), dtype=torch.float32),
        class_counts=torch.tensor([5.0, 2.0, 1.0, 1.0, 1.0]),
        ignore_index=NODATA,
    )
    torch.manual_seed(0)
    task = SegmentationTask(depth=2, base_filters=4, max_filters=8, features="bands+indices+scene")
    task.build(spec)
    ckpt = root / "scene-context.ckpt"
    meta = {"spec": spec.to_dict(), "version": __version__, "kind": "cloud_segmentation"}
    state = {"hyper_parameters": dict(task.hparams), "climdl": meta}
    torch.save({**state, "state_dict": task.state_dict()}, ckpt)
    return {"scene": scene, "s2": next((root / "s2").glob("*.nc")), "ckpt": ckpt}


def _whole(task: SegmentationTask, image: np.ndarray, ctx: np.ndarray | None) -> np.ndarray:
    """The model's probabilities on the whole scene, padded as one tile is."""
    from climdl.inference.segment_tiling import _pad_to

    h, w = image.shape[1:]
    m = task.size_multiple
    padded = _pad_to(image, -(-h // m) * m, -(-w // m) * m)
    c = None if ctx is None else torch.from_numpy(ctx)[None]
    return task.predict_proba(torch.from_numpy(padded[None]), c)[0, :, :h, :w].numpy()


def test_tiles_see_the_whole_scenes_context(files: dict[str, Path], tmp_path: Path) -> None:
    """Exact tiles (42 of them, each far smaller than the scene) give the model on the whole
    scene with the whole scene's context; one big tile gives the same."""
    task = load_segmenter(files["ckpt"])
    assert task.needs_context and task.net is not None and task.net.in_channels == 7 + 6 + 2
    with open_scene(files["scene"]) as ds:
        image = ds["image"].values.astype(np.float32)
    ctx = scene_context(image, LANDSAT_BANDS)
    expect = _whole(task, image, ctx)
    # no silent fallback: a tile cannot compute its scene's context, so none given is an error;
    # whole_scene_context is the same computation for callers that hold whole scenes
    from climdl.tasks.seg_inputs import whole_scene_context

    part = image[:, :88, :88]
    with pytest.raises(ValueError, match="pass ctx"):
        task.predict_proba(torch.from_numpy(part[None]))
    assert task.spec is not None
    np.testing.assert_array_equal(
        whole_scene_context(torch.from_numpy(part[None]), task.spec)[0].numpy(),
        scene_context(part, LANDSAT_BANDS),
    )
    for opts in (["--tiling", "exact", "--tile", "64"], ["--tile", "128"]):
        out = tmp_path / f"mask{len(opts)}.nc"
        argv = segment_argv(files["ckpt"], files["scene"], out, *opts, "--probabilities", "-q")
        assert main(argv) == 0
        with xr.open_dataset(out) as got:
            # the file keeps 3 significant decimals (least_significant_digit): 2**-11 of rounding
            np.testing.assert_allclose(got["probability"].values, expect, rtol=0, atol=2**-11)
            np.testing.assert_array_equal(got["cloud_mask"].values, expect.argmax(0))
    # a context that is not the scene's changes the result: the channels are used
    other = _whole(task, image, ctx - 10.0)
    assert np.abs(other - expect).max() > 1e-4


def test_a_scene_without_thermal_band_is_refused(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(segment_argv(files["ckpt"], files["s2"], tmp_path / "m.nc", "-q"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "thermal band 'tir'" in err and "bands+indices" in err, err
    assert not (tmp_path / "m.nc").exists()


def test_old_checkpoints_read_no_context() -> None:
    """A climdl 0.1 checkpoint (no ``features``: bands only) builds and predicts as before:
    no context channels, a context given is ignored."""
    task = load_segmenter(FIXTURES / "segmenter-0.1.ckpt")
    assert task.hp.features == "bands" and not task.needs_context and task.indices is None
    assert task.spec is not None
    x = torch.rand(1, len(task.spec.bands), 16, 16)
    torch.testing.assert_close(task.predict_proba(x), task.predict_proba(x, torch.zeros(1, 2)))


def test_sensitivity_attacks_under_the_whole_scenes_context(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``climdl sensitivity`` predicts every tile, perturbed or not, with the whole scene's
    context (the one ``segment`` uses), held fixed under the perturbations; a scene without
    the thermal band is refused as ``segment`` refuses it."""
    from climdl.errors import DataError
    from climdl.sensitivity.segmenter import run_segmenter_sensitivity

    with open_scene(files["scene"]) as ds:
        expect = scene_context(ds["image"].values.astype(np.float32), LANDSAT_BANDS)
    seen: list[torch.Tensor] = []
    real = SegmentationTask.normalise

    def spy(self: SegmentationTask, x: torch.Tensor, ctx: torch.Tensor | None = None) -> object:
        assert ctx is not None and ctx.shape == (x.shape[0], 2)
        seen.append(ctx.detach().cpu())
        return real(self, x, ctx)

    monkeypatch.setattr(SegmentationTask, "normalise", spy)
    opts: dict[str, Any] = {"pgd_steps": 1, "random_draws": 1, "ig_steps": 2, "tile": 64}
    res = run_segmenter_sensitivity(files["ckpt"], files["scene"], out_dir=tmp_path, **opts)
    assert res.path.exists() and len(seen) > 4
    for ctx in seen:
        np.testing.assert_array_equal(ctx.numpy(), np.broadcast_to(expect, ctx.shape))
    with pytest.raises(DataError, match="thermal band 'tir'"):
        run_segmenter_sensitivity(files["ckpt"], files["s2"], out_dir=tmp_path / "s2", **opts)
