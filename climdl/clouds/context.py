"""A scene's thermal context: robust percentiles of its brightness temperature, over the whole scene.

Fmask (Zhu & Woodcock 2012) does not call a pixel cold in absolute terms: it compares its
brightness temperature with percentiles of the scene's own clear-sky temperatures, so that a
cirrus veil over a warm desert and the clear ground of a cold plateau are told apart. A CNN
trained on crops and run on tiles never sees the whole scene, so it cannot learn that context
by itself (bench/RESULTS.md, issue 18: a per-pixel probe gained any-cloud IoU 0.930 -> 0.977
from it). This module computes it once per scene, before any crop or tile is cut, by one
computation used in both places:

* training (:mod:`climdl.clouds.batches`): :func:`scene_context` of the scene in memory (or
  read through its :class:`~climdl.clouds.training_scenes.SceneSource`);
* ``climdl segment`` (:mod:`climdl.inference.segment_context`): :func:`read_context` over the
  lazily opened scene, before the tiles.

Both take the same pixels: every ``stride``-th row and column (:func:`context_stride`: at most
:data:`MAX_PIXELS`), read a block of sampled rows at a time (memory is flat in scene size), and
keep the brightness temperatures of pixels with data in every band. The context is the
:data:`PERCENTILES` of those temperatures (K, float32), NaN for a scene without valid pixels.
A scene without a thermal band (Sentinel-2) has no context: :func:`thermal_band` is None.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from climdl.clouds.scene import Band
from climdl.errors import DataError

__all__ = [
    "MAX_PIXELS",
    "PERCENTILES",
    "check_scene_percentiles",
    "context_stride",
    "read_context",
    "scene_context",
    "thermal_band",
]

PERCENTILES: tuple[float, ...] = (82.5, 50.0)
"""Percentiles of the scene's brightness temperature that make its context: the warm end of
the scene (Fmask's clear-sky reference, 82.5) and its median. Part of the definition of the
``scene`` feature of :class:`~climdl.tasks.segmentation.SegmentationTask`: changing them
changes what trained checkpoints expect."""

MAX_PIXELS = 2**21
"""At most this many pixels (~2 M) are sampled: percentiles of a regular subsample of that
size are within a few hundredths of a kelvin of the whole scene's. Memory is bounded by the
subsample; time is not a fraction of the scene's for compressed files, whose every chunk the
strided rows touch (a scene NetCDF's 512 x 512 chunks are all decompressed once more)."""

_ROWS_PER_READ = 64
"""Sampled rows taken per read: memory is ``bands x 64 x width / stride`` values at a time."""

Reader = Callable[[slice, slice], np.ndarray]
"""``read(rows, cols)``: the ``[C, rows, cols]`` float image of a (strided) window."""


def thermal_band(bands: Sequence[Band]) -> int | None:
    """Index of the first thermal band (units K) among ``bands``, or None (no context)."""
    for i, b in enumerate(bands):
        if b.thermal:
            return i
    return None


def context_stride(height: int, width: int, max_pixels: int = MAX_PIXELS) -> int:
    """The smallest step ``s`` whose subsample ``[::s, ::s]`` has at most ``max_pixels``."""
    s = 1
    while -(-height // s) * -(-width // s) > max_pixels:
        s += 1
    return s


def read_context(
    read: Reader, height: int, width: int, thermal: int, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """The :data:`PERCENTILES` (K, float32) of the thermal band ``thermal`` over the pixels
    ``[::s, ::s]`` of a ``height x width`` scene that have data in every band.

    Args:
        read: ``read(rows, cols)`` -> ``[C, rows, cols]`` (strided slices of the scene).
        height: scene rows.
        width: scene columns.
        thermal: the thermal band's index in what ``read`` returns.
        max_pixels: the subsample's size limit (:func:`context_stride`).

    Returns:
        ``[len(PERCENTILES)]`` float32; NaN when no pixel has data.
    """
    s = context_stride(height, width, max_pixels)
    cols = slice(0, width, s)
    values: list[np.ndarray] = []
    block = s * _ROWS_PER_READ
    for y0 in range(0, height, block):
        a = np.asarray(read(slice(y0, min(y0 + block, height), s), cols))
        ok = np.isfinite(a).all(axis=0)
        values.append(a[thermal][ok].astype(np.float64))
    v = np.concatenate(values) if values else np.zeros(0)
    if v.size == 0:
        return np.full(len(PERCENTILES), np.nan, np.float32)
    out: np.ndarray = np.percentile(v, PERCENTILES).astype(np.float32)
    return out


def scene_context(image: np.ndarray, bands: Sequence[Band]) -> np.ndarray:
    """The context of a whole scene in memory ``[C, H, W]`` (:func:`read_context`); an empty
    vector for a scene without a thermal band."""
    t = thermal_band(bands)
    if t is None:
        return np.zeros(0, np.float32)
    h, w = image.shape[-2:]
    return read_context(lambda rows, cols: image[:, rows, cols], h, w, t)


def check_scene_percentiles(recorded: Any) -> None:
    """Refuse a checkpoint whose scene context was defined by other percentiles than this
    version's :data:`~climdl.clouds.context.PERCENTILES`: its network would get inputs it was
    not trained on, with no error. Checkpoints that record none predate the record and used
    the same (82.5, 50)."""
    if recorded is None:
        return
    try:
        same = [float(p) for p in recorded] == [float(p) for p in PERCENTILES]
    except (TypeError, ValueError):
        same = False
    if not same:
        raise DataError(
            f"its scene context is the brightness temperature's percentiles {recorded!r}, this "
            f"climdl computes {list(PERCENTILES)}; use the climdl version that trained it, "
            "or retrain."
        )
