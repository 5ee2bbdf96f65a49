"""Tiled inference: the tiles cover the scene, blending reassembles it exactly, no seams."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from climdl.errors import ConfigError
from climdl.inference.segment_tiling import blend_window, plan_tiles, run_tiled, tile_starts

K = 3


def _pointwise(x: np.ndarray) -> np.ndarray:
    """An identity-like model: per-pixel softmax of a fixed mix of the bands (no context)."""
    w = np.array([[1.0, -0.5], [0.2, 0.7], [-0.8, 0.1]], dtype=np.float32)
    logits = np.einsum("kc,bchw->bkhw", w, x)
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _tiled(
    scene: np.ndarray, predict, tile: int, overlap: int, multiple: int = 8, batch: int = 3
) -> tuple[np.ndarray, list[int]]:
    h, w = scene.shape[1:]
    grid = plan_tiles(h, w, tile, overlap, multiple)
    out = np.full((K, h, w), np.nan, dtype=np.float32)
    written: list[int] = []

    def write(y0: int, probs: np.ndarray) -> None:
        assert probs.shape[2] == w
        written.extend(range(y0, y0 + probs.shape[1]))
        out[:, y0 : y0 + probs.shape[1]] = probs

    run_tiled(lambda a, b: scene[:, a:b], predict, grid, K, write, batch_size=batch)
    return out, written


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
