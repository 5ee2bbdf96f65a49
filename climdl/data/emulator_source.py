"""Where the emulator data module's arrays come from: in memory, or lazily from files.

:class:`Source` serves predictors and targets of chosen days, whole or (for domain parallelism)
only a row block of the targets; :func:`check_rows` validates such a block. Kept apart from the
data module's splitting, statistics and loaders (:mod:`climdl.data.emulator_data`).
"""

from __future__ import annotations

import dask
import numpy as np
import xarray as xr

from climdl.errors import ConfigError

__all__ = ["Source", "check_rows", "read_lazy"]


class Source:
    """Where the arrays come from: in memory, or lazily from files opened per process.

    :meth:`read` serves the whole target grid; :meth:`read_rows` serves the rows chosen by
    :meth:`restrict` (a row block of the targets, for domain parallelism). Restricting an
    in-memory source keeps a sliced copy of the targets and drops the full array, so only the
    block stays in memory; full-grid reads then come lazily from the files. A lazy source reads
    only the block from disk. Predictors always stay whole.
    """

    def __init__(self, x: xr.DataArray, y: xr.DataArray, in_memory: bool) -> None:
        self.in_memory = in_memory
        self.x_lazy, self.y_lazy = x, y  # whole grids, lazily (for full reads after restrict)
        self.rows: tuple[int, int] | None = None
        self.y_rows: np.ndarray | None = None
        if in_memory:
            with dask.config.set(scheduler="threads"):
                self.x_np: np.ndarray | None = np.ascontiguousarray(x.values, dtype=np.float32)
                self.y_np: np.ndarray | None = np.ascontiguousarray(y.values, dtype=np.float32)
            self.x_da = self.y_da = None
        else:
            self.x_np = self.y_np = None
            self.x_da, self.y_da = x, y

    @property
    def n_rows(self) -> int:
        """Rows of the whole target grid (its ``y`` dimension)."""
        return int(self.y_lazy.shape[-2])

    def restrict(self, rows: tuple[int, int] | None) -> None:
        """Serve only target rows ``rows[0]:rows[1]`` from :meth:`read_rows` (None: all rows).

        Raises:
            ConfigError: an empty range or one beyond the grid.
        """
        rows = check_rows(rows, self.n_rows)
        if rows == self.rows:
            return
        if rows is None:
            self.rows, self.y_rows = None, None
            return
        a, b = rows
        if self.in_memory:
            if self.y_np is not None:  # slice the full array, then let it go
                block = self.y_np[:, :, a:b]
            elif self.rows is not None and self.rows[0] <= a and b <= self.rows[1]:
                assert self.y_rows is not None
                block = self.y_rows[:, :, a - self.rows[0] : b - self.rows[0]]
            else:
                with dask.config.set(scheduler="threads"):
                    block = self._rows_of(self.y_lazy, rows).values
            self.y_rows = np.ascontiguousarray(block, dtype=np.float32)
            self.y_np = None
        self.rows = rows

    @staticmethod
    def _rows_of(y: xr.DataArray, rows: tuple[int, int]) -> xr.DataArray:
        return y.isel({y.dims[-2]: slice(*rows)})

    def read(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predictors and targets of days ``idx`` on the whole grids."""
        if self.x_np is not None and self.y_np is not None:
            return self.x_np[idx], self.y_np[idx]
        x = self.x_np[idx] if self.x_np is not None else read_lazy(self.x_lazy, idx)
        return x, read_lazy(self.y_lazy, idx)

    def read_rows(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predictors (whole) and targets (the :meth:`restrict` rows) of days ``idx``."""
        if self.rows is None:
            return self.read(idx)
        if self.y_rows is not None:
            assert self.x_np is not None
            return self.x_np[idx], self.y_rows[idx]
        x = self.x_np[idx] if self.x_np is not None else read_lazy(self.x_lazy, idx)
        return x, read_lazy(self._rows_of(self.y_lazy, self.rows), idx)


def read_lazy(arr: xr.DataArray, idx: np.ndarray) -> np.ndarray:
    """Days ``idx`` of a lazy array, read in sorted time order, returned in ``idx``'s order."""
    order = np.argsort(idx)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    with dask.config.set(scheduler="synchronous"):  # no thread pools inside forked workers
        out = arr.isel(time=idx[order]).values[inverse]
    return out.astype(np.float32, copy=False)


def check_rows(rows: tuple[int, int] | None, n_rows: int | None) -> tuple[int, int] | None:
    """``rows`` as a pair of ints, checked to be a non-empty range within ``n_rows`` rows."""
    if rows is None:
        return None
    try:
        a, b = (int(v) for v in rows)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"target_rows must be a (start, stop) pair of row indices, got {rows!r}."
        ) from exc
    if not 0 <= a < b or (n_rows is not None and b > n_rows):
        grid = f" of a grid with {n_rows} rows" if n_rows is not None else ""
        raise ConfigError(
            f"target_rows {(a, b)} is not a non-empty range start < stop within the rows{grid}."
        )
    return a, b
