"""The upscaler of ``climdl prepare``: one block of time steps, read, remapped and smoothed.

:class:`Upscaler` holds everything a block needs but its time steps (the fine dataset, the
conservative weights, the coarse cell areas, the device); :meth:`Upscaler.block` is the one
computation of a block, whether :func:`climdl.data.prepare.prepare` runs it in process or a
Dask worker runs it (:mod:`climdl.data.prepare_dask`), so both give the same output bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import Tensor

from climdl.data._prepare_io import CoarseGrid
from climdl.data.files import PathArg, describe
from climdl.data.prepare_grids import FineGrid, fine_grid
from climdl.data.reader import open_dataset
from climdl.data.units import check_plausible, value_range
from climdl.errors import ConfigError, DataError
from climdl.preprocess import (
    RegridWeights,
    StreamingStats,
    apply_regrid,
    conservative_weights,
)

__all__ = ["UpscaledBlock", "Upscaler", "day_text", "open_fine", "smooth"]


def smooth(x: Tensor, window: int, area: Tensor | None = None) -> Tensor:
    """Moving average of ``x[..., H, W]`` over ``window`` x ``window`` cells (odd window).

    Area-weighted (``area[H, W]``, e.g. cos-lat cell areas; default equal) and NaN-aware. At the
    grid's edges the window is truncated to the cells that exist (no padding values enter the
    mean); cells that are NaN stay NaN. ``window`` 0 or 1 returns ``x`` unchanged.
    """
    if window <= 1:
        return x
    if window % 2 == 0:
        raise ConfigError(f"the smoothing window must be odd (centred), got {window}.")
    h, w = x.shape[-2:]
    flat = x.reshape(-1, 1, h, w)
    wts = torch.ones((h, w), dtype=x.dtype, device=x.device) if area is None else area.to(x)
    valid = ~torch.isnan(flat)
    wv = torch.where(valid, wts, 0.0)
    kernel = torch.ones((1, 1, window, window), dtype=x.dtype, device=x.device)
    pad = window // 2
    num = F.conv2d(torch.where(valid, flat, 0.0) * wv, kernel, padding=pad)
    den = F.conv2d(wv, kernel, padding=pad)
    out = torch.where(valid & (den > 0), num / den, torch.nan)
    return out.reshape(x.shape)


def day_text(d: object) -> str:
    """'YYYY-MM-DD' of a cftime/datetime/np.datetime64 date."""
    if isinstance(d, np.datetime64):
        return str(d.astype("datetime64[D]"))
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"  # type: ignore[attr-defined]


def open_fine(
    files: Sequence[PathArg], variables: Sequence[str] | None, chunk_days: int
) -> tuple[xr.Dataset, FineGrid, tuple[str, str], list[str]]:
    """The fine dataset, its grid, its (y, x) dimensions and variable names, checked for prepare.

    Used by :func:`prepare` and, on a Dask cluster, by every worker, so that both read the same
    fields the same way.
    """
    ds = open_dataset(files, variables, chunks={"time": chunk_days})
    where = describe([Path(f) for f in files])
    if "time" not in ds.dims:
        raise DataError(f"{where} has no time axis; prepare upscales time series.")
    src, (ydim, xdim) = fine_grid(ds)
    names = [str(n) for n in ds.data_vars]
    for name in names:
        if set(ds[name].dims) != {"time", ydim, xdim}:
            raise DataError(
                f"{name} in {where} has dimensions {ds[name].dims}, not (time, {ydim}, {xdim}); "
                "prepare only the time-varying fields of one grid."
            )
    return ds, src, (ydim, xdim), names


@dataclass(frozen=True)
class UpscaledBlock:
    """One block of time steps upscaled: what is written, and its share of the statistics.

    ``coarse`` and ``fine`` hold the statistics of the block's training-period steps only
    (nothing accumulated when it has none), on the CPU, to be merged in time order.
    """

    start: int
    values: np.ndarray
    """Coarse fields ``[T, C, lat, lon]``, float32, C in the order of the variable names."""
    coarse: StreamingStats
    fine: StreamingStats

    @property
    def stop(self) -> int:
        """Index of the time step after the block's last."""
        return self.start + int(self.values.shape[0])


@dataclass(frozen=True)
class Upscaler:
    """Everything a block needs but its time steps; built once per process (client or worker).

    :meth:`block` is the one computation of a block, whether :func:`prepare` runs it in process
    or as a Dask task, so both give the same output bit for bit.
    """

    ds: xr.Dataset
    names: list[str]
    dims: tuple[str, str]
    weights: RegridWeights
    area: Tensor
    """Coarse cell areas on the device, the smoothing's weights."""
    smoothing: int
    device: torch.device
    where: str = ""
    """The input files, for messages."""
    range_check: bool = True
    """Refuse a block whose values leave their variable's plausible range."""

    @classmethod
    def build(
        cls,
        ds: xr.Dataset,
        src: FineGrid,
        dims: tuple[str, str],
        names: list[str],
        coarse: CoarseGrid,
        *,
        subcells: int,
        smoothing: int,
        device: torch.device,
        where: str = "",
        range_check: bool = True,
    ) -> Upscaler:
        """Conservative weights from ``src`` to ``coarse`` (cached per process) and cell areas."""
        weights = conservative_weights(src, coarse.grid, k=subcells, min_coverage=None)
        area = torch.as_tensor(coarse.grid.cell_areas(), dtype=torch.float64, device=device)
        return cls(ds, names, dims, weights, area, smoothing, device, where, range_check)

    def block(self, start: int, stop: int, train: slice) -> UpscaledBlock:
        """Read time steps ``start:stop``, remap (and smooth) them; statistics over ``train``.

        The fine values are checked against their plausible ranges first (unless
        ``range_check`` is off), so a units mistake stops the run at its first block.
        """
        ydim, xdim = self.dims
        # the threaded scheduler, also inside a Dask worker: the read must not become tasks
        # queued behind this one on the cluster
        with dask.config.set(scheduler="threads"):
            block = np.stack(
                [self.ds[v].transpose("time", ydim, xdim).isel(time=slice(start, stop)).values
                 for v in self.names],
                axis=1,
            )  # fmt: skip
        if self.range_check:
            lo, hi = value_range(block, axis=(0, 2, 3))
            first, last = (day_text(d) for d in self.ds["time"].values[[start, stop - 1]])
            check_plausible(
                self.names, lo, hi, attrs={v: self.ds[v].attrs for v in self.names},
                where=self.where or None,
                when=f"on {first}" if first == last else f"time steps {first} to {last}",
            )  # fmt: skip
        x = torch.from_numpy(block).to(self.device, torch.float64)
        # NaN-aware remapping (renormalised over valid sources) only where needed: 4x cheaper
        y = apply_regrid(self.weights, x, nan_aware=bool(torch.isnan(x).any()))
        y = smooth(y, self.smoothing, self.area)
        coarse, fine = StreamingStats(channel_dim=1), StreamingStats(channel_dim=1)
        lo, hi = max(start, train.start) - start, min(stop, train.stop) - start
        if hi > lo:
            fine.update(x[lo:hi])
            coarse.update(y[lo:hi])
        values = y.to(torch.float32).cpu().numpy()
        return UpscaledBlock(start, values, coarse.to("cpu"), fine.to("cpu"))
