"""Tiling of a scene for ``climdl segment``: tile windows, blending weights, and the row-by-row
blend of tile predictions.

The scene is cut into overlapping tiles (:class:`TileGrid`); each tile's class probabilities are
weighted by a smooth window that falls towards the tile's edges (:func:`blend_window`) and
summed, and the sum is divided by the summed weights, so overlapping predictions blend without
seams and a pixel covered by one tile keeps exactly that tile's prediction. The work proceeds one
row of tiles at a time (:func:`run_tiled`): the input is read a strip of ``tile`` rows at a time,
and the rows that no later tile touches are handed on at once, so memory is proportional to
``tile x width``, never to the scene.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from climdl.errors import ConfigError

Predict = Callable[[np.ndarray], np.ndarray]
"""``[B, C, h, w]`` float32 tiles -> ``[B, K, h, w]`` class probabilities."""


# ---------------------------------------------------------------------------- tiling
def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``0..n`` with at least ``overlap``
    shared pixels between neighbours; the last tile ends at ``n`` (one tile if ``n <= tile``)."""
    if n <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, n - tile, stride))
    starts.append(n - tile)
    return sorted(set(starts))


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of a ``height x width`` scene lie.

    ``tile_h``/``tile_w`` are the network's input size: the requested tile, or the scene side
    rounded up to ``multiple`` when the scene is smaller (the tile is then padded by reflection).
    """

    height: int
    width: int
    tile_h: int
    tile_w: int
    overlap: int
    rows: tuple[int, ...] = field(init=False)
    cols: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(tile_starts(self.height, self.tile_h, self.overlap)))
        object.__setattr__(self, "cols", tuple(tile_starts(self.width, self.tile_w, self.overlap)))

    @property
    def n_tiles(self) -> int:
        """Number of tiles."""
        return len(self.rows) * len(self.cols)

    def windows(self) -> Iterator[tuple[int, int]]:
        """``(row, col)`` starts of every tile, row by row."""
        for r in self.rows:
            for c in self.cols:
                yield r, c


def plan_tiles(height: int, width: int, tile: int, overlap: int, multiple: int) -> TileGrid:
    """Check the tiling options against the network and lay out the tiles."""
    if tile < multiple or tile % multiple:
        raise ConfigError(
            f"--tile must be a positive multiple of {multiple} (the network's "
            f"2**depth), got {tile}; try {max(multiple, tile // multiple * multiple)}."
        )
    if overlap < 0 or 2 * overlap > tile:
        raise ConfigError(
            f"--overlap must be between 0 and half the tile ({tile // 2}), got {overlap}."
        )
    tile_h = min(tile, -(-height // multiple) * multiple)
    tile_w = min(tile, -(-width // multiple) * multiple)
    return TileGrid(height, width, tile_h, tile_w, min(overlap, tile_h // 2, tile_w // 2))


def _ramp(n: int, overlap: int) -> np.ndarray:
    if overlap <= 0:
        return np.ones(n, dtype=np.float32)
    i = np.arange(n, dtype=np.float64)
    edge = np.minimum(i + 0.5, n - i - 0.5) / overlap
    w: np.ndarray = np.sin(0.5 * np.pi * np.clip(edge, 0.0, 1.0)) ** 2
    return w.astype(np.float32)


def blend_window(tile_h: int, tile_w: int, overlap: int) -> np.ndarray:
    """``[tile_h, tile_w]`` blending weights: 1 inside, a sine-squared ramp over ``overlap``
    pixels at each edge, never zero (so every pixel has weight)."""
    return np.outer(_ramp(tile_h, overlap), _ramp(tile_w, overlap))


def _pad_to(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Pad the last two axes to ``h x w`` by reflection (edge values for tiny inputs)."""
    ph, pw = h - a.shape[-2], w - a.shape[-1]
    if ph <= 0 and pw <= 0:
        return a
    pad = [(0, 0)] * (a.ndim - 2) + [(0, max(ph, 0)), (0, max(pw, 0))]
    if ph < a.shape[-2] and pw < a.shape[-1]:
        return np.pad(a, pad, mode="reflect")
    return np.pad(a, pad, mode="edge")


def run_tiled(
    read_rows: Callable[[int, int], np.ndarray],
    predict: Predict,
    grid: TileGrid,
    n_classes: int,
    write_rows: Callable[[int, np.ndarray], None],
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Blend tile predictions into full rows and hand them on as soon as they are final.

    ``read_rows(y0, y1)`` gives the input ``[C, y1 - y0, width]``; ``write_rows(y0, probs)``
    receives ``[K, rows, width]`` blended probabilities for rows ``y0..y0 + rows``, in order and
    each row once. Memory: one strip of input and ``K x tile_h x width`` accumulators.
    """
    th, tw, w = grid.tile_h, grid.tile_w, grid.width
    weights = blend_window(th, tw, grid.overlap)
    acc = np.zeros((n_classes, th, w), dtype=np.float32)
    wsum = np.zeros((th, w), dtype=np.float32)
    buf0 = 0  # scene row of the accumulators' first row
    done = 0
    for ri, y0 in enumerate(grid.rows):
        y1 = min(y0 + th, grid.height)
        strip = read_rows(y0, y1)
        tiles: list[np.ndarray] = []
        places: list[int] = []
        for x0 in grid.cols:
            tiles.append(_pad_to(strip[:, :, x0 : x0 + tw], th, tw))
            places.append(x0)
        for b in range(0, len(tiles), batch_size):
            probs = predict(np.stack(tiles[b : b + batch_size]))
            for p, x0 in zip(probs, places[b : b + batch_size], strict=True):
                hh, ww = y1 - y0, min(tw, w - x0)
                wt = weights[:hh, :ww]
                acc[:, y0 - buf0 : y0 - buf0 + hh, x0 : x0 + ww] += p[:, :hh, :ww] * wt
                wsum[y0 - buf0 : y0 - buf0 + hh, x0 : x0 + ww] += wt
            done += len(probs)
            if progress is not None:
                progress(done, grid.n_tiles)
        nxt = grid.rows[ri + 1] if ri + 1 < len(grid.rows) else grid.height
        n_final = nxt - buf0
        write_rows(buf0, (acc[:, :n_final] / wsum[None, :n_final]).astype(np.float32))
        acc = np.roll(acc, -n_final, axis=1)
        wsum = np.roll(wsum, -n_final, axis=0)
        acc[:, th - n_final :] = 0.0
        wsum[th - n_final :] = 0.0
        buf0 = nxt
