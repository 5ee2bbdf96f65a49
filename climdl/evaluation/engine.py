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

A prediction with a ``member`` dim (an ensemble) is evaluated member by member as extra models
in the same passes (read one member per chunk), plus its ensemble mean and one more pass for
the ensemble scores (:mod:`climdl.evaluation.members`, :mod:`climdl.evaluation.ensemble`); the
members' rows are then summarised as their mean and std.

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
from typing import Any

import numpy as np
import xarray as xr

from climdl.data import timeaxis
from climdl.data.files import PathArg
from climdl.data.reader import DEFAULT_CHUNKS
from climdl.errors import DataError
from climdl.evaluation import (
    _pairs,
    _reduce,
    _time,
    indices,
    inputs,
    members,
    screening,
    spectra,
    table,
)
from climdl.evaluation.computed import Computed
from climdl.evaluation.ensemble import MEMBER, EnsembleScores, ensemble_scores
from climdl.evaluation.ensemble_table import ensemble_fields, ensemble_rows
from climdl.evaluation.passes import Inputs, Progress, compute, lazy_variable
from climdl.evaluation.summary import Row, spatial_mean, spatial_mean_abs

log = logging.getLogger(__name__)

#: The spatial chunk of the full-time-series view (per-point Wasserstein distance).
SPACE_VIEW_BYTES = 64 * 2**20


@dataclass
class EvaluationResult:
    """Summary rows, computed fields per variable, and what was evaluated.

    Attributes:
        rows: one summary row per diagnostic, model, variable and season.
        fields: the computed maps and series of each variable.
        meta: what was evaluated (models, variables, periods, thresholds).
    """

    rows: list[Row]
    fields: dict[str, xr.Dataset]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        """Names of the evaluated models, in input order."""
        return list(self.meta.get("models", []))


def _space_chunks(ds: xr.Dataset, var: str) -> dict[str, int]:
    da = ds[var]
    dims = _reduce.spatial_dims(da)
    row = da.sizes["time"] * 4 * int(np.prod([da.sizes[d] for d in dims[1:]]))
    rows = max(1, min(da.sizes[dims[0]], SPACE_VIEW_BYTES // max(row, 1)))
    return {"time": -1, str(dims[0]): int(rows), **{str(d): -1 for d in dims[1:]}}


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
    range_check: bool = True,
    files: Mapping[str, str] | None = None,
) -> EvaluationResult:
    """Evaluate predictions against the truth; all inputs lazily opened Datasets.

    ``preds`` maps model names (the emulator first, then baselines) to predictions. A
    prediction with a ``member`` dim is an ensemble: every diagnostic is computed for each
    member and reported as the mean over members with their std (the row's ``spread``), its
    ensemble mean is evaluated as the model ``"<name> (ens. mean)"``, and the ensemble scores
    (fair CRPS, spread-skill ratio, rank histogram; :mod:`climdl.evaluation.ensemble`) are added.
    ``hist_truth``/``hist_preds`` give the historical period for the climate-change signal
    (``truth``/``preds`` are then the future period). ``truth_space``/``preds_space`` are the same
    data opened with the whole time axis in a chunk (see :func:`evaluate_files`); without them
    the per-point Wasserstein distance rechunks in memory.

    Args:
        truth: the RCM's fields (the future period when ``hist_truth`` is given).
        preds: model name -> its predictions, on the truth's days and grid.
        variables: the variables to evaluate (default: those all inputs share).
        seasons: the seasons of the seasonal rows.
        hist_truth: the RCM's historical period, for the climate-change signal.
        hist_preds: each model's historical period.
        truth_space: ``truth`` with the whole time axis in one chunk.
        preds_space: each prediction chunked like ``truth_space``.
        window: taper of the spectra (``"hann"`` or None).
        thresholds: thresholds of the indices (default: ETCCDI's, with units).
        progress: receives the stages and Dask task counts (the CLI's progress bar).
        range_check: refuse values outside their variable's plausible range (a units mistake
            such as degC labelled K); the check for valid values is always made.
        files: the inputs' files for messages, keyed ``"truth"``, ``"prediction 'NAME'"``, ...
            as :func:`climdl.evaluation.screening.label` spells them (built from paths by
            :func:`climdl.evaluation.screening.file_labels`).

    Returns:
        The summary rows, the computed fields per variable and what was evaluated.

    Raises:
        DataError: no prediction, inputs that cannot be compared (variables, days, grids), a
            truth with members, historical and future predictions with other members, an input
            with no valid value where it is evaluated, or (with ``range_check``) values outside
            their plausible range. All are found before the diagnostics are computed.
    """
    if not preds:
        raise DataError("no prediction to evaluate; pass at least one.")
    members.check_truth(truth)
    if hist_truth is not None:
        members.check_truth(hist_truth, "historical truth")
    started = time.perf_counter()
    th = (thresholds or indices.Thresholds()).check()
    seasons = [s for s in (_time.normalise_season(s) for s in seasons) if s is not None]
    variables = inputs.choose_variables({"truth": truth, **preds}, variables)
    t, ps = inputs.align(truth, preds, variables)
    sides = screening.sides_of(t, ps, files)
    ens = members.find_ensembles(ps, variables)
    for e in ens.values():
        if e.size == 1:
            log.warning(
                "prediction %r has one member: it is evaluated as an ensemble of one (its CRPS "
                "is its mean absolute error, its spread-skill ratio NaN)",
                e.name,
            )
    ens_data = {name: ps[name] for name in ens}
    det_data = {name: d for name, d in ps.items() if name not in ens}
    ps = members.expand(ps, ens)
    ts_space: xr.Dataset | None = None
    ps_space: dict[str, xr.Dataset] = {}
    if truth_space is not None and preds_space:
        ts_space, ps_space = inputs.align(truth_space, preds_space, variables, warn=False)
        ps_space = members.expand(ps_space, ens)
    ht: xr.Dataset | None = None
    hps: dict[str, xr.Dataset] = {}
    if hist_truth is not None:
        have = {m: d for m, d in (hist_preds or {}).items() if m in preds}
        inputs.choose_variables({"historical truth": hist_truth, **have}, variables)
        ht, hps = inputs.align(hist_truth, have, variables)
        members.check_historical(hps, ens, variables)
        sides += screening.sides_of(ht, hps, files, period="historical")
        hps = members.expand(hps, ens)
    if progress is not None:
        progress.stage("checking the inputs' values")
    screening.screen(sides, variables, range_check=range_check, progress=progress)
    step = timeaxis.time_step(t["time"])
    if ht is not None and step.daily:
        step = timeaxis.time_step(ht["time"])
    skipped = {} if step.daily else _skipped_indices(variables, th, step)
    no_seasons: list[str] = []
    if seasons and not step.within_season:  # yearly means stamped mid-year are not JJA values
        no_seasons, seasons = list(seasons), []
        log.warning(
            "the data are %s: each step spans several seasons, so the per-season rows (%s) "
            "are left out",
            step.label,
            ", ".join(no_seasons),
        )
    rows: list[Row] = []
    fields: dict[str, xr.Dataset] = {}
    for var in variables:
        x = Inputs(
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
        passes, edges = lazy_variable(x, window)
        got: dict[str, Any] = {}
        for what, lazy in passes:
            if progress is not None:
                progress.stage(what)
            got.update(compute(lazy, progress))
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # empty (masked) points give NaN
            c = Computed(
                var,
                str(x.truth.attrs.get("units", "")),
                got,
                list(x.preds),
                seasons,
                indices.default_indices(var, th, daily=step.daily),
                edges,
            )
            rows += members.collapse_rows(table.rows(c), ens)
            fields[var] = members.collapse_fields(table.fields(c), ens)
        if ens:
            scores = _ensemble_pass(var, t[var], {n: d[var] for n, d in ens_data.items()}, progress)
            # a point forecast's CRPS is its MAE: the deterministic predictions join the CRPS rows
            point = _ensemble_pass(
                var,
                t[var],
                {m: d[var].expand_dims({MEMBER: 1}) for m, d in det_data.items()},
                progress,
            )
            rows += ensemble_rows(var, c.units, scores, seasons, point)
            extra = ensemble_fields(c.units, scores, seasons)
            fields[var] = fields[var].merge(extra, compat="override", join="outer")
    if {"tasmax", "pr"} <= set(variables):
        if progress is not None:
            progress.stage("tasmax-pr correlation")
        r, ds = _multivariate(t, ps, seasons=(), progress=progress)
        rows += members.collapse_rows(r, ens)
        fields["tasmax-pr"] = members.collapse_fields(ds, ens)
    names = members.collapsed_names(list(ps), ens)
    meta = _meta(t, names, variables, seasons, ht, time.perf_counter() - started)
    if ens:
        meta["ensembles"] = {
            e.name: {"members": e.size, "ensemble_mean": e.mean} for e in ens.values()
        }
    meta["time_step"] = step.label
    if skipped:
        meta["skipped_indices"] = skipped
    if no_seasons:
        meta["skipped_seasons"] = no_seasons
    return EvaluationResult(rows, fields, meta)


def _ensemble_pass(
    var: str,
    truth: xr.DataArray,
    ens: Mapping[str, xr.DataArray],
    progress: Progress | None,
) -> dict[str, EnsembleScores]:
    """The ensemble scores of each ensemble prediction of ``var``, one Dask pass each."""
    out: dict[str, EnsembleScores] = {}
    for name, da in ens.items():
        if progress is not None:
            progress.stage(f"{var}/{name}: ensemble scores (CRPS, spread-skill, ranks)")
        got = compute(
            dict(zip(("sums", "ranks"), ensemble_scores(truth, da), strict=True)), progress
        )
        out[name] = EnsembleScores(got["sums"], got["ranks"])
    return out


def _skipped_indices(
    variables: Sequence[str], th: indices.Thresholds, step: timeaxis.TimeStep
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
    """Bias of the tasmax-pr correlation (ML-Bench ``bias_multivariable_correlation``).

    One Dask pass for the truth, then one per model: memory does not grow with the number of
    models (an ensemble's members are models).
    """
    models = list(ps)
    ones = np.zeros(t.sizes["time"], dtype=np.int64)

    def corr(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
        return _pairs.pair_stats(_pairs.pair_sums(a, b, ones, 1)).corr

    got = compute({"truth": corr(t["tasmax"], t["pr"])}, progress)
    for m, p in ps.items():
        tas, pr = p["tasmax"].where(t["tasmax"].notnull()), p["pr"].where(t["pr"].notnull())
        got |= compute({m: corr(tas, pr)}, progress)
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
            "correlation": table.stack(
                [c0, *(got[m] for m in models)], "source", ["truth", *models]
            ).assign_attrs(units="1", long_name="temporal correlation of tasmax and pr"),
            "correlation_bias": table.stack(
                [got[m] - c0 for m in models], "model", models
            ).assign_attrs(units="1", long_name="bias of the tasmax-pr correlation"),
        }
    )
    ds.attrs["variable"] = "tasmax-pr"
    return rows, ds


def _meta(
    t: xr.Dataset,
    models: Sequence[str],
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
        "models": list(models),
        "variables": list(variables),
        "seasons": list(seasons),
        "period": [str(tv[0])[:10], str(tv[-1])[:10]],
        "n_days": int(tv.size),
        "calendar": timeaxis.calendar_of(t["time"]),
        "grid": {str(d): int(da.sizes[d]) for d in _reduce.spatial_dims(da)},
        "seconds": round(seconds, 2),
    }
    if ht is not None:
        hv = ht["time"].values
        meta["historical_period"] = [str(hv[0])[:10], str(hv[-1])[:10]]
    return meta


# ----------------------------------------------------------------------------- from files
def _open_pred(
    paths: PathArg | Sequence[PathArg],
    variables: Sequence[str] | None,
    chunks: Mapping[str, int] | None = None,
    bbox: Sequence[float] | None = None,
) -> xr.Dataset:
    """A prediction opened lazily; an ensemble one member per chunk, so that the passes of
    one member read only that member."""
    ds = inputs.open_side(paths, variables, chunks=chunks, bbox=bbox)
    if MEMBER in ds.dims:
        ds = inputs.open_side(
            paths, variables, chunks={**(chunks or DEFAULT_CHUNKS), MEMBER: 1}, bbox=bbox
        )
    return ds


def open_inputs(
    truth: PathArg | Sequence[PathArg],
    preds: Mapping[str, PathArg | Sequence[PathArg]],
    variables: Sequence[str] | None = None,
    bbox: Sequence[float] | None = None,
) -> tuple[xr.Dataset, dict[str, xr.Dataset], xr.Dataset, dict[str, xr.Dataset]]:
    """Open truth and predictions twice: chunked by time, and by space with whole series
    (ensembles one member per chunk); all cut to ``bbox`` when given."""
    t = inputs.open_side(truth, variables, bbox=bbox)
    ps = {m: _open_pred(p, variables, bbox=bbox) for m, p in preds.items()}
    chosen = inputs.choose_variables({"truth": t, **ps}, variables)
    chunks = _space_chunks(t, chosen[0])
    ts = inputs.open_side(truth, chosen, chunks=chunks, bbox=bbox)
    pss = {m: _open_pred(p, chosen, chunks, bbox) for m, p in preds.items()}
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
    bbox: Sequence[float] | None = None,
    range_check: bool = True,
) -> EvaluationResult:
    """:func:`evaluate` on files (paths or globs per side); nothing is written.

    Args:
        truth: the RCM's files (the future period when ``hist_truth`` is given).
        preds: model name -> its prediction files.
        variables: the variables to evaluate (default: those all inputs share).
        seasons: the seasons of the seasonal rows.
        hist_truth: the RCM's historical-period files, for the climate-change signal.
        hist_preds: each model's historical-period files.
        window: taper of the spectra (``"hann"`` or None).
        thresholds: thresholds of the indices (default: ETCCDI's, with units).
        progress: receives the stages and Dask task counts (the CLI's progress bar).
        bbox: (lon_min, lon_max, lat_min, lat_max) in degrees: every input is cut to the cells
            whose centres lie inside, before anything is read.
        range_check: refuse values outside their variable's plausible range (a units mistake
            such as degC labelled K).

    Returns:
        The summary rows, the computed fields per variable and what was evaluated.

    Raises:
        DataError: missing or unreadable files, inputs that cannot be compared, an input with
            no valid value or (with ``range_check``) implausible values, or a bbox that is
            malformed or not covered by the inputs.
    """
    thresholds = (thresholds or indices.Thresholds()).check()  # before any reading
    for s in seasons:
        _time.normalise_season(s)
    t, ps, ts, pss = open_inputs(truth, preds, variables, bbox)
    chosen = [str(v) for v in t.data_vars]
    ht = inputs.open_side(hist_truth, chosen, bbox=bbox) if hist_truth is not None else None
    hps = {m: _open_pred(p, chosen, bbox=bbox) for m, p in (hist_preds or {}).items()}
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
        range_check=range_check,
        files=screening.file_labels(truth, preds, hist_truth, hist_preds),
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
