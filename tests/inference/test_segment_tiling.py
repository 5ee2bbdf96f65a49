"""Tiled inference: the tiles cover the scene, blending reassembles it exactly, no seams; exact
tiling (halos of the receptive radius, on the pooling grid) gives the whole scene's logits."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from climdl.errors import ConfigError
from climdl.inference.receptive import cloud_unet_radius, cloud_unet_rows
from climdl.inference.segment_tiling import (
    Predict,
    _pad_to,
    blend_window,
    plan_exact,
    plan_tiles,
    run_exact,
    run_tiled,
    tile_starts,
)
from climdl.models.blocks import BlockKind
from climdl.models.cloud_unet import CloudUNet
from tests.paths import FIXTURES

SEGMENTER = FIXTURES / "segmenter-0.1.ckpt"  # depth 2, plain blocks

K = 3


def _pointwise(x: np.ndarray) -> np.ndarray:
    """An identity-like model: per-pixel softmax of a fixed mix of the bands (no context)."""
    w = np.array([[1.0, -0.5], [0.2, 0.7], [-0.8, 0.1]], dtype=np.float32)
    logits = np.einsum("kc,bchw->bkhw", w, x)
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _tiled(
    scene: np.ndarray, predict: Predict, tile: int, overlap: int, multiple: int = 8, batch: int = 3
) -> tuple[np.ndarray, list[int]]:
    h, w = scene.shape[1:]
    grid = plan_tiles(h, w, tile, overlap, multiple)
    out, written, write = _collector(h, w)
    run_tiled(lambda a, b: scene[:, a:b], predict, grid, K, write, batch_size=batch)
    return out, written


def _collector(h: int, w: int) -> tuple[np.ndarray, list[int], Callable[[int, np.ndarray], None]]:
    """An output array, the rows written to it (in order) and the writer that fills both."""
    out = np.full((K, h, w), np.nan, dtype=np.float32)
    written: list[int] = []

    def write(y0: int, probs: np.ndarray) -> None:
        assert probs.shape[2] == w
        written.extend(range(y0, y0 + probs.shape[1]))
        out[:, y0 : y0 + probs.shape[1]] = probs

    return out, written, write


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 90),
    w=st.integers(1, 90),
    tile_units=st.integers(1, 6),
    overlap_frac=st.floats(0.0, 0.5),
    batch=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_tiling_reassembles_a_pointwise_model_exactly(
    h: int, w: int, tile_units: int, overlap_frac: float, batch: int, seed: int
) -> None:
    """Property: with a model without spatial context, tiled == whole scene, every row once."""
    tile = 8 * tile_units
    overlap = int(overlap_frac * tile)
    scene = np.random.default_rng(seed).normal(size=(2, h, w)).astype(np.float32)
    out, written = _tiled(scene, _pointwise, tile, overlap, batch=batch)
    assert written == list(range(h))  # in order, each row exactly once
    np.testing.assert_allclose(out, _pointwise(scene[None])[0], rtol=0, atol=2e-6)


@pytest.mark.parametrize(
    ("n", "tile", "overlap"), [(100, 32, 8), (32, 32, 8), (10, 32, 0), (65, 16, 0), (1000, 512, 64)]
)
def test_tile_starts_cover_with_the_overlap(n: int, tile: int, overlap: int) -> None:
    starts = tile_starts(n, tile, overlap)
    covered = np.zeros(n, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all() and starts[0] == 0 and min(starts[-1] + tile, n) == n
    for a, b in itertools.pairwise(starts):
        assert 0 < b - a <= tile - overlap


def test_blend_window_is_smooth_positive_and_one_inside() -> None:
    wnd = blend_window(64, 48, 16)
    assert wnd.min() > 0 and wnd.max() == pytest.approx(1.0)
    assert np.all(wnd[16:48, 16:32] == 1.0)
    assert np.abs(np.diff(wnd, axis=0)).max() < 0.2  # no step inside the ramp


def test_blending_removes_seams_of_a_model_with_context() -> None:
    """A 5x5 convolution with zero padding errs at tile edges; overlapping, blended tiles keep
    the tiled result close to the whole-scene one, much closer than abutting tiles."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, K, 5, padding=2)

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(conv(torch.from_numpy(x)), 1).numpy()

    rng = np.random.default_rng(1)
    base = rng.normal(size=(2, 96, 120)).astype(np.float32)
    scene = np.stack([np.cumsum(np.cumsum(b, 0), 1) / 50 for b in base]).astype(np.float32)
    whole = predict(scene[None])[0]
    abutting, _ = _tiled(scene, predict, 32, 0)
    blended, _ = _tiled(scene, predict, 32, 16)
    err_abut = np.abs(abutting - whole).max()
    err_blend = np.abs(blended - whole).max()
    assert err_blend < 0.5 * err_abut
    # seams: the largest jump between neighbouring columns is no larger than the whole scene's
    jump = np.abs(np.diff(blended, axis=2)).max()
    assert jump <= np.abs(np.diff(whole, axis=2)).max() + 0.05


@pytest.mark.parametrize(
    ("tile", "overlap", "match"),
    [(30, 4, "multiple of 8"), (0, 0, "multiple"), (32, 20, "overlap"), (32, -1, "overlap")],
)
def test_bad_tiling_options_are_refused(tile: int, overlap: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        plan_tiles(100, 100, tile, overlap, 8)


# ---------------------------------------------------------------------------- exact tiling
def _cloud_net(depth: int, block: BlockKind, seed: int = 0) -> CloudUNet:
    """A tiny CloudUNet in eval mode with BatchNorm statistics that are not the identity."""
    torch.manual_seed(seed)
    net = CloudUNet(3, K, depth=depth, base_filters=4, max_filters=8, block=block)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(0.0, 0.5)  # keeps many ReLUs open: dependencies show
    return net.eval()


def _logits(net: CloudUNet) -> Callable[[np.ndarray], np.ndarray]:
    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out: np.ndarray = net(torch.from_numpy(x)).numpy()
        return out

    return predict


def _whole_scene(net: CloudUNet, scene: np.ndarray) -> np.ndarray:
    """The network on the whole scene, padded at the bottom and right to its 2**depth as a
    single tile is."""
    m = net.size_multiple
    h, w = scene.shape[1:]
    padded = _pad_to(scene, -(-h // m) * m, -(-w // m) * m)
    return _logits(net)(padded[None])[0][:, :h, :w]


def _exact(
    net: CloudUNet, scene: np.ndarray, tile: int, batch: int
) -> tuple[np.ndarray, list[int]]:
    h, w = scene.shape[1:]
    grid = plan_exact(h, w, tile, cloud_unet_radius(net), net.size_multiple)
    out, written, write = _collector(h, w)
    run_exact(lambda a, b: scene[:, a:b], _logits(net), grid, K, write, batch_size=batch)
    return out, written


@pytest.mark.parametrize(
    ("depth", "block", "radius"),
    [
        (2, "plain", 23),
        (3, "plain", 51),
        (4, "plain", 107),
        (2, "residual", 23),
        (3, "inception", 51),
    ],
)
def test_cloud_unet_radius(depth: int, block: BlockKind, radius: int) -> None:
    """Two 3x3 convs per block at every level, pooling and the transposed convs: the radius
    roughly doubles with each level (and is the same above and below)."""
    net = CloudUNet(3, K, depth=depth, base_filters=4, max_filters=8, block=block)
    assert cloud_unet_radius(net) == (radius, radius)


@pytest.mark.parametrize(("depth", "block"), [(2, "plain"), (3, "residual")])
def test_receptive_field_is_exact(depth: int, block: BlockKind) -> None:
    """Perturbing input row i changes exactly the output rows whose computed dependence
    (:func:`cloud_unet_rows`) holds i, at every place on the pooling grid: the halo is neither
    too narrow nor wider than it must be. Max-pooling's dependence shows only where the
    perturbed pixel wins the max, so the pooling here averages (the same footprint, a
    dependence that always shows); the exact-tiling tests below keep the max. In float64, so
    that faint far dependences are not lost to rounding."""
    net = _cloud_net(depth, block).double()
    net.pool = torch.nn.AvgPool2d(2)  # type: ignore[assignment]
    m = net.size_multiple
    n = (4 + 2 * -(-cloud_unet_radius(net)[0] // m)) * m  # the middle row sees no edge
    deps = [cloud_unet_rows(net, y, y) for y in range(n)]
    x = torch.randn(1, 3, n, 8, dtype=torch.float64)
    with torch.no_grad():
        base = net(x)
        middle = n // 2 // m * m
        for i in range(middle, middle + m):
            x2 = x.clone()
            x2[:, :, i] += 10.0 * torch.randn_like(x2[:, :, i])
            changed = (net(x2) - base).abs().amax(dim=(0, 1, 3)).nonzero().flatten().tolist()
            assert changed == [y for y, (lo, hi) in enumerate(deps) if lo <= i <= hi], i


@pytest.mark.parametrize(
    ("depth", "block", "shape", "tile", "batch"),
    [
        (2, "plain", (150, 133), 80, 3),  # 5 x 5 tiles keeping 32 px; not a multiple of 4
        (2, "plain", (150, 133), 80, 1),
        (3, "residual", (75, 100), 144, 3),  # 3 x 4 tiles keeping 32 px; not a multiple of 8
        (2, "inception", (70, 300), 96, 4),  # one row of tiles, many columns
        (2, "plain", (5, 40), 64, 1),  # a scene thinner than the padding: edge padding
    ],
)
def test_exact_tiling_gives_the_whole_scene(
    depth: int, block: BlockKind, shape: tuple[int, int], tile: int, batch: int
) -> None:
    """Tiles with the receptive radius as halo, on the pooling grid, give the logits of the
    whole scene (float rounding only), every row once and in order."""
    net = _cloud_net(depth, block)
    scene = np.random.default_rng(1).normal(size=(3, *shape)).astype(np.float32)
    out, written = _exact(net, scene, tile, batch)
    assert written == list(range(shape[0]))
    np.testing.assert_allclose(out, _whole_scene(net, scene), rtol=0, atol=1e-5)


def test_exact_tiles_start_on_the_pooling_grid_and_keep_abutting_centres() -> None:
    grid = plan_exact(1000, 700, 256, (107, 107), 16)
    assert grid.halo == (112, 112) and grid.tile_h == grid.tile_w == 256
    for axis, n in ((grid.rows, 1000), (grid.cols, 700)):
        assert all(a.start % 16 == 0 and a.keep[0] >= a.start for a in axis)
        assert [r for a in axis for r in range(*a.keep)] == list(range(n))
        for a in axis:  # the halo on both sides, or the scene's (padded) edge
            assert a.keep[0] - a.start >= 107 or a.start == 0
            assert a.start + 256 - a.keep[1] >= 107 or a.start + 256 == -(-n // 16) * 16


@pytest.mark.parametrize(
    ("tile", "match"),
    [
        (64, r"--tile 64 is too small for --tiling exact: .* at least 240 .*use --tile 448"),
        (250, "multiple of 16"),
    ],
)
def test_exact_tiling_refuses_tiles_without_room(tile: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        plan_exact(1000, 1000, tile, (107, 107), 16)
    # a scene that fits in one tile needs no halo
    assert plan_exact(40, 60, 64, (107, 107), 16).n_tiles == 1


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 100 x 90 sample scene with the bands of the stored segmenter."""
    from climdl.cli import main
    from tests.clouds_harness import sample_clouds_argv

    folder = tmp_path_factory.mktemp("scene")
    assert main(sample_clouds_argv(folder, 1, (100, 90), 1)) == 0
    return next(folder.glob("*.nc"))


def test_cli_exact_tiling_equals_the_model_on_the_whole_scene(scene: Path, tmp_path: Path) -> None:
    """``climdl segment --tiling exact --tile 64`` on a 100 x 90 scene (depth 2: 24 px halo,
    16 px kept per tile, 42 tiles) writes the mask and probabilities of the model on the whole
    scene."""
    from climdl.cli import main
    from climdl.clouds.readers import open_scene
    from climdl.tasks.segmentation import load_segmenter
    from tests.argv import segment_argv

    out = tmp_path / "mask.nc"
    options = ["--tiling", "exact", "--tile", "64", "--probabilities", "--quiet"]
    assert main(segment_argv(SEGMENTER, scene, out, *options)) == 0
    task = load_segmenter(SEGMENTER)
    with open_scene(scene) as ds:
        image = ds["image"].values.astype(np.float32)
    h, w = image.shape[1:]
    padded = _pad_to(image, -(-h // 4) * 4, -(-w // 4) * 4)
    expect = task.predict_proba(torch.from_numpy(padded[None]))[0, :, :h, :w].numpy()
    with xr.open_dataset(out) as got:
        assert "exact" in got.attrs["tiling"] and got.attrs["tiling"].startswith("64x64 tiles, 42")
        # the file keeps 3 significant decimals (least_significant_digit): 2**-11 of rounding
        np.testing.assert_allclose(got["probability"].values, expect, rtol=0, atol=2**-11)
        np.testing.assert_array_equal(got["cloud_mask"].values, expect.argmax(0))


def test_cli_exact_tiling_refuses_a_small_tile(
    scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Depth 2 needs 24 px of halo on each side: a 32 px tile has no room, one sentence."""
    from climdl.cli import main
    from tests.argv import segment_argv

    out = tmp_path / "mask.nc"
    argv = segment_argv(SEGMENTER, scene, out, "--tiling", "exact", "--tile", "32", "-q")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--tile 32 is too small for --tiling exact" in err
    assert not out.exists()


def test_strip_io_reads_ahead_writes_behind_in_order_and_reports_errors() -> None:
    """Reads and writes run in one background thread in call order; a failure is raised in
    the caller, and the work queued behind it is dropped."""
    import threading

    from climdl.inference.segment_tiling import StripIO

    calls: list[tuple[str, int, str]] = []

    def read(y0: int, y1: int) -> np.ndarray:
        calls.append(("read", y0, threading.current_thread().name))
        return np.full((1, y1 - y0, 2), float(y0))

    def write(y0: int, probs: np.ndarray) -> None:
        calls.append(("write", y0, threading.current_thread().name))

    spans = [(0, 4), (4, 8), (8, 10)]
    with StripIO(read, write, spans) as io:
        for y0, _ in spans:
            assert io.strip()[0, 0, 0] == y0
            io.write(y0, np.zeros((1, 1, 2)))
    assert [(k, y) for k, y, _ in calls] == [
        ("read", 0),
        ("read", 4),
        ("write", 0),
        ("read", 8),
        ("write", 4),
        ("write", 8),
    ]
    assert {t for _, _, t in calls} != {threading.current_thread().name}  # not the caller's

    def bad_read(y0: int, y1: int) -> np.ndarray:
        if y0 == 4:
            raise OSError("disk read error")
        return np.zeros((1, y1 - y0, 2))

    with pytest.raises(OSError, match="disk read error"), StripIO(bad_read, write, spans) as io:
        io.strip()
        io.strip()

    def bad_write(y0: int, probs: np.ndarray) -> None:
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"), StripIO(read, bad_write, spans[:1]) as io:
        io.strip()
        io.write(0, np.zeros((1, 1, 2)))
