"""Lazy, windowed reading of raster bands: xarray backend arrays over GeoTIFF files.

:class:`RasterBands` is the ``(band, y, x)`` float32 image of a scene whose bands live in GeoTIFF
files (:class:`BandSource`: a file, a band index and a conversion of the stored values). Nothing
is read when the array is made: each read (a strip of rows, say) opens the files, reads just that
window and converts it, so memory follows the window, never the scene; a thinned read (every
n-th pixel) is read in bounded strips (:data:`STRIP_PIXELS`), each thinned in turn. Bands stored
at another resolution than the scene grid (Sentinel-2's 10/20/60 m) are brought to it in the same
window-by-window way (:attr:`BandSource.up`/:attr:`BandSource.down`): a coarser band by block
replication, a finer one by the mean of its valid pixels in each block. A band file
that opens but cannot be read (cut short) is a :class:`~climdl.errors.DataError` naming it.
:class:`LatLonArray` gives 2-D ``lat``/``lon`` of projected pixel centres the same lazy way
(:class:`LatLonGrid`). Everything pickles and copies (to Dask, say).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from xarray.backends import BackendArray
from xarray.core import indexing

from climdl.errors import DataError

Converter = Callable[[np.ndarray], np.ndarray]
"""Stored values of one band (a window) -> float32 scene values, NaN where there are no data."""

STRIP_PIXELS = 1 << 22
"""A thinned read (every n-th row or column, as ``climdl plot`` asks of a large scene) reads
strips of at most this many pixels per band (one row at least) and thins each in turn, so that
memory follows the thinned result, never the span it is taken from."""


@dataclass(frozen=True)
class _Axis:
    """One axis of an outer-indexer key as a read: positions ``start, start + step, ... <
    stop`` (ascending), then ``take`` of those (None: all of them), and the axis dropped for an
    integer key (``squeeze``)."""

    start: int
    stop: int
    step: int
    take: np.ndarray | slice | None
    squeeze: bool

    @property
    def size(self) -> int:
        """How many positions are read."""
        return len(range(self.start, self.stop, self.step))

    @property
    def positions(self) -> np.ndarray:
        """The positions read."""
        return np.arange(self.start, self.stop, self.step)


def _axis_window(key: Any, n: int) -> _Axis:
    """The read of one axis of an outer-indexer key (an integer, slice or index array): evenly
    spaced indices (a slice with any step, either way) read just those positions; any other
    index array reads its whole range and picks from it."""
    idx = np.arange(n)[key]
    squeeze = idx.ndim == 0
    idx = np.atleast_1d(idx)
    if idx.size == 0:
        return _Axis(0, 0, 1, None, squeeze)
    lo, hi = int(idx.min()), int(idx.max()) + 1
    if idx.size == 1:
        return _Axis(lo, hi, 1, None, squeeze)
    steps = np.diff(idx)
    if steps[0] != 0 and bool(np.all(steps == steps[0])):
        step = int(steps[0])
        if step > 0:
            return _Axis(lo, hi, step, None, squeeze)
        return _Axis(lo, hi, -step, slice(None, None, -1), squeeze)
    return _Axis(lo, hi, 1, idx - lo, squeeze)


def _finish(out: np.ndarray, axes: Sequence[_Axis]) -> np.ndarray:
    """Apply the ``take`` and ``squeeze`` of the last ``len(axes)`` axes of ``out``."""
    lead = out.ndim - len(axes)
    for k, ax in enumerate(axes):
        if ax.take is not None:
            out = out[(slice(None),) * (lead + k) + (ax.take,)]
    for k in reversed(range(len(axes))):
        if axes[k].squeeze:
            out = out[(slice(None),) * (lead + k) + (0,)]
    return out


def _read_error(path: Path, exc: Exception) -> DataError:
    """The one sentence for a band file that opened (or not) but cannot be read."""
    # rasterio's message is often 'Read failed. See previous exception for details.': GDAL's
    # own reason is the cause
    detail = str(exc.__cause__ or exc).strip().splitlines()[0].rstrip(".")
    return DataError(f"cannot read {path}: {detail}; the file may be incomplete (re-download it).")


@dataclass(frozen=True)
class BandSource:
    """Where one band of a scene lives: a raster file (GeoTIFF, JPEG 2000), its 1-based band
    index, the conversion, and how its pixels map onto the scene grid.

    ``up``: each stored pixel covers ``up`` x ``up`` scene pixels (a coarser band, replicated:
    a 60 m band on a 20 m grid has ``up`` 3); ``down``: each scene pixel is the mean of
    ``down`` x ``down`` stored pixels, NaN only where all of them are no data (a finer band,
    averaged: a 10 m band on a 20 m grid has ``down`` 2). Both 1: the file is on the grid.
    Replication invents no detail and averaging is the area mean, so neither makes up values
    between pixels (as bilinear resampling would across a cloud edge).
    """

    path: Path
    index: int
    convert: Converter
    up: int = 1
    down: int = 1

    @property
    def on_grid(self) -> bool:
        """True when the file's pixels are the scene's."""
        return self.up == 1 and self.down == 1

    def window(self, f: Any, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Scene values (float32 ``[r1 - r0, c1 - c0]``) of scene rows ``r0:r1`` and columns
        ``c0:c1``, read from the open rasterio dataset ``f`` (just the stored pixels they
        cover) and converted, then averaged or replicated onto the scene grid."""
        from rasterio.windows import Window

        if r1 <= r0 or c1 <= c0:
            return np.empty((max(r1 - r0, 0), max(c1 - c0, 0)), np.float32)
        if self.down > 1:
            d = self.down
            raw = f.read(self.index, window=Window(c0 * d, r0 * d, (c1 - c0) * d, (r1 - r0) * d))
            v = self.convert(raw).reshape(r1 - r0, d, c1 - c0, d)
            ok = np.isfinite(v)
            n = ok.sum(axis=(1, 3))
            total = np.where(ok, v, 0.0).sum(axis=(1, 3), dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(n > 0, total / np.maximum(n, 1), np.nan).astype(np.float32)
        u = self.up
        s0, s1 = r0 // u, (r1 - 1) // u + 1
        t0, t1 = c0 // u, (c1 - 1) // u + 1
        raw = f.read(self.index, window=Window(t0, s0, t1 - t0, s1 - s0))
        v = np.repeat(np.repeat(self.convert(raw), u, axis=0), u, axis=1)
        return np.ascontiguousarray(
            v[r0 - s0 * u : r1 - s0 * u, c0 - t0 * u : c1 - t0 * u], dtype=np.float32
        )


class RasterBands(BackendArray):
    """``(band, y, x)`` float32 image over GeoTIFF bands; each read opens the files and reads
    only the requested window (xarray's lazy indexing composes ``isel`` into one read); a
    thinned window (every n-th row or column) is read in strips of at most
    :data:`STRIP_PIXELS` pixels, each thinned before the next is read."""

    def __init__(self, sources: Sequence[BandSource], height: int, width: int) -> None:
        self.sources = list(sources)
        self.shape = (len(self.sources), height, width)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> Any:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._read
        )

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        import rasterio

        bands = np.atleast_1d(np.arange(self.shape[0])[key[0]])
        rows = _axis_window(key[1], self.shape[1])
        cols = _axis_window(key[2], self.shape[2])
        out = np.empty((bands.size, rows.size, cols.size), dtype=np.float32)
        if out.size:
            by_file: dict[Path, list[int]] = {}
            for i, b in enumerate(bands):
                by_file.setdefault(self.sources[int(b)].path, []).append(i)
            for path, positions in by_file.items():
                srcs = [self.sources[int(bands[i])] for i in positions]
                plain = [j for j, s in enumerate(srcs) if s.on_grid]
                try:
                    with rasterio.open(path) as f:
                        if plain:
                            indexes = [srcs[j].index for j in plain]
                            for k0, raw in self._strips(f, indexes, rows, cols):
                                for m, j in enumerate(plain):
                                    out[positions[j], k0 : k0 + raw.shape[1]] = srcs[j].convert(
                                        raw[m]
                                    )
                        for j, s in enumerate(srcs):
                            if not s.on_grid:
                                out[positions[j]] = self._resampled(f, s, rows, cols)
                except rasterio.errors.RasterioError as exc:
                    raise _read_error(path, exc) from exc
        out = _finish(out, (rows, cols))
        if np.ndim(np.arange(self.shape[0])[key[0]]) == 0:
            out = out[0]
        return out

    @staticmethod
    def _resampled(f: Any, src: BandSource, rows: _Axis, cols: _Axis) -> np.ndarray:
        """``[rows, columns]`` of a band not on the scene grid: the window in one read or,
        thinned, in strips of at most :data:`STRIP_PIXELS` stored pixels, each thinned in turn."""
        width = cols.stop - cols.start
        if rows.step == 1 and cols.step == 1:
            return src.window(f, rows.start, rows.stop, cols.start, cols.stop)
        out = np.empty((rows.size, cols.size), np.float32)
        span = max(1, STRIP_PIXELS // max(width * src.down * src.down, 1))  # scene rows per read
        per = max(1, (span - 1) // rows.step + 1)  # output rows per read
        for k0 in range(0, rows.size, per):
            k1 = min(k0 + per, rows.size)
            r0 = rows.start + k0 * rows.step
            r1 = r0 + (k1 - k0 - 1) * rows.step + 1
            win = src.window(f, r0, r1, cols.start, cols.stop)
            out[k0:k1] = win[:: rows.step, :: cols.step]
        return out

    @staticmethod
    def _strips(
        f: Any, indexes: list[int], rows: _Axis, cols: _Axis
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(first output row, raw values (band, row, column))`` of the rows and columns
        read: the window in one read, or, thinned, in strips of at most :data:`STRIP_PIXELS`
        pixels (GDAL's decimating read would pick the middle pixel of each step, not the
        first, and may take an overview)."""
        from rasterio.windows import Window

        width = cols.stop - cols.start
        if rows.step == 1 and cols.step == 1:
            yield 0, f.read(indexes, window=Window(cols.start, rows.start, width, rows.size))
            return
        span = max(1, STRIP_PIXELS // max(width, 1))  # source rows per read
        per = max(1, (span - 1) // rows.step + 1)  # output rows per read
        for k0 in range(0, rows.size, per):
            k1 = min(k0 + per, rows.size)
            r0 = rows.start + k0 * rows.step
            height = (k1 - k0 - 1) * rows.step + 1
            raw = f.read(indexes, window=Window(cols.start, r0, width, height))
            yield k0, raw[:, :: rows.step, :: cols.step]


class LatLonGrid:
    """Geographic coordinates of projected pixel centres, computed per read with pyproj (for
    the pixels read only, so a thinned read transforms the thinned grid); the last read is
    kept so that reading ``lat`` then ``lon`` of a strip transforms it once. Picklable: the
    lock and the kept read are left out and made anew."""

    def __init__(self, crs_wkt: str, x: np.ndarray, y: np.ndarray) -> None:
        self.crs_wkt, self.x, self.y = crs_wkt, x, y
        self._last: tuple[tuple[int, ...], np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"crs_wkt": self.crs_wkt, "x": self.x, "y": self.y}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.crs_wkt, self.x, self.y = state["crs_wkt"], state["x"], state["y"]
        self._last = None
        self._lock = threading.Lock()

    def window(self, rows: _Axis, cols: _Axis) -> tuple[np.ndarray, np.ndarray]:
        """``(lat, lon)`` float32 of the positions read of ``rows`` and ``cols``."""
        from pyproj import CRS, Transformer

        key = (rows.start, rows.stop, rows.step, cols.start, cols.stop, cols.step)
        with self._lock:
            if self._last is not None and self._last[0] == key:
                return self._last[1], self._last[2]
            tr = Transformer.from_crs(CRS.from_wkt(self.crs_wkt), "EPSG:4326", always_xy=True)
            xx, yy = np.meshgrid(self.x[cols.positions], self.y[rows.positions])
            lon, lat = tr.transform(xx, yy)
            res = (np.asarray(lat, np.float32), np.asarray(lon, np.float32))
            self._last = (key, *res)
            return res


class LatLonArray(BackendArray):
    """One of ``lat``/``lon`` (``y, x``) as a lazily indexed array over a :class:`LatLonGrid`."""

    def __init__(self, grid: LatLonGrid, which: int) -> None:
        self.grid, self.which = grid, which
        self.shape = (grid.y.size, grid.x.size)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> Any:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._read
        )

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        rows = _axis_window(key[0], self.shape[0])
        cols = _axis_window(key[1], self.shape[1])
        if rows.size == 0 or cols.size == 0:
            out = np.empty((rows.size, cols.size), np.float32)
        else:
            out = self.grid.window(rows, cols)[self.which]
        return np.array(_finish(out, (rows, cols)))
