"""The lazy diagnostics of one variable, and their computation in Dask passes.

:func:`lazy_variable` builds every diagnostic of the truth and of each model lazily and groups
them in passes; :func:`compute` computes one pass in one Dask call (with progress). Each pass
streams over the data once with small results per chunk, so peak memory does not grow with the
number of models (see :mod:`climdl.evaluation.engine`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import dask
import numpy as np
import xarray as xr
from dask.callbacks import Callback

from climdl.evaluation import diagnostics, distributions, indices, mlbench, spectra

#: Indices whose climate-change signal is evaluated, per variable (others: the mean only).
SIGNAL_INDICES: dict[str, tuple[str, ...]] = {
    "tasmax": ("mean", "p99", "txx"),
    "tas": ("mean",),
    "tasmin": ("mean",),
    "pr": ("mean", "p99", "rx1day"),
}


class Progress(Protocol):
    """What the evaluation reports while it runs (the CLI shows it with rich)."""

    def stage(self, text: str) -> None:
        """Announce the next stage of the evaluation (a short sentence)."""

    def tasks(self, done: int, total: int) -> None:
        """Report Dask tasks finished so far out of ``total`` for the current stage."""


class _TaskCounter(Callback):
    """Dask callback that forwards finished/total task counts to a :class:`Progress`."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress
        self.done = 0
        self.total = 0

    def _start_state(self, dsk: Any, state: dict[str, Any]) -> None:
        self.done = 0
        self.total = sum(len(state.get(k, ())) for k in ("ready", "waiting", "running", "finished"))
        self.progress.tasks(0, self.total)

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        self.done += 1
        if self.done % 16 == 0 or self.done == self.total:
            self.progress.tasks(self.done, self.total)


def compute(lazy: Mapping[str, Any], progress: Progress | None) -> dict[str, Any]:
    """Compute a mapping of lazy objects in one Dask pass (RuntimeWarnings of empty points off)."""
    keys = list(lazy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with np.errstate(all="ignore"):
            if progress is not None:
                with _TaskCounter(progress):
                    values = dask.compute(*[lazy[k] for k in keys])
            else:
                values = dask.compute(*[lazy[k] for k in keys])
    return dict(zip(keys, values, strict=True))


@dataclass
class Inputs:
    """What one variable is evaluated on: truth and model series in two chunkings.

    Attributes:
        var: the variable's canonical name.
        truth: the RCM's series, chunked along time.
        preds: each model's series, chunked like ``truth``.
        truth_space: the RCM's series chunked in space (full time series per point), or None.
        preds_space: each model's series chunked like ``truth_space``.
        hist_truth: the RCM's historical period (for climate-change signals), or None.
        hist_preds: each model's historical period.
        thresholds: thresholds of the indices, with units.
        daily: False for monthly or sub-daily series: no daily-only indices.
    """

    var: str
    truth: xr.DataArray
    preds: dict[str, xr.DataArray]
    truth_space: xr.DataArray | None
    preds_space: dict[str, xr.DataArray]
    hist_truth: xr.DataArray | None
    hist_preds: dict[str, xr.DataArray]
    thresholds: indices.Thresholds = field(default_factory=indices.Thresholds)
    daily: bool = True  #: False for monthly or sub-daily series: no daily-only indices


def lazy_variable(
    x: Inputs, window: spectra.Window
) -> tuple[list[tuple[str, dict[str, Any]]], np.ndarray]:
    """Every lazy diagnostic of one variable, keyed ``<who>/<what>``, in passes.

    Each pass is computed in one Dask call and concerns the truth or one model: it streams over
    the data once with small results per chunk. Separate passes keep Dask from holding many
    chunks for many consumers at once (reading a chunk again is cheaper than keeping it), so
    peak memory does not grow with the number of models.
    """
    v = x.var
    specs = indices.default_indices(v, x.thresholds, daily=x.daily)
    edges = distributions.histogram_edges(v, x.truth, *x.preds.values())
    t = x.truth
    wanted = SIGNAL_INDICES.get(v, ("mean",)) if x.hist_truth is not None else ()
    hist_t = x.hist_truth
    truth: dict[str, Any] = {
        "truth/psd": spectra.psd(t, window=window),
        "truth/psd_mlbench": mlbench.psd(t),
        "truth/hist": distributions.histogram(t, edges).counts,
        **{f"truth/index/{spec.name}": spec(t) for spec in specs},
    }
    if hist_t is not None:
        truth |= {f"truth/hist_index/{s.name}": s(hist_t) for s in specs if s.name in wanted}
    passes: list[tuple[str, dict[str, Any]]] = [(f"{v}: truth indices and spectra", truth)]
    for m, pred in x.preds.items():
        p = pred.where(t.notnull())
        stats: dict[str, Any] = {
            f"{m}/sums": diagnostics.pair_statistics(t, p, by_season=True),
            f"{m}/corr_space": diagnostics.spatial_correlation(t, p),
            f"{m}/psd": spectra.psd(p, window=window),
            f"{m}/psd_mlbench": mlbench.psd(pred),  # the benchmark does not mask the prediction
            f"{m}/hist": distributions.histogram(p, edges).counts,
        }
        idx: dict[str, Any] = {f"{m}/index/{spec.name}": spec(p) for spec in specs}
        if hist_t is not None and m in x.hist_preds:
            hp = x.hist_preds[m].where(hist_t.notnull())
            idx |= {f"{m}/hist_index/{s.name}": s(hp) for s in specs if s.name in wanted}
        ts = x.truth_space if x.truth_space is not None else t
        ps = x.preds_space.get(m, p)
        dist = {
            f"{m}/wmap": distributions.wasserstein_distance(
                ts, ps.where(ts.notnull()), spatial=True
            )
        }
        passes += [
            (f"{v}/{m}: errors, spectra, histograms", stats),
            (f"{v}/{m}: indices", idx),
            (f"{v}/{m}: Wasserstein distance per point", dist),
            # all values at once (sorted): its own pass, so that no other chunk is held with them
            (
                f"{v}/{m}: the benchmark's exact Wasserstein distance",
                {f"{m}/w1_mlbench": mlbench.wasserstein(t, pred)},
            ),
        ]
    return passes, edges
