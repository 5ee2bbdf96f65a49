"""Compressed chunks written straight into a NetCDF4 (HDF5) variable, off the GIL.

Writing through netCDF4/HDF5 compresses each chunk inside the library while holding Python's
GIL, so a writer thread stalls the thread that runs the network. :class:`ChunkWriter` does the
filter pipeline's work itself, as HDF5 would (byte shuffle, then a zlib stream), with NumPy and
a deflate coder that both release the GIL, and hands each finished chunk to HDF5's direct chunk
write (h5py), which only stores bytes. Fast levels (1 and 2, what climdl writes) are deflated by
Intel's ISA-L (``isal``) at its level 3: the same format (any zlib inflates it; HDF5 decodes the
chunk like its own), files within ~1% of zlib level 1's size, in ~1/4 of its CPU time; other
levels use :mod:`zlib` itself at that level, as HDF5 would. The variables must exist already (defined by
netCDF4, with their fill value, chunk shape and filters) and be written block by block along
their first axis, in any order, whole chunks at a time (a block may end at the variable's end).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from isal import isal_zlib

_SHUFFLE = 2
"""HDF5's filter id of the byte shuffle."""
_DEFLATE = 1
"""HDF5's filter id of zlib (deflate)."""


class ChunkWriter:
    """Direct chunk writes of chunked float variables whose filters are (shuffle +) zlib.

    Args:
        path: an existing NetCDF4/HDF5 file (not open elsewhere while this writer is).
        names: the variables to write (each chunked, filtered by at most shuffle then deflate).

    Raises:
        ValueError: a variable that is not chunked, or has another filter (fletcher32,
            scale-offset, ...) whose bytes this writer would not reproduce.
    """

    def __init__(self, path: str | Path, names: Sequence[str]) -> None:
        import h5py

        self._file = h5py.File(path, "r+")
        self._vars: dict[str, _Var] = {}
        try:
            for name in names:
                ds = self._file[name]
                plist = ds.id.get_create_plist()
                filters = [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]
                level = None  # None: no deflate filter (0 is deflate at level 0: still zlib)
                for k in range(plist.get_nfilters()):
                    if plist.get_filter(k)[0] == _DEFLATE:
                        level = int(plist.get_filter(k)[2][0])
                if ds.chunks is None or filters not in ([], [_DEFLATE], [_SHUFFLE, _DEFLATE]):
                    raise ValueError(f"{name}: chunked zlib/shuffle storage expected")
                self._vars[name] = _Var(
                    ds, tuple(ds.chunks), _SHUFFLE in filters, level, ds.fillvalue
                )
        except BaseException:
            self._file.close()
            raise

    def write(self, name: str, start: int, block: np.ndarray) -> None:
        """Store ``block``, the variable's values at indices ``start:start + len(block)`` of its
        first axis and all of its other axes; NaN becomes the fill value (CF's missing data).

        ``start`` must be a multiple of the chunk length along the first axis, and so must the
        block's length unless it reaches the variable's end."""
        v = self._vars[name]
        ds, chunks = v.ds, v.chunks
        n = block.shape[0]
        if block.shape[1:] != ds.shape[1:] or start % chunks[0]:
            raise ValueError(
                f"{name}: block of shape {block.shape} at {start} is not chunk-aligned"
            )
        if n % chunks[0] and start + n != ds.shape[0]:
            raise ValueError(f"{name}: a partial chunk is only allowed at the variable's end")
        data = np.asarray(block, dtype=ds.dtype)
        if np.issubdtype(data.dtype, np.floating):
            data = np.where(np.isnan(data), data.dtype.type(v.fill), data)
        for offset, piece in _chunks(data, chunks, v.fill):
            raw = piece.tobytes() if not v.shuffle else _shuffle(piece)
            payload = _deflate(raw, v.level) if v.level is not None else raw
            ds.id.write_direct_chunk((start + offset[0], *offset[1:]), payload)

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class _Var:
    """A variable's dataset and what its chunks need (shape, shuffle, zlib level, fill)."""

    ds: Any
    chunks: tuple[int, ...]
    shuffle: bool
    level: int | None
    fill: Any


def _deflate(raw: bytes, level: int) -> bytes:
    """``raw`` as a zlib stream (what HDF5's deflate filter stores) for the variable's level."""
    if 1 <= level <= 2:
        return bytes(isal_zlib.compress(raw, 3))
    return zlib.compress(raw, level)


def _shuffle(piece: np.ndarray) -> bytes:
    """HDF5's shuffle filter: byte k of every element, for k = 0 .. itemsize - 1."""
    size = piece.dtype.itemsize
    return np.ascontiguousarray(piece.reshape(-1).view(np.uint8).reshape(-1, size).T).tobytes()


def _chunks(
    data: np.ndarray, chunks: tuple[int, ...], fill: object
) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """The chunks of ``data`` (full chunk shape: edge chunks padded with the fill value, as HDF5
    stores them) with their offsets, one at a time (no second copy of the block)."""
    ranges = [range(0, s, c) for s, c in zip(data.shape, chunks, strict=True)]
    for offset in np.ndindex(*(len(r) for r in ranges)):
        lo = tuple(r[i] for r, i in zip(ranges, offset, strict=True))
        sl = tuple(slice(a, a + c) for a, c in zip(lo, chunks, strict=True))
        piece = data[sl]
        if piece.shape != chunks:
            full = np.full(chunks, fill, dtype=data.dtype)
            full[tuple(slice(0, s) for s in piece.shape)] = piece
            piece = full
        yield lo, np.ascontiguousarray(piece)
