"""Lazy, windowed reading of raster bands: xarray backend arrays over GeoTIFF files.

:class:`RasterBands` is the ``(band, y, x)`` float32 image of a scene whose bands live in GeoTIFF
files (:class:`BandSource`: a file, a band index and a conversion of the stored values). Nothing
is read when the array is made: each read (a strip of rows, say) opens the files, reads just that
window and converts it, so memory follows the window, never the scene; a thinned read (every
n-th pixel) is read in bounded strips (:data:`STRIP_PIXELS`), each thinned in turn. A band file
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
    """Where one band of a scene lives: a GeoTIFF, its 1-based band index, and the conversion."""

    path: Path
    index: int
    convert: Converter


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
                try:
                    with rasterio.open(path) as f:
                        for k0, raw in self._strips(f, [s.index for s in srcs], rows, cols):
                            for j, i in enumerate(positions):
                                out[i, k0 : k0 + raw.shape[1]] = srcs[j].convert(raw[j])
                except rasterio.errors.RasterioError as exc:
                    raise _read_error(path, exc) from exc
        out = _finish(out, (rows, cols))
        if np.ndim(np.arange(self.shape[0])[key[0]]) == 0:
            out = out[0]
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
