"""What a ``downscale`` run returns (:class:`DownscaleResult`), shared by the run and the
CORDEX-CMIP6 archive steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr

__all__ = ["DownscaleResult"]


@dataclass
class DownscaleResult:
    """What a run produced: the dataset (lazily reopened from the file when one was written).

    Attributes:
        dataset: the predictions (reopened lazily from ``path``, or in memory without one).
        path: the written NetCDF file (or submission folder), or None for in-memory runs.
        n_days: days downscaled.
        seconds: wall time of the run.
        device: the device the networks ran on.
        grid: how the predictors were brought onto the training grid (one line).
        chunks_computed: chunks computed by this run.
        chunks_resumed: chunks taken from an interrupted run (``resume``).
        rank: this process's rank (under torchrun).
        world_size: number of processes that shared the chunks.
        extra: further facts for the log (Dask cluster, ...).
        members: ensemble members (None: a deterministic run).
        sampler: how the members were sampled (one line; None: a deterministic run).
    """

    dataset: xr.Dataset
    path: Path | None
    n_days: int
    seconds: float
    device: str
    grid: str
    chunks_computed: int
    chunks_resumed: int = 0
    rank: int = 0
    world_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    members: int | None = None
    sampler: str | None = None

    @property
    def years_per_second(self) -> float:
        """Simulated years downscaled per second of wall time."""
        return self.n_days / 365.25 / max(self.seconds, 1e-9)
