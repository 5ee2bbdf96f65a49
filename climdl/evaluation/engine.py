"""The full evaluation: every index and diagnostic of every variable, for each model.

:func:`evaluate` takes the truth and one or more predictions (the emulator and baselines) as
lazily opened Datasets, aligns them on common days and builds every diagnostic lazily. Each
variable is computed in three Dask passes (errors/spectra/histograms, indices, per-point
Wasserstein distances): within a pass every chunk is read once and reduced by fused NumPy
kernels to small partial results, and splitting the passes keeps Dask from holding many chunks
for many consumers (reading a chunk again is cheaper than keeping it). Every diagnostic is then
reduced to one number per model (:class:`climdl.evaluation.summary.Row`); the fields (maps,
spectra, histograms) are kept for the NetCDF output and the report. :func:`evaluate_files` opens
the inputs from paths (twice: chunked by time, and with whole series per spatial block for the
per-point Wasserstein distance); :func:`climdl.evaluation.output.write_outputs` writes it all.

Peak memory is bounded by a few chunks per thread (a year of 128 x 128 fields is 24 MB) and the
per-point blocks (64 MB of whole series), not by the length of the series.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import dask
import numpy as np
import xarray as xr
from dask.callbacks import Callback

from climdl.data.files import PathArg
from climdl.errors import DataError
from climdl.evaluation import _reduce, _time, diagnostics, indices, inputs, signal, spectra
from climdl.evaluation.summary import Better, Row, spatial_mean, spatial_mean_abs

log = logging.getLogger(__name__)

#: Indices whose climate-change signal is evaluated, per variable (others: the mean only).
SIGNAL_INDICES: dict[str, tuple[str, ...]] = {
    "tasmax": ("mean", "p99", "txx"),
    "tas": ("mean",),
    "tasmin": ("mean",),
    "pr": ("mean", "p99", "rx1day"),
}
#: The spatial chunk of the full-time-series view (per-point Wasserstein distance).
SPACE_VIEW_BYTES = 64 * 2**20
#: Bins of the histograms kept for the report and the NetCDF output.
REPORT_BINS = 120


class Progress(Protocol):
    """What the evaluation reports while it runs (the CLI shows it with rich)."""

    def stage(self, text: str) -> None: ...

    def tasks(self, done: int, total: int) -> None: ...


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


@dataclass
class EvaluationResult:
    """Summary rows, computed fields per variable, and what was evaluated."""

    rows: list[Row]
    fields: dict[str, xr.Dataset]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        return list(self.meta.get("models", []))


def _compute(lazy: Mapping[str, Any], progress: Progress | None) -> dict[str, Any]:
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


def _space_chunks(ds: xr.Dataset, var: str) -> dict[str, int]:
    da = ds[var]
    dims = _reduce.spatial_dims(da)
    row = da.sizes["time"] * 4 * int(np.prod([da.sizes[d] for d in dims[1:]]))
    rows = max(1, min(da.sizes[dims[0]], SPACE_VIEW_BYTES // max(row, 1)))
    return {"time": -1, str(dims[0]): int(rows), **{str(d): -1 for d in dims[1:]}}


def _stack(parts: Sequence[xr.DataArray], dim: str, labels: Sequence[str]) -> xr.DataArray:
    return xr.concat(
        list(parts),
        dim=xr.DataArray(list(labels), dims=dim),
        coords="minimal",
        compat="override",
        join="override",
    )


def _rebin(counts: Mapping[str, np.ndarray], edges: np.ndarray, nbins: int) -> xr.Dataset:
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


# ----------------------------------------------------------------------------- one variable
@dataclass
class _Inputs:
    var: str
    truth: xr.DataArray
    preds: dict[str, xr.DataArray]
    truth_space: xr.DataArray | None
    preds_space: dict[str, xr.DataArray]
    hist_truth: xr.DataArray | None
    hist_preds: dict[str, xr.DataArray]
    thresholds: indices.Thresholds = field(default_factory=indices.Thresholds)
    daily: bool = True  #: False for monthly or sub-daily series: no daily-only indices


def _lazy_variable(
    x: _Inputs, window: spectra.Window
) -> tuple[list[tuple[str, dict[str, Any]]], np.ndarray]:
    """Every lazy diagnostic of one variable, keyed ``<who>/<what>``, in passes.

    Each pass is computed in one Dask call and concerns the truth or one model: it streams over
    the data once with small results per chunk. Separate passes keep Dask from holding many
    chunks for many consumers at once (reading a chunk again is cheaper than keeping it), so
    peak memory does not grow with the number of models.
    """
    v = x.var
    specs = indices.default_indices(v, x.thresholds, daily=x.daily)
    edges = diagnostics.histogram_edges(v, x.truth, *x.preds.values())
    t = x.truth
    wanted = SIGNAL_INDICES.get(v, ("mean",)) if x.hist_truth is not None else ()
    hist_t = x.hist_truth
    truth: dict[str, Any] = {
        "truth/psd": spectra.psd(t, window=window),
        "truth/hist": diagnostics.histogram(t, edges).counts,
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
            f"{m}/hist": diagnostics.histogram(p, edges).counts,
        }
        idx: dict[str, Any] = {f"{m}/index/{spec.name}": spec(p) for spec in specs}
        if hist_t is not None and m in x.hist_preds:
            hp = x.hist_preds[m].where(hist_t.notnull())
            idx |= {f"{m}/hist_index/{s.name}": s(hp) for s in specs if s.name in wanted}
        ts = x.truth_space if x.truth_space is not None else t
        ps = x.preds_space.get(m, p)
        dist = {
            f"{m}/wmap": diagnostics.wasserstein_distance(ts, ps.where(ts.notnull()), spatial=True)
        }
        passes += [
            (f"{v}/{m}: errors, spectra, histograms", stats),
            (f"{v}/{m}: indices", idx),
            (f"{v}/{m}: Wasserstein distance per point", dist),
        ]
    return passes, edges


def _row(
    rows: list[Row],
    var: str,
    key: str,
    label: str,
    units: str,
    better: Better,
    reduction: str,
    values: Mapping[str, float],
    reference: float | None = None,
) -> None:
    rows.append(Row(var, key, label, units, better, reduction, dict(values), reference))


def _assemble(
    x: _Inputs, got: Mapping[str, Any], edges: np.ndarray, seasons: Sequence[str]
) -> tuple[list[Row], xr.Dataset]:
    """Summary rows and the field Dataset of one variable from the computed diagnostics."""
    v = x.var
    units = str(x.truth.attrs.get("units", ""))
    models = list(x.preds)
    specs = indices.default_indices(v, x.thresholds, daily=x.daily)
    rows: list[Row] = []
    fields: dict[str, xr.DataArray] = {}
    sources = ["truth", *models]

    full = {m: _reduce.pair_stats(got[f"{m}/sums"]) for m in models}
    seasonal: dict[str, dict[str, _reduce.PairStats]] = {
        m: {str(s): _reduce.pair_stats(got[f"{m}/sums"], i) for i, s in enumerate(_time.SEASONS)}
        for m in models
    }
    _row(
        rows,
        v,
        "rmse",
        "RMSE",
        units,
        "lower",
        "sqrt of the mean squared error over all points and days",
        {m: float(st.rmse_all()) for m, st in full.items()},
    )
    for s in seasons:
        _row(
            rows,
            v,
            f"rmse_{s}",
            f"RMSE ({s})",
            units,
            "lower",
            f"as RMSE, {s} days only",
            {m: float(seasonal[m][s].rmse_all()) for m in models},
        )
    bias_maps = {m: st.bias for m, st in full.items()}
    _row(
        rows,
        v,
        "bias",
        "mean bias",
        units,
        "zero",
        "spatial mean of the time-mean bias",
        {m: spatial_mean(b) for m, b in bias_maps.items()},
    )
    _row(
        rows,
        v,
        "bias_abs",
        "mean abs. bias",
        units,
        "lower",
        "spatial mean of the absolute time-mean bias",
        {m: spatial_mean_abs(b) for m, b in bias_maps.items()},
    )
    for s in seasons:
        _row(
            rows,
            v,
            f"bias_abs_{s}",
            f"mean abs. bias ({s})",
            units,
            "lower",
            f"spatial mean of the absolute {s}-mean bias",
            {m: spatial_mean_abs(seasonal[m][s].bias) for m in models},
        )
    _row(
        rows,
        v,
        "corr_time",
        "temporal correlation",
        "1",
        "higher",
        "spatial mean of the daily correlation at each point",
        {m: spatial_mean(st.corr) for m, st in full.items()},
    )
    _row(
        rows,
        v,
        "corr_space",
        "spatial correlation",
        "1",
        "higher",
        "mean over days of the daily pattern correlation",
        {m: spatial_mean(got[f"{m}/corr_space"]) for m in models},
    )
    _row(
        rows,
        v,
        "std_ratio",
        "ratio of std (pred/truth)",
        "1",
        "one",
        "spatial mean of the ratio of daily standard deviations",
        {m: spatial_mean(st.std_ratio) for m, st in full.items()},
    )

    hists = {"truth": np.asarray(got["truth/hist"])} | {
        m: np.asarray(got[f"{m}/hist"]) for m in models
    }
    h0 = diagnostics.Histogram(edges, hists["truth"])
    _row(
        rows,
        v,
        "wasserstein",
        "Wasserstein distance (all values)",
        units,
        "lower",
        "W1 between the distributions of all values (space and time pooled)",
        {
            m: diagnostics.wasserstein_from_histograms(h0, diagnostics.Histogram(edges, hists[m]))
            for m in models
        },
    )
    _row(
        rows,
        v,
        "wasserstein_map",
        "Wasserstein distance (per point)",
        units,
        "lower",
        "spatial mean of W1 between the daily distributions at each point",
        {m: spatial_mean(got[f"{m}/wmap"]) for m in models},
    )
    psd0 = got["truth/psd"]
    _row(
        rows,
        v,
        "ralsd",
        "RALSD",
        "dB",
        "lower",
        "log spectral distance of the time-mean radially averaged spectra (Harris et al. 2022)",
        {m: spectra.ralsd(psd0, got[f"{m}/psd"]) for m in models},
    )

    for spec in specs:
        i0 = got[f"truth/index/{spec.name}"]
        iunits = str(i0.attrs.get("units", units))
        ref = spatial_mean(i0)
        biases = {m: got[f"{m}/index/{spec.name}"] - i0 for m in models}
        _row(
            rows,
            v,
            f"bias_{spec.name}",
            f"abs. bias of {spec.label}",
            iunits,
            "lower",
            "spatial mean of the absolute bias of the index",
            {m: spatial_mean_abs(b) for m, b in biases.items()},
            ref,
        )
        fields[f"index_{spec.name}"] = _stack(
            [i0, *(got[f"{m}/index/{spec.name}"] for m in models)], "source", sources
        ).assign_attrs(units=iunits, long_name=spec.label)
        fields[f"bias_{spec.name}"] = _stack(list(biases.values()), "model", models).assign_attrs(
            units=iunits, long_name=f"bias of {spec.label} (prediction - truth)"
        )
        if spec.ratio:
            ratios = {m: (got[f"{m}/index/{spec.name}"] / i0).where(i0 != 0) for m in models}
            _row(
                rows,
                v,
                f"ratio_{spec.name}",
                f"ratio of {spec.label}",
                "1",
                "one",
                "spatial mean of the ratio of the index (prediction / truth)",
                {m: spatial_mean(r) for m, r in ratios.items()},
            )
            fields[f"ratio_{spec.name}"] = _stack(
                list(ratios.values()), "model", models
            ).assign_attrs(units="1", long_name=f"ratio of {spec.label} (prediction / truth)")

    if x.hist_truth is not None:
        rel = signal.is_relative(v)
        for spec in specs:
            key = f"truth/hist_index/{spec.name}"
            if key not in got:
                continue
            s0 = signal.change(got[key], got[f"truth/index/{spec.name}"], relative=rel)
            sig_models = [m for m in models if f"{m}/hist_index/{spec.name}" in got]
            sigs = {
                m: signal.change(
                    got[f"{m}/hist_index/{spec.name}"], got[f"{m}/index/{spec.name}"], relative=rel
                )
                for m in sig_models
            }
            sunits = s0.attrs["units"]
            _row(
                rows,
                v,
                f"signal_{spec.name}",
                f"abs. bias of change signal of {spec.label}",
                sunits,
                "lower",
                "spatial mean of |emulated - RCM signal| (future - historical)",
                {m: spatial_mean_abs(s - s0) for m, s in sigs.items()},
                spatial_mean(s0),
            )
            fields[f"signal_{spec.name}"] = _stack(
                [s0, *sigs.values()], "signal_source", ["truth", *sig_models]
            ).assign_attrs(units=sunits, long_name=f"climate-change signal of {spec.label}")
            if sigs:
                fields[f"signal_bias_{spec.name}"] = _stack(
                    [s - s0 for s in sigs.values()], "signal_model", sig_models
                ).assign_attrs(units=sunits, long_name=f"bias of the change signal of {spec.label}")

    fields["rmse"] = _stack([full[m].mse ** 0.5 for m in models], "model", models).assign_attrs(
        units=units, long_name="RMSE over time"
    )
    fields["bias"] = _stack(list(bias_maps.values()), "model", models).assign_attrs(
        units=units, long_name="bias of the mean (prediction - truth)"
    )
    if seasons:
        fields["bias_season"] = _stack(
            [
                _stack([seasonal[m][s].bias for s in seasons], "season", list(seasons))
                for m in models
            ],
            "model",
            models,
        ).assign_attrs(units=units, long_name="seasonal bias of the mean")
    fields["corr_time"] = _stack([full[m].corr for m in models], "model", models).assign_attrs(
        units="1", long_name="temporal correlation"
    )
    fields["std_ratio"] = _stack([full[m].std_ratio for m in models], "model", models).assign_attrs(
        units="1", long_name="ratio of standard deviations (prediction / truth)"
    )
    fields["wasserstein"] = _stack(
        [got[f"{m}/wmap"] for m in models], "model", models
    ).assign_attrs(units=units, long_name="Wasserstein distance over time")
    fields["corr_space"] = _stack(
        [got[f"{m}/corr_space"] for m in models], "model", models
    ).assign_attrs(units="1", long_name="daily spatial correlation")
    psd = _stack([psd0, *(got[f"{m}/psd"] for m in models)], "source", sources)
    ds = xr.Dataset({k: f.drop_vars("quantile", errors="ignore") for k, f in fields.items()})
    ds["psd"] = psd
    ds = ds.merge(_rebin(hists, edges, REPORT_BINS))
    ds.attrs["variable"] = v
    return rows, ds


# ----------------------------------------------------------------------------- driver
def evaluate(
    truth: xr.Dataset,
    preds: Mapping[str, xr.Dataset],
    *,
    variables: Sequence[str] | None = None,
    seasons: Sequence[str] = _time.SEASONS,
    hist_truth: xr.Dataset | None = None,
    hist_preds: Mapping[str, xr.Dataset] | None = None,
    truth_space: xr.Dataset | None = None,
    preds_space: Mapping[str, xr.Dataset] | None = None,
    window: spectra.Window = None,
    thresholds: indices.Thresholds | None = None,
    progress: Progress | None = None,
) -> EvaluationResult:
    """Evaluate predictions against the truth; all inputs lazily opened Datasets.

    ``preds`` maps model names (the emulator first, then baselines) to predictions.
    ``hist_truth``/``hist_preds`` give the historical period for the climate-change signal
    (``truth``/``preds`` are then the future period). ``truth_space``/``preds_space`` are the same
    data opened with the whole time axis in a chunk (see :func:`evaluate_files`); without them
    the per-point Wasserstein distance rechunks in memory.
    """
    if not preds:
        raise DataError("no prediction to evaluate; pass at least one.")
    started = time.perf_counter()
    th = (thresholds or indices.Thresholds()).check()
    seasons = [s for s in (_time.normalise_season(s) for s in seasons) if s is not None]
    variables = inputs.choose_variables({"truth": truth, **preds}, variables)
    t, ps = inputs.align(truth, preds, variables)
    ts_space: xr.Dataset | None = None
    ps_space: dict[str, xr.Dataset] = {}
    if truth_space is not None and preds_space:
        ts_space, ps_space = inputs.align(truth_space, preds_space, variables)
    ht: xr.Dataset | None = None
    hps: dict[str, xr.Dataset] = {}
    if hist_truth is not None:
        have = {m: d for m, d in (hist_preds or {}).items() if m in preds}
        inputs.choose_variables({"historical truth": hist_truth, **have}, variables)
        ht, hps = inputs.align(hist_truth, have, variables)
    step = _time.time_step(t["time"])
    if ht is not None and step.daily:
        step = _time.time_step(ht["time"])
    skipped = {} if step.daily else _skipped_indices(variables, th, step)
    rows: list[Row] = []
    fields: dict[str, xr.Dataset] = {}
    for var in variables:
        x = _Inputs(
            var,
            t[var],
            {m: d[var] for m, d in ps.items()},
            ts_space[var] if ts_space is not None else None,
            {m: d[var] for m, d in ps_space.items()},
            ht[var] if ht is not None and var in ht else None,
            {m: d[var] for m, d in hps.items() if var in d},
            th,
            step.daily,
        )
        passes, edges = _lazy_variable(x, window)
        got: dict[str, Any] = {}
        for what, lazy in passes:
            if progress is not None:
                progress.stage(what)
            got.update(_compute(lazy, progress))
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # empty (masked) points give NaN
            r, ds = _assemble(x, got, edges, seasons)
        rows += r
        fields[var] = ds
    if {"tasmax", "pr"} <= set(variables):
        if progress is not None:
            progress.stage("tasmax-pr correlation")
        r, ds = _multivariate(t, ps, seasons=(), progress=progress)
        rows += r
        fields["tasmax-pr"] = ds
    meta = _meta(t, ps, variables, seasons, ht, time.perf_counter() - started)
    meta["time_step"] = step.label
    if skipped:
        meta["skipped_indices"] = skipped
    return EvaluationResult(rows, fields, meta)


def _skipped_indices(
    variables: Sequence[str], th: indices.Thresholds, step: _time.TimeStep
) -> dict[str, list[str]]:
    """The daily-only indices left out of a non-daily series, per variable, with one warning."""
    skipped = {v: [s.label for s in indices.default_indices(v, th) if s.daily] for v in variables}
    skipped = {v: names for v, names in skipped.items() if names}
    if skipped:
        listing = "; ".join(f"{', '.join(n)} ({v})" for v, n in skipped.items())
        log.warning(
            "the data are %s, not daily: the daily indices %s are left out; the other "
            "diagnostics are computed on the %s values",
            step.label,
            listing,
            step.label,
        )
    return skipped


def _multivariate(
    t: xr.Dataset,
    ps: Mapping[str, xr.Dataset],
    *,
    seasons: Sequence[str],
    progress: Progress | None,
) -> tuple[list[Row], xr.Dataset]:
    """Bias of the tasmax-pr correlation (ML-Bench ``bias_multivariable_correlation``)."""
    models = list(ps)
    lazy: dict[str, Any] = {}
    ones = np.zeros(t.sizes["time"], dtype=np.int64)

    def corr(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
        return _reduce.pair_stats(_reduce.pair_sums(a, b, ones, 1)).corr

    lazy["truth"] = corr(t["tasmax"], t["pr"])
    for m, p in ps.items():
        lazy[m] = corr(p["tasmax"].where(t["tasmax"].notnull()), p["pr"].where(t["pr"].notnull()))
    got = _compute(lazy, progress)
    c0 = got["truth"]
    rows = [
        Row(
            "tasmax-pr",
            "corr_bias",
            "abs. bias of tasmax-pr correlation",
            "1",
            "lower",
            "spatial mean of |correlation(pred) - correlation(truth)| over time",
            {m: spatial_mean_abs(got[m] - c0) for m in models},
            spatial_mean(c0),
        )
    ]
    ds = xr.Dataset(
        {
            "correlation": _stack(
                [c0, *(got[m] for m in models)], "source", ["truth", *models]
            ).assign_attrs(units="1", long_name="temporal correlation of tasmax and pr"),
            "correlation_bias": _stack([got[m] - c0 for m in models], "model", models).assign_attrs(
                units="1", long_name="bias of the tasmax-pr correlation"
            ),
        }
    )
    ds.attrs["variable"] = "tasmax-pr"
    return rows, ds


def _meta(
    t: xr.Dataset,
    ps: Mapping[str, xr.Dataset],
    variables: Sequence[str],
    seasons: Sequence[str],
    ht: xr.Dataset | None,
    seconds: float,
) -> dict[str, Any]:
    from climdl import __version__

    tv = t["time"].values
    da = t[variables[0]]
    meta: dict[str, Any] = {
        "climdl_version": __version__,
        "models": list(ps),
        "variables": list(variables),
        "seasons": list(seasons),
        "period": [str(tv[0])[:10], str(tv[-1])[:10]],
        "n_days": int(tv.size),
        "calendar": _time.calendar_of(t["time"]),
        "grid": {str(d): int(da.sizes[d]) for d in _reduce.spatial_dims(da)},
        "seconds": round(seconds, 2),
    }
    if ht is not None:
        hv = ht["time"].values
        meta["historical_period"] = [str(hv[0])[:10], str(hv[-1])[:10]]
    return meta


# ----------------------------------------------------------------------------- from files
def open_inputs(
    truth: PathArg | Sequence[PathArg],
    preds: Mapping[str, PathArg | Sequence[PathArg]],
    variables: Sequence[str] | None = None,
) -> tuple[xr.Dataset, dict[str, xr.Dataset], xr.Dataset, dict[str, xr.Dataset]]:
    """Open truth and predictions twice: chunked by time, and by space with whole series."""
    t = inputs.open_side(truth, variables)
    ps = {m: inputs.open_side(p, variables) for m, p in preds.items()}
    chosen = inputs.choose_variables({"truth": t, **ps}, variables)
    chunks = _space_chunks(t, chosen[0])
    ts = inputs.open_side(truth, chosen, chunks=chunks)
    pss = {m: inputs.open_side(p, chosen, chunks=chunks) for m, p in preds.items()}
    return t[chosen], {m: d[chosen] for m, d in ps.items()}, ts, pss


def evaluate_files(
    truth: PathArg | Sequence[PathArg],
    preds: Mapping[str, PathArg | Sequence[PathArg]],
    *,
    variables: Sequence[str] | None = None,
    seasons: Sequence[str] = _time.SEASONS,
    hist_truth: PathArg | Sequence[PathArg] | None = None,
    hist_preds: Mapping[str, PathArg | Sequence[PathArg]] | None = None,
    window: spectra.Window = None,
    thresholds: indices.Thresholds | None = None,
    progress: Progress | None = None,
) -> EvaluationResult:
    """:func:`evaluate` on files (paths or globs per side); nothing is written."""
    thresholds = (thresholds or indices.Thresholds()).check()  # before any reading
    for s in seasons:
        _time.normalise_season(s)
    t, ps, ts, pss = open_inputs(truth, preds, variables)
    chosen = [str(v) for v in t.data_vars]
    ht = inputs.open_side(hist_truth, chosen) if hist_truth is not None else None
    hps = {m: inputs.open_side(p, chosen) for m, p in (hist_preds or {}).items()}
    result = evaluate(
        t,
        ps,
        variables=chosen,
        seasons=seasons,
        hist_truth=ht,
        hist_preds=hps,
        truth_space=ts,
        preds_space=pss,
        window=window,
        thresholds=thresholds,
        progress=progress,
    )
    result.meta["inputs"] = {
        "truth": _paths(truth),
        **{f"prediction:{m}": _paths(p) for m, p in preds.items()},
    }
    if hist_truth is not None:
        result.meta["inputs"]["historical truth"] = _paths(hist_truth)
        for m, p in (hist_preds or {}).items():
            result.meta["inputs"][f"historical prediction:{m}"] = _paths(p)
    return result


def _paths(p: PathArg | Sequence[PathArg]) -> list[str]:
    if isinstance(p, str | Path):
        return [str(p)]
    return [str(x) for x in p]  # type: ignore[union-attr]
