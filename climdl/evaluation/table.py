"""The table of diagnostics: which summary rows and fields the evaluation gives per variable.

Every diagnostic is one small frozen dataclass: a :class:`RowSpec` reduces a field to one number
per model (a :class:`climdl.evaluation.summary.Row`), a :class:`FieldSpec` stacks a field of
every model (or of the truth and every model) for the NetCDF output and the report. Each names
its scope (the whole series, each season, each index, each climate-change signal), the function
that gives its value from the computed diagnostics
(:class:`climdl.evaluation.computed.Computed`) and the words that describe it. :func:`rows` and
:func:`fields` evaluate the tables in one loop each, so that adding a diagnostic is one entry,
not another copy of the bookkeeping.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import xarray as xr

from climdl.evaluation import distributions, mlbench, spectra
from climdl.evaluation.computed import Computed, Item, Scope
from climdl.evaluation.indices import IndexSpec
from climdl.evaluation.summary import Better, Row, spatial_mean, spatial_mean_abs
from climdl.evaluation.thresholds import to_data_units

#: Bins of the histograms kept for the report and the NetCDF output.
REPORT_BINS = 120

#: The value of a diagnostic for one model (or ``"truth"``) and item.
Value = Callable[[Computed, str, Item], Any]
Condition = Callable[[Computed, Item], bool]


def _always(c: Computed, item: Item) -> bool:
    return True


def _wet_spec(c: Computed) -> IndexSpec | None:
    """The SDII index of a daily pr evaluation (it carries the wet-day threshold), or None."""
    return next((s for s in c.specs if s.name == "sdii"), None)


def _wet_threshold(c: Computed) -> float:
    """The wet-day threshold in the variable's units."""
    spec = _wet_spec(c)
    assert spec is not None
    return to_data_units(spec.kwargs["wet_threshold"], c.units, what="wet-day threshold")


@dataclass(frozen=True)
class RowSpec:
    """A summary row: one number per model. ``key``, ``label`` and ``units`` are templates
    (``{season}``, ``{index}``, ``{label}``; units ``{units}`` of the variable, ``{iunits}`` of
    the index, ``{sunits}`` of the signal)."""

    key: str
    label: str
    units: str
    better: Better
    reduction: str  #: how the field became one number (shown in the table)
    value: Value  #: the model's field (or number without ``reduce``)
    reduce: Callable[[Any], float] | None = None  #: field -> number; None: value is a number
    scope: Scope = "variable"
    reference: Callable[[Computed, Item], float] | None = None  #: the truth's own value
    when: Condition = _always


@dataclass(frozen=True)
class FieldSpec:
    """A field of the NetCDF output: a map per model (``over="model"``) or per source (the truth
    first, then the models: ``over="source"``), stacked along ``over`` (``signal_<over>`` for a
    signal). ``name``, ``long_name`` and ``units`` are templates as in :class:`RowSpec`."""

    name: str
    long_name: str
    units: str
    value: Value
    over: Literal["model", "source"] = "model"
    scope: Scope = "variable"
    when: Condition = _always


_SIGNAL_REDUCTION = "spatial mean of |emulated - RCM signal| (future - historical)"

#: The summary rows of a variable, in the order of the output table.
ROWS: tuple[RowSpec, ...] = (
    RowSpec(
        "rmse",
        "RMSE",
        "{units}",
        "lower",
        "sqrt of the mean squared error over all points and days",
        lambda c, m, i: float(c.full(m).rmse_all()),
    ),
    RowSpec(
        "rmse_mlbench",
        "RMSE (ML-Bench definition)",
        "{units}",
        "lower",
        "the benchmark's: spatial mean (equal weights) of the temporal RMSE at each point",
        lambda c, m, i: c.full(m).mse ** 0.5,
        spatial_mean,
    ),
    RowSpec(
        "rmse_{season}",
        "RMSE ({season})",
        "{units}",
        "lower",
        "as RMSE, {season} days only",
        lambda c, m, i: float(c.season(m, i.season).rmse_all()),
        scope="season",
    ),
    RowSpec(
        "bias",
        "mean bias",
        "{units}",
        "zero",
        "spatial mean of the time-mean bias",
        lambda c, m, i: c.full(m).bias,
        spatial_mean,
    ),
    RowSpec(
        "bias_abs",
        "mean abs. bias",
        "{units}",
        "lower",
        "spatial mean of the absolute time-mean bias",
        lambda c, m, i: c.full(m).bias,
        spatial_mean_abs,
    ),
    RowSpec(
        "bias_abs_{season}",
        "mean abs. bias ({season})",
        "{units}",
        "lower",
        "spatial mean of the absolute {season}-mean bias",
        lambda c, m, i: c.season(m, i.season).bias,
        spatial_mean_abs,
        scope="season",
    ),
    RowSpec(
        "corr_time",
        "temporal correlation",
        "1",
        "higher",
        "spatial mean of the daily correlation at each point",
        lambda c, m, i: c.full(m).corr,
        spatial_mean,
    ),
    RowSpec(
        "corr_space",
        "spatial correlation",
        "1",
        "higher",
        "mean over days of the daily pattern correlation",
        lambda c, m, i: c.got[f"{m}/corr_space"],
        spatial_mean,
    ),
    RowSpec(
        "std_ratio",
        "ratio of std (pred/truth)",
        "1",
        "one",
        "spatial mean of the ratio of daily standard deviations",
        lambda c, m, i: c.full(m).std_ratio,
        spatial_mean,
    ),
    RowSpec(
        "wasserstein",
        "Wasserstein distance (all values)",
        "{units}",
        "lower",
        "W1 between the distributions of all values (space and time pooled)",
        lambda c, m, i: distributions.wasserstein_from_histograms(
            c.histogram("truth"), c.histogram(m)
        ),
    ),
    RowSpec(
        "wasserstein_mlbench",
        "Wasserstein distance (ML-Bench definition)",
        "{units}",
        "lower",
        "the benchmark's: exact W1 between all values (space and time pooled), missing "
        "values counted as 0",
        lambda c, m, i: float(c.got[f"{m}/w1_mlbench"]),
    ),
    RowSpec(
        "wasserstein_wet",
        "Wasserstein distance (wet-day intensities)",
        "{units}",
        "lower",
        "W1 between the distributions of the wet-day values (at or above the wet-day "
        "threshold; space and time pooled)",
        lambda c, m, i: distributions.wasserstein_above(
            c.histogram("truth"), c.histogram(m), _wet_threshold(c)
        ),
        when=lambda c, i: _wet_spec(c) is not None,
    ),
    RowSpec(
        "wasserstein_map",
        "Wasserstein distance (per point)",
        "{units}",
        "lower",
        "spatial mean of W1 between the daily distributions at each point",
        lambda c, m, i: c.got[f"{m}/wmap"],
        spatial_mean,
    ),
    RowSpec(
        "ralsd",
        "RALSD",
        "dB",
        "lower",
        "log spectral distance of the time-mean radially averaged spectra (Harris et al. 2022)",
        lambda c, m, i: spectra.ralsd(c.got["truth/psd"], c.got[f"{m}/psd"]),
    ),
    RowSpec(
        "ralsd_mlbench",
        "RALSD (ML-Bench definition)",
        "dB2",
        "lower",
        "the benchmark's: mean over pixel annuli of the squared dB ratio of the time-mean "
        "spectra (gaps as 0, no root)",
        lambda c, m, i: mlbench.ralsd(c.got["truth/psd_mlbench"], c.got[f"{m}/psd_mlbench"]),
    ),
    RowSpec(
        "bias_{index}",
        "abs. bias of {label}",
        "{iunits}",
        "lower",
        "spatial mean of the absolute bias of the index",
        Computed.index_bias,
        spatial_mean_abs,
        scope="index",
        reference=lambda c, i: spatial_mean(c.index("truth", i)),
    ),
    RowSpec(
        "ratio_{index}",
        "ratio of {label}",
        "1",
        "one",
        "spatial mean of the ratio of the index (prediction / truth)",
        Computed.index_ratio,
        spatial_mean,
        scope="index",
        when=lambda c, i: i.spec.ratio,
    ),
    RowSpec(
        "signal_{index}",
        "abs. bias of change signal of {label}",
        "{sunits}",
        "lower",
        _SIGNAL_REDUCTION,
        Computed.signal_bias,
        spatial_mean_abs,
        scope="signal",
        reference=lambda c, i: spatial_mean(c.signal("truth", i)),
    ),
)

#: The fields of a variable, in the order of the NetCDF output (spectra and histograms follow).
FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("index_{index}", "{label}", "{iunits}", Computed.index, "source", "index"),
    FieldSpec(
        "bias_{index}",
        "bias of {label} (prediction - truth)",
        "{iunits}",
        Computed.index_bias,
        scope="index",
    ),
    FieldSpec(
        "ratio_{index}",
        "ratio of {label} (prediction / truth)",
        "1",
        Computed.index_ratio,
        scope="index",
        when=lambda c, i: i.spec.ratio,
    ),
    FieldSpec(
        "signal_{index}",
        "climate-change signal of {label}",
        "{sunits}",
        Computed.signal,
        "source",
        "signal",
    ),
    FieldSpec(
        "signal_bias_{index}",
        "bias of the change signal of {label}",
        "{sunits}",
        Computed.signal_bias,
        scope="signal",
        when=lambda c, i: bool(c.models_of("signal", i)),
    ),
    FieldSpec("rmse", "RMSE over time", "{units}", lambda c, m, i: c.full(m).mse ** 0.5),
    FieldSpec(
        "bias", "bias of the mean (prediction - truth)", "{units}", lambda c, m, i: c.full(m).bias
    ),
    FieldSpec(
        "bias_season",
        "seasonal bias of the mean",
        "{units}",
        lambda c, m, i: stack([c.season(m, s).bias for s in c.seasons], "season", c.seasons),
        when=lambda c, i: bool(c.seasons),
    ),
    FieldSpec("corr_time", "temporal correlation", "1", lambda c, m, i: c.full(m).corr),
    FieldSpec(
        "std_ratio",
        "ratio of standard deviations (prediction / truth)",
        "1",
        lambda c, m, i: c.full(m).std_ratio,
    ),
    FieldSpec(
        "wasserstein",
        "Wasserstein distance over time",
        "{units}",
        lambda c, m, i: c.got[f"{m}/wmap"],
    ),
    FieldSpec(
        "corr_space", "daily spatial correlation", "1", lambda c, m, i: c.got[f"{m}/corr_space"]
    ),
)


_Spec = TypeVar("_Spec", RowSpec, FieldSpec)


def _evaluated(
    c: Computed, table: Sequence[_Spec]
) -> Iterator[tuple[_Spec, Item, dict[str, str], list[str]]]:
    """The entries of ``table`` with each item of their scope, their words and their models.

    Consecutive entries of one scope are evaluated item by item (e.g. every diagnostic of one
    index, then of the next), which is the order of the output.
    """
    for scope, block in itertools.groupby(table, key=lambda d: d.scope):
        entries = list(block)
        for item in c.items(scope):
            words: dict[str, str] | None = None
            for d in entries:
                if d.when(c, item):
                    words = words or c.words(scope, item)
                    yield d, item, words, c.models_of(scope, item)


def rows(c: Computed) -> list[Row]:
    """The summary rows of one variable (:data:`ROWS`)."""
    out: list[Row] = []
    for d, item, words, models in _evaluated(c, ROWS):
        values = {m: d.value(c, m, item) for m in models}
        if d.reduce is not None:
            values = {m: d.reduce(v) for m, v in values.items()}
        out.append(
            Row(
                c.var,
                d.key.format(**words),
                d.label.format(**words),
                d.units.format(**words),
                d.better,
                d.reduction.format(**words),
                values,
                d.reference(c, item) if d.reference is not None else None,
            )
        )
    return out


def fields(c: Computed) -> xr.Dataset:
    """The field Dataset of one variable (:data:`FIELDS`, spectra and histograms)."""
    out: dict[str, xr.DataArray] = {}
    for d, item, words, models in _evaluated(c, FIELDS):
        who = ["truth", *models] if d.over == "source" else models
        dim = f"signal_{d.over}" if d.scope == "signal" else d.over
        out[d.name.format(**words)] = stack(
            [d.value(c, w, item) for w in who], dim, who
        ).assign_attrs(units=d.units.format(**words), long_name=d.long_name.format(**words))
    sources = ["truth", *c.models]
    ds = xr.Dataset({k: f.drop_vars("quantile", errors="ignore") for k, f in out.items()})
    ds["psd"] = stack([c.got[f"{w}/psd"] for w in sources], "source", sources)
    ds = ds.merge(rebin(c.hists, c.edges, REPORT_BINS))
    ds.attrs["variable"] = c.var
    return ds


def stack(parts: Sequence[xr.DataArray], dim: str, labels: Sequence[str]) -> xr.DataArray:
    """Fields of the same grid stacked along a new labelled dimension ``dim``."""
    return xr.concat(
        list(parts),
        dim=xr.DataArray(list(labels), dims=dim),
        coords="minimal",
        compat="override",
        join="override",
    )


def rebin(counts: Mapping[str, np.ndarray], edges: np.ndarray, nbins: int) -> xr.Dataset:
    """Merge fine histogram bins into about ``nbins`` bins over the occupied range."""
    total = sum(np.asarray(c, dtype=np.int64) for c in counts.values())
    occupied = np.flatnonzero(total)
    if occupied.size == 0:
        lo, hi = 0, len(edges) - 1
    else:
        lo, hi = int(occupied[0]), int(occupied[-1]) + 1
    step = max(1, int(np.ceil((hi - lo) / nbins)))
    starts = np.arange(lo, hi, step)
    new_edges = np.r_[edges[starts], edges[min(hi, starts[-1] + step)]]
    data = np.stack(
        [
            np.add.reduceat(np.asarray(c, dtype=np.int64)[lo:hi], starts - lo)
            for c in counts.values()
        ]
    )
    return xr.Dataset(
        {"histogram": (("source", "bin"), data, {"long_name": "number of values per bin"})},
        coords={
            "source": list(counts),
            "bin_lower": ("bin", new_edges[:-1]),
            "bin_upper": ("bin", new_edges[1:]),
        },
    )
