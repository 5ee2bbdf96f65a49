"""Tiling of a scene for ``climdl segment``: tile windows, blending weights, the row-by-row
blend of tile predictions, and exact tiling with halos.

Two ways to cut a scene (``--tiling``):

* ``blend`` (the default, :func:`plan_tiles`, :func:`run_tiled`): overlapping tiles whose
  predictions are blended; close to the whole scene's, not equal to it near tile edges.
* ``exact`` (:func:`plan_exact`, :func:`run_exact`): each tile keeps only its centre, whose
  distance to the tile's edges is at least the network's receptive radius, and tiles start on
  the network's pooling grid (multiples of ``2**depth``), so every kept pixel sees exactly what
  it sees in the whole scene: the result is the network on the whole scene (padded at the
  bottom and right to a multiple of ``2**depth`` as a single tile would be), within float
  rounding. It costs more tiles, since the halo is computed and dropped.

Blending: the scene is cut into overlapping tiles (:class:`TileGrid`); each tile's class
probabilities are weighted by a smooth window that falls towards the tile's edges
(:func:`blend_window`) and summed, and the sum is divided by the summed weights, so overlapping
predictions blend without seams and a pixel covered by one tile keeps exactly that tile's
prediction. Both ways proceed one row of tiles at a time: the input is read a strip of ``tile``
rows at a time, and the rows that no later tile touches are handed on at once, so memory is
proportional to ``tile x width``, never to the scene.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

import numpy as np

from climdl.errors import ConfigError

Predict = Callable[[np.ndarray], np.ndarray]
"""``[B, C, h, w]`` float32 tiles -> ``[B, K, h, w]`` class probabilities."""

Tiling = Literal["blend", "exact"]
"""How ``climdl segment`` cuts a scene: blended overlapping tiles, or exact tiles with halos."""


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

    def describe(self) -> str:
        """One line for the output's attributes."""
        return (
            f"{self.tile_h}x{self.tile_w} tiles, overlap {self.overlap}, {self.n_tiles} tiles, "
            "sine-squared blending"
        )


def _check_tile(tile: int, multiple: int) -> None:
    if tile < multiple or tile % multiple:
        raise ConfigError(
            f"--tile must be a positive multiple of {multiple} (the network's "
            f"2**depth), got {tile}; try {max(multiple, tile // multiple * multiple)}."
        )


def plan_tiles(height: int, width: int, tile: int, overlap: int, multiple: int) -> TileGrid:
    """Check the tiling options against the network and lay out the tiles."""
    _check_tile(tile, multiple)
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


class StripIO:
    """The scene's reads and the mask's writes, in one background thread, while the caller runs
    the network: the next strip is read as soon as the last one is taken, and finished rows are
    written in order behind the computation (at most :attr:`MAX_PENDING` strip waits). Only
    that thread touches the files (HDF5 and GDAL are not thread-safe), and it runs the calls in
    the order they were made; an error in either is raised by the next :meth:`strip` or
    :meth:`write`, or by leaving the context, which drops the queued work on failure.

    Args:
        read_rows: ``read_rows(y0, y1)``, the input ``[C, y1 - y0, width]``.
        write_rows: ``write_rows(y0, probs)``, called with each :meth:`write`'s arguments.
        spans: the ``(y0, y1)`` of every strip, in the order they will be taken.
    """

    MAX_PENDING = 1

    def __init__(
        self,
        read_rows: Callable[[int, int], np.ndarray],
        write_rows: Callable[[int, np.ndarray], None],
        spans: list[tuple[int, int]],
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="climdl-segment-io")
        self._read, self._write_rows, self._spans = read_rows, write_rows, spans
        self._taken = 0
        self._next: Future[np.ndarray] | None = (
            self._pool.submit(read_rows, *spans[0]) if spans else None
        )
        self._writes: list[Future[None]] = []

    def strip(self) -> np.ndarray:
        """The next strip's input (read ahead), and the read of the one after it started."""
        assert self._next is not None, "every strip was taken"
        out = self._next.result()
        self._taken += 1
        more = self._taken < len(self._spans)
        self._next = self._pool.submit(self._read, *self._spans[self._taken]) if more else None
        return out

    def write(self, y0: int, probs: np.ndarray) -> None:
        """Queue ``write_rows(y0, probs)`` (``probs`` must not change afterwards)."""
        while self._writes and (self._writes[0].done() or len(self._writes) >= self.MAX_PENDING):
            self._writes.pop(0).result()
        self._writes.append(self._pool.submit(self._write_rows, y0, probs))

    def __enter__(self) -> StripIO:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            return
        try:
            for f in self._writes:
                f.result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def block_rows(grid: TileGrid | ExactGrid, blocks: range) -> tuple[int, int]:
    """The scene rows ``(y0, y1)`` that the row blocks ``blocks`` deliver.

    Block ``i`` of a :class:`TileGrid` is the rows made final by its ``i``-th row of tiles
    (from that row's start to the next row's); of an :class:`ExactGrid`, the kept centre of
    its ``i``-th row of tiles. Consecutive blocks abut, and all of them cover the scene once.
    """
    if isinstance(grid, ExactGrid):
        return grid.rows[blocks.start].keep[0], grid.rows[blocks.stop - 1].keep[1]
    ends = (*grid.rows[1:], grid.height)
    return (0 if blocks.start == 0 else grid.rows[blocks.start]), ends[blocks.stop - 1]


def split_blocks(n_blocks: int, parts: int) -> list[range]:
    """``n_blocks`` row blocks in ``parts`` contiguous, near-equal ranges (some may be empty
    when there are fewer blocks than parts), in scene order."""
    bounds = [i * n_blocks // parts for i in range(parts + 1)]
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


def run_tiled(
    read_rows: Callable[[int, int], np.ndarray],
    predict: Predict,
    grid: TileGrid,
    n_classes: int,
    write_rows: Callable[[int, np.ndarray], None],
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    blocks: range | None = None,
) -> None:
    """Blend tile predictions into full rows and hand them on as soon as they are final.

    ``read_rows(y0, y1)`` gives the input ``[C, y1 - y0, width]``; ``write_rows(y0, probs)``
    receives ``[K, rows, width]`` blended probabilities for rows ``y0..y0 + rows``, in order and
    each row once. Both run in :class:`StripIO`'s thread, beside the network. Memory: two
    strips of input, ``K x tile_h x width`` accumulators and the rows waiting to be written.

    ``blocks`` (one rank's share, :func:`split_blocks`) delivers only those row blocks
    (:func:`block_rows`). It starts at the first row of tiles that reaches into them, so that
    every delivered pixel sums the same tiles in the same order as a run over the whole scene:
    the values are identical, bit for bit, at the cost of recomputing the rows of tiles that
    overlap the previous share.
    """
    th, tw, w = grid.tile_h, grid.tile_w, grid.width
    weights = blend_window(th, tw, grid.overlap)
    acc = np.zeros((n_classes, th, w), dtype=np.float32)
    wsum = np.zeros((th, w), dtype=np.float32)
    keep = blocks if blocks is not None else range(len(grid.rows))
    if not keep:
        return
    first_row = block_rows(grid, keep)[0]
    first = next(i for i, r in enumerate(grid.rows) if r + th > first_row)
    first = min(first, keep.start)
    todo = range(first, keep.stop)
    buf0 = grid.rows[first] if first > 0 else 0  # scene row of the accumulators' first row
    done = 0
    total = len(todo) * len(grid.cols)
    spans = [(grid.rows[i], min(grid.rows[i] + th, grid.height)) for i in todo]
    with StripIO(read_rows, write_rows, spans) as io:
        for ri, (y0, y1) in zip(todo, spans, strict=True):
            strip = io.strip()
            tiles = [_pad_to(strip[:, :, x0 : x0 + tw], th, tw) for x0 in grid.cols]
            for b in range(0, len(tiles), batch_size):
                probs = predict(np.stack(tiles[b : b + batch_size]))
                for p, x0 in zip(probs, grid.cols[b : b + batch_size], strict=True):
                    hh, ww = y1 - y0, min(tw, w - x0)
                    wt = weights[:hh, :ww]
                    acc[:, y0 - buf0 : y0 - buf0 + hh, x0 : x0 + ww] += p[:, :hh, :ww] * wt
                    wsum[y0 - buf0 : y0 - buf0 + hh, x0 : x0 + ww] += wt
                done += len(probs)
                if progress is not None:
                    progress(done, total)
            nxt = grid.rows[ri + 1] if ri + 1 < len(grid.rows) else grid.height
            n_final = nxt - buf0
            if ri in keep:
                io.write(buf0, (acc[:, :n_final] / wsum[None, :n_final]).astype(np.float32))
            acc = np.roll(acc, -n_final, axis=1)
            wsum = np.roll(wsum, -n_final, axis=0)
            acc[:, th - n_final :] = 0.0
            wsum[th - n_final :] = 0.0
            buf0 = nxt


# ---------------------------------------------------------------------------- exact tiling
@dataclass(frozen=True)
class AxisWindow:
    """One tile's extent along an axis.

    Attributes:
        start: first pixel of the tile (the network's input) in the padded scene.
        keep: ``(start, stop)`` of the pixels the tile delivers (its centre), in scene
            coordinates, clipped to the scene.
    """

    start: int
    keep: tuple[int, int]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _axis_windows(n: int, tile: int, halo: tuple[int, int], multiple: int) -> list[AxisWindow]:
    """Tiles of ``tile`` pixels (or the whole padded axis, if shorter) over an axis of ``n``
    pixels, whose kept centres abut and lie ``halo`` pixels from the tile's inner edges."""
    padded = _round_up(n, multiple)
    if padded <= tile:
        return [AxisWindow(0, (0, n))]
    core = tile - halo[0] - halo[1]
    out: list[AxisWindow] = []
    for a in range(0, n, core):
        start = min(max(a - halo[0], 0), padded - tile)
        out.append(AxisWindow(start, (a, min(a + core, n))))
    return out


@dataclass(frozen=True)
class ExactGrid:
    """Where the exact tiles of a ``height x width`` scene lie.

    Attributes:
        height: scene rows.
        width: scene columns.
        tile_h: rows of every tile (the scene's rows rounded up to ``multiple`` if fewer).
        tile_w: columns of every tile (likewise).
        radius: ``(before, after)``: the network's receptive radius in pixels.
        halo: ``(before, after)`` pixels of halo: ``radius`` rounded up to ``multiple``.
        multiple: the network's ``2**depth``; tiles start on multiples of it.
        rows: the tiles' extents along y.
        cols: the tiles' extents along x.
        edge_mode: how the scene is padded to a multiple of ``multiple`` (``reflect``, or
            ``edge`` for scenes thinner than the padding): as for a single whole-scene tile.
    """

    height: int
    width: int
    tile_h: int
    tile_w: int
    radius: tuple[int, int]
    halo: tuple[int, int]
    multiple: int
    rows: tuple[AxisWindow, ...]
    cols: tuple[AxisWindow, ...]
    edge_mode: Literal["reflect", "edge"]

    @property
    def n_tiles(self) -> int:
        """Number of tiles."""
        return len(self.rows) * len(self.cols)

    def describe(self) -> str:
        """One line for the output's attributes."""
        return (
            f"{self.tile_h}x{self.tile_w} tiles, {self.n_tiles} tiles, exact: a halo of "
            f"{self.halo[0]}/{self.halo[1]} px (the receptive radius {self.radius[0]}/"
            f"{self.radius[1]} px on the pooling grid) computed and cropped"
        )


def plan_exact(
    height: int, width: int, tile: int, radius: tuple[int, int], multiple: int
) -> ExactGrid:
    """Lay out exact tiles: kept centres that abut, each ``radius`` (rounded up to
    ``multiple``) from its tile's inner edges, tiles on the pooling grid.

    Args:
        height: scene rows.
        width: scene columns.
        tile: tile side (the network's input), a multiple of ``multiple``.
        radius: ``(before, after)``: the network's receptive radius
            (:func:`climdl.inference.receptive.cloud_unet_radius`); the same on both axes.
        multiple: the network's ``2**depth``.

    Raises:
        ConfigError: a tile that is not a multiple of ``multiple``, or too small to keep
            anything beside its halo (when the scene does not fit in one tile).
    """
    _check_tile(tile, multiple)
    halo = (_round_up(radius[0], multiple), _round_up(radius[1], multiple))
    least = halo[0] + halo[1] + multiple
    if tile < least and max(_round_up(height, multiple), _round_up(width, multiple)) > tile:
        raise ConfigError(
            f"--tile {tile} is too small for --tiling exact: the network sees "
            f"{max(radius)} pixels around each pixel, so a tile needs at least {least} "
            f"pixels ({halo[0]} + {halo[1]} of halo and {multiple} kept); use --tile "
            f"{_round_up(max(least, 2 * (halo[0] + halo[1])), multiple)} or more."
        )
    ph, pw = _round_up(height, multiple) - height, _round_up(width, multiple) - width
    mode: Literal["reflect", "edge"] = "reflect" if ph < height and pw < width else "edge"
    return ExactGrid(
        height,
        width,
        min(tile, _round_up(height, multiple)),
        min(tile, _round_up(width, multiple)),
        radius,
        halo,
        multiple,
        tuple(_axis_windows(height, tile, halo, multiple)),
        tuple(_axis_windows(width, tile, halo, multiple)),
        mode,
    )


def _pad_axis(a: np.ndarray, axis: int, size: int, mode: Literal["reflect", "edge"]) -> np.ndarray:
    """``a`` padded at the end of ``axis`` to ``size`` as the whole scene is padded."""
    extra = size - a.shape[axis]
    if extra <= 0:
        return a
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, extra)
    return np.pad(a, pad, mode=mode)


def run_exact(
    read_rows: Callable[[int, int], np.ndarray],
    predict: Predict,
    grid: ExactGrid,
    n_classes: int,
    write_rows: Callable[[int, np.ndarray], None],
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    blocks: range | None = None,
) -> None:
    """Run exact tiles and hand on their kept centres, a row of tiles at a time.

    Same calls as :func:`run_tiled`: ``read_rows(y0, y1)`` gives the input ``[C, y1 - y0,
    width]``, ``write_rows(y0, probs)`` receives ``[K, rows, width]`` for rows ``y0 ..
    y0 + rows``, in order and each row once (both in :class:`StripIO`'s thread). Memory: two
    strips of ``tile_h`` input rows and the kept rows' ``K x rows x width`` probabilities of
    the rows waiting to be written. ``blocks``: only those rows of tiles (one rank's share,
    :func:`split_blocks`; each row of tiles is independent of the others).
    """
    th = grid.tile_h
    wp = _round_up(grid.width, grid.multiple)
    done = 0
    rows = [grid.rows[i] for i in (blocks if blocks is not None else range(len(grid.rows)))]
    spans = [(rw.start, min(rw.start + th, grid.height)) for rw in rows]
    total = len(rows) * len(grid.cols)
    with StripIO(read_rows, write_rows, spans) as io:
        for rw in rows:
            done = _exact_strip(
                io, rw, grid, n_classes, wp, predict, batch_size, done, progress, total
            )


def _exact_strip(
    io: StripIO,
    rw: AxisWindow,
    grid: ExactGrid,
    n_classes: int,
    wp: int,
    predict: Predict,
    batch_size: int,
    done: int,
    progress: Callable[[int, int], None] | None,
    total: int,
) -> int:
    """One row of exact tiles: their kept centres queued for writing; the tiles done so far."""
    th, tw = grid.tile_h, grid.tile_w
    strip = _pad_axis(_pad_axis(io.strip(), 1, th, grid.edge_mode), 2, wp, grid.edge_mode)
    y0, y1 = rw.keep
    out = np.empty((n_classes, y1 - y0, grid.width), dtype=np.float32)
    for b in range(0, len(grid.cols), batch_size):
        cols = grid.cols[b : b + batch_size]
        probs = predict(np.stack([strip[:, :, c.start : c.start + tw] for c in cols]))
        for p, c in zip(probs, cols, strict=True):
            x0, x1 = c.keep
            out[:, :, x0:x1] = p[:, y0 - rw.start : y1 - rw.start, x0 - c.start : x1 - c.start]
        done += len(cols)
        if progress is not None:
            progress(done, total)
    io.write(y0, out)
    return done
