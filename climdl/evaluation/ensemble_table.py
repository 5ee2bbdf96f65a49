"""The summary rows and NetCDF fields of the ensemble scores (:mod:`climdl.evaluation.ensemble`).

Rows: fair CRPS and spread-skill ratio (all days, then each season), the rank histogram's
reliability index and ratio of its outer bins to the expected frequency; one value per ensemble
prediction. Fields: CRPS maps, rank histograms and the spread-skill numbers per season, stacked
along an ``ensemble`` dim (the names of the ensemble predictions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import xarray as xr

from climdl.evaluation.ensemble import EnsembleScores
from climdl.evaluation.summary import Better, Row, spatial_mean


def _row(
    var: str,
    key: str,
    label: str,
    units: str,
    better: Better,
    reduction: str,
    values: dict[str, float],
) -> Row:
    return Row(var, key, label, units, better, reduction, values)


def ensemble_rows(
    var: str,
    units: str,
    scores: Mapping[str, EnsembleScores],
    seasons: Sequence[str],
    point: Mapping[str, EnsembleScores] | None = None,
) -> list[Row]:
    """The summary rows of the ensemble scores of one variable (one value per ensemble).

    Args:
        var: the variable.
        units: its units.
        scores: ensemble name -> its scores.
        seasons: the seasons of the seasonal rows.
        point: deterministic prediction name -> its scores as a one-member ensemble: they join
            the CRPS rows only (the CRPS of a point forecast is its mean absolute error, the
            number an ensemble's CRPS is compared with).

    Returns:
        CRPS and spread-skill ratio (all days, then per season), the rank histogram's
        reliability index and outer-bin ratio.
    """
    if not scores:
        return []
    crps = (
        "spatial mean of the temporal mean of the fair CRPS (Ferro 2014); for a deterministic "
        "prediction its MAE"
    )
    both = {**scores, **(point or {})}
    ssr = (
        "sqrt((M+1)/M mean ensemble variance) / RMSE of the ensemble mean over all points and "
        "days (Fortin et al. 2014); < 1 under-dispersive; NaN for one member"
    )
    rows = [_row(var, "crps", "CRPS (fair)", units, "lower", crps, _each(both, _crps(None)))]
    rows += [
        _row(
            var,
            f"crps_{s}",
            f"CRPS (fair, {s})",
            units,
            "lower",
            f"as CRPS, {s} days only",
            _each(both, _crps(s)),
        )
        for s in seasons
    ]
    rows.append(
        _row(var, "ssr", "spread-skill ratio", "1", "one", ssr, _each(scores, lambda e: e.ssr()))
    )
    rows += [
        _row(
            var,
            f"ssr_{s}",
            f"spread-skill ratio ({s})",
            "1",
            "one",
            f"as the spread-skill ratio, {s} days only",
            _each(scores, _ssr(s)),
        )
        for s in seasons
    ]
    rows += [
        _row(
            var,
            "rank_reliability",
            "rank histogram reliability index",
            "1",
            "lower",
            "sum over the M+1 bins of |relative frequency - 1/(M+1)| (Delle Monache et al. "
            "2006); 0 is flat",
            _each(scores, lambda e: e.reliability_index()),
        ),
        _row(
            var,
            "rank_outer",
            "rank histogram outer bins / expected",
            "1",
            "one",
            "mean relative frequency of the two outer bins times (M+1): > 1 U-shaped "
            "(under-dispersive), < 1 dome-shaped (over-dispersive)",
            _each(scores, lambda e: e.outer_ratio()),
        ),
    ]
    return rows


def _each(
    scores: Mapping[str, EnsembleScores], fn: Callable[[EnsembleScores], float]
) -> dict[str, float]:
    return {name: float(fn(e)) for name, e in scores.items()}


def _crps(season: str | None) -> Callable[[EnsembleScores], float]:
    return lambda e: spatial_mean(e.crps_map(season))


def _ssr(season: str | None) -> Callable[[EnsembleScores], float]:
    return lambda e: e.ssr(season)


def ensemble_fields(
    units: str, scores: Mapping[str, EnsembleScores], seasons: Sequence[str]
) -> xr.Dataset:
    """The fields of the ensemble scores of one variable, stacked along ``ensemble``.

    Variables: ``crps`` (map), ``crps_season`` (map per season), ``rank_histogram`` and
    ``rank_frequency`` (``rank`` 0..M of the largest ensemble; beyond a smaller one's M the
    counts are 0 and the frequencies NaN; counts stay integers: float32 would round them),
    ``spread_skill_ratio``, ``ensemble_spread`` and ``ensemble_mean_rmse`` per ``period``
    (``all`` then the seasons).
    """
    names = list(scores)
    if not names:
        return xr.Dataset()
    nrank = max(e.members for e in scores.values()) + 1
    periods: list[str | None] = [None, *seasons]

    def padded(v: np.ndarray, fill: float) -> np.ndarray:
        return np.r_[v, np.full(nrank - v.size, fill, dtype=v.dtype)]

    ens = xr.DataArray(names, dims="ensemble")
    crps = xr.concat(
        [e.crps_map() for e in scores.values()],
        dim=ens,
        coords="minimal",
        compat="override",
        join="override",
    )
    data: dict[str, xr.DataArray] = {
        "crps": crps.assign_attrs(units=units, long_name="temporal mean of the fair CRPS"),
    }
    if seasons:
        per = [
            xr.concat(
                [e.crps_map(s) for s in seasons],
                dim=xr.DataArray(list(seasons), dims="season"),
                coords="minimal",
                compat="override",
                join="override",
            )
            for e in scores.values()
        ]
        data["crps_season"] = xr.concat(
            per, dim=ens, coords="minimal", compat="override", join="override"
        ).assign_attrs(units=units, long_name="seasonal temporal mean of the fair CRPS")
    rank = np.arange(nrank)
    data["rank_histogram"] = xr.DataArray(
        np.stack([padded(e.rank_counts(), 0) for e in scores.values()]),
        dims=("ensemble", "rank"),
        coords={"ensemble": names, "rank": rank},
        attrs={
            "units": "1",
            "long_name": "number of days and points with the truth at each rank among the members",
        },
    )
    data["rank_frequency"] = xr.DataArray(
        np.stack([padded(e.rank_frequency(), np.nan) for e in scores.values()]),
        dims=("ensemble", "rank"),
        coords={"ensemble": names, "rank": rank},
        attrs={
            "units": "1",
            "long_name": "relative frequency of the truth's rank among the members",
        },
    )
    labels = ["all", *seasons]
    for key, fn, long_name, u in (
        ("spread_skill_ratio", EnsembleScores.ssr, "spread-skill ratio (Fortin et al. 2014)", "1"),
        ("ensemble_spread", EnsembleScores.spread, "sqrt((M+1)/M mean ensemble variance)", units),
        ("ensemble_mean_rmse", EnsembleScores.rmse, "RMSE of the ensemble mean", units),
    ):
        data[key] = xr.DataArray(
            np.array([[fn(e, p) for p in periods] for e in scores.values()]),
            dims=("ensemble", "period"),
            coords={"ensemble": names, "period": labels},
            attrs={"units": u, "long_name": long_name},
        )
    return xr.Dataset(data)
