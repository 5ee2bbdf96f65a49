"""A scene's rows shared across ranks: each rank's finished rows on disk, joined by rank 0.

Under ``torchrun --nproc-per-node N -m climdl segment ...`` (or ``srun``), every rank opens the
scene, lays out the same tiles, and takes a contiguous share of the rows of tiles
(:func:`climdl.inference.segment_tiling.split_blocks`). Its finished rows (labels, and the
probabilities when they are written) go to two ``.npy`` files of its own in a hidden folder
beside the output (:class:`RowPart`, written through memory maps: memory stays bounded by the
page cache, not the share), with its class counts. Rank 0 then streams the parts, in scene
order, into the one output writer: the same file as one process writes (the shares deliver the
same values, bit for bit: see :func:`~climdl.inference.segment_tiling.run_tiled`). The folder is
removed at the end, and a folder left by a killed run is cleared by the next one.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import numpy as np

from climdl.errors import OutputError
from climdl.io.oserrors import output_error

__all__ = ["RowPart", "join_parts", "parts_folder", "prepare_folder", "remove_folder"]

_STRIP = 256
"""Rows handed to the writer at a time when the parts are joined."""


def parts_folder(output: Path) -> Path:
    """The hidden folder beside ``output`` that holds the ranks' rows."""
    return output.parent / f".{output.name}.segment-parts"


def prepare_folder(folder: Path) -> None:
    """Clear what a killed run left and create the folder (rank 0, before the others write).

    Raises:
        OutputError: the name is taken by a link or a file (never followed or replaced).
    """
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise OutputError(f"{folder} is in the way (not a folder climdl made); remove it.")
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.mkdir(mode=0o700, parents=True)
    except OSError as exc:
        raise OutputError(f"cannot create {folder}: {exc.strerror or exc}.") from exc


def remove_folder(folder: Path) -> None:
    """Remove the parts folder (after the join, or after a failure)."""
    shutil.rmtree(folder, ignore_errors=True)


def _allocated(path: Path, dtype: type[np.generic], shape: tuple[int, ...]) -> np.memmap:
    """A ``.npy`` memory map whose blocks are reserved on disk first: writing through a map
    onto a full disk would kill the process (SIGBUS); reserving turns it into an error."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    try:
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return arr  # a file system that cannot reserve: written as it comes
        del arr
        err = output_error(exc, path)
        raise (err or OutputError(f"cannot write {path}: {exc.strerror or exc}.")) from exc
    return arr


class RowPart:
    """One rank's rows ``y0 .. y1`` of the scene, written as they come.

    Args:
        folder: the parts folder.
        rank: this rank.
        y0: first scene row of the share.
        y1: end (exclusive) of the share.
        width: scene columns.
        n_classes: classes of the probabilities.
        probabilities: also keep the probabilities.
    """

    def __init__(
        self,
        folder: Path,
        rank: int,
        y0: int,
        y1: int,
        width: int,
        n_classes: int,
        probabilities: bool,
    ) -> None:
        self.y0, self.y1 = y0, y1
        stem = folder / f"rank{rank:05d}"
        self._meta = stem.with_suffix(".rows.npy")
        self._done = stem.with_suffix(".counts.npy")
        self.labels = _allocated(stem.with_suffix(".labels.npy"), np.uint8, (y1 - y0, width))
        self.probs = (
            _allocated(stem.with_suffix(".probs.npy"), np.float32, (n_classes, y1 - y0, width))
            if probabilities
            else None
        )

    def write_rows(self, y0: int, labels: np.ndarray, probs: np.ndarray | None) -> None:
        """Rows ``y0 .. y0 + rows`` (scene coordinates) of the share."""
        a, b = y0 - self.y0, y0 - self.y0 + labels.shape[0]
        self.labels[a:b] = labels
        if self.probs is not None and probs is not None:
            self.probs[:, a:b] = probs

    def finish(self, counts: np.ndarray) -> None:
        """Flush the rows and record the share's rows and class counts (written last: a part
        without them is incomplete)."""
        self.labels.flush()
        if self.probs is not None:
            self.probs.flush()
        np.save(self._meta, np.array([self.y0, self.y1], dtype=np.int64))
        np.save(self._done, counts.astype(np.int64))

    def __enter__(self) -> RowPart:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        del self.labels, self.probs  # closes the memory maps


def join_parts(
    folder: Path,
    world: int,
    write_rows: Callable[[int, np.ndarray, np.ndarray | None], None],
    n_counts: int,
    height: int,
) -> np.ndarray:
    """Hand every rank's rows, in scene order, to ``write_rows``; return the summed counts.

    Raises:
        OutputError: a rank's part is missing or incomplete (that rank failed).
    """
    counts = np.zeros(n_counts, dtype=np.int64)
    parts = []
    for rank in range(world):
        stem = folder / f"rank{rank:05d}"
        if not stem.with_suffix(".counts.npy").exists():
            if not stem.with_suffix(".labels.npy").exists():
                continue  # a rank without a share (fewer rows of tiles than ranks)
            raise OutputError(f"rank {rank} did not finish its rows; nothing was written.")
        y0, y1 = (int(v) for v in np.load(stem.with_suffix(".rows.npy")))
        counts += np.load(stem.with_suffix(".counts.npy"))
        parts.append((y0, y1, stem))
    expected = 0
    for y0, y1, stem in sorted(parts):
        if y0 != expected:
            raise OutputError(f"rows {expected}..{y0} of the scene are missing from the parts.")
        labels = np.load(stem.with_suffix(".labels.npy"), mmap_mode="r")
        probs_path = stem.with_suffix(".probs.npy")
        probs = np.load(probs_path, mmap_mode="r") if probs_path.exists() else None
        for a in range(0, y1 - y0, _STRIP):
            b = min(a + _STRIP, y1 - y0)
            write_rows(
                y0 + a,
                np.asarray(labels[a:b]),
                None if probs is None else np.asarray(probs[:, a:b]),
            )
        expected = y1
        del labels, probs
    if expected != height:
        raise OutputError(f"rows {expected}..{height} of the scene are missing from the parts.")
    return counts
