"""The computed diagnostics of one variable, as the table of diagnostics reads them.

:class:`Computed` holds the results of the Dask passes (``<who>/<what>`` -> array) and derives
what several diagnostics share (pair statistics per season, index biases and ratios, change
signals), each once. :class:`Item` is what one diagnostic is evaluated for (a season, an index).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any, Literal

import numpy as np
import xarray as xr

from climdl.evaluation import _time, distributions, signal
from climdl.evaluation._pairs import PairStats, pair_stats
from climdl.evaluation.indices import IndexSpec

#: What one diagnostic is evaluated for: the whole series, each season, each index of the
#: variable, or the climate-change signal of each index that has a historical period.
Scope = Literal["variable", "season", "index", "signal"]


@dataclass(frozen=True)
class Item:
    """One thing a diagnostic of a scope is evaluated for: a season, an index, or neither."""

    season: str = ""
    index: IndexSpec | None = None

    @property
    def spec(self) -> IndexSpec:
        """The index of an ``index`` or ``signal`` item."""
        assert self.index is not None
        return self.index


class Computed:
    """The computed diagnostics of one variable (``got``: ``<who>/<what>`` -> array), and the
    quantities derived from them that several entries of the tables share."""

    def __init__(
        self,
        var: str,
        units: str,
        got: Mapping[str, Any],
        models: Sequence[str],
        seasons: Sequence[str],
        specs: Sequence[IndexSpec],
        edges: np.ndarray,
    ) -> None:
        self.var, self.units, self.got, self.edges = var, units, got, edges
        self.models, self.seasons, self.specs = list(models), list(seasons), list(specs)
        self.relative = signal.is_relative(var)
        self.full: Callable[[str], PairStats] = cache(lambda m: pair_stats(got[f"{m}/sums"]))
        self._seasonal: Callable[[str, int], PairStats] = cache(
            lambda m, i: pair_stats(got[f"{m}/sums"], i)
        )
        self._signal: Callable[[str, str], xr.DataArray] = cache(self._change)

    def season(self, model: str, season: str) -> PairStats:
        """The pair statistics of ``model`` over the days of one season."""
        return self._seasonal(model, _time.SEASONS.index(season))

    @cached_property
    def hists(self) -> dict[str, np.ndarray]:
        """Fine histogram counts of the truth and every model."""
        return {who: np.asarray(self.got[f"{who}/hist"]) for who in ["truth", *self.models]}

    def histogram(self, who: str) -> distributions.Histogram:
        """The fine histogram of the truth or a model (scalar Wasserstein distance)."""
        return distributions.Histogram(self.edges, self.hists[who])

    def index(self, who: str, item: Item) -> xr.DataArray:
        """The index of ``item`` of the truth or a model (future period)."""
        return self.got[f"{who}/index/{item.spec.name}"]

    def index_bias(self, model: str, item: Item) -> xr.DataArray:
        """Model index minus the truth's index (future period)."""
        return self.index(model, item) - self.index("truth", item)

    def index_ratio(self, model: str, item: Item) -> xr.DataArray:
        """Model index over the truth's index; NaN where the truth's is 0."""
        i0 = self.index("truth", item)
        return (self.index(model, item) / i0).where(i0 != 0)

    def _change(self, who: str, name: str) -> xr.DataArray:
        hist, fut = self.got[f"{who}/hist_index/{name}"], self.got[f"{who}/index/{name}"]
        return signal.change(hist, fut, relative=self.relative)

    def signal(self, who: str, item: Item) -> xr.DataArray:
        """The climate-change signal (future - historical) of an index."""
        return self._signal(who, item.spec.name)

    def signal_bias(self, model: str, item: Item) -> xr.DataArray:
        """Model climate-change signal minus the truth's."""
        return self.signal(model, item) - self.signal("truth", item)

    def items(self, scope: Scope) -> list[Item]:
        """What the diagnostics of ``scope`` are evaluated for."""
        if scope == "season":
            return [Item(season=s) for s in self.seasons]
        if scope == "index":
            return [Item(index=s) for s in self.specs]
        if scope == "signal":
            return [Item(index=s) for s in self.specs if f"truth/hist_index/{s.name}" in self.got]
        return [Item()]

    def models_of(self, scope: Scope, item: Item) -> list[str]:
        """The models a diagnostic covers: those with a historical period for a signal."""
        if scope == "signal":
            return [m for m in self.models if f"{m}/hist_index/{item.spec.name}" in self.got]
        return self.models

    def words(self, scope: Scope, item: Item) -> dict[str, str]:
        """What the templates of names, labels and units may name."""
        out = {"units": self.units, "season": item.season}
        if scope in ("index", "signal"):
            i0 = self.index("truth", item)
            out |= {
                "index": item.spec.name,
                "label": item.spec.label,
                "iunits": str(i0.attrs.get("units", self.units)),
            }
        if scope == "signal":
            out["sunits"] = str(self.signal("truth", item).attrs["units"])
        return out
