"""Evaluation of downscaled fields against the regional climate model (CORDEX ML-Bench).

* :mod:`~climdl.evaluation.indices` - indices of one simulation (mean, quantiles, SU, TXx, TXn,
  Rx1day, SDII, CDD, CWD, lag-1 autocorrelation, interannual variability), per season too;
* :mod:`~climdl.evaluation.diagnostics` - truth vs prediction (RMSE, bias, correlations, ratio of
  standard deviations, bias/ratio of any index, tasmax-pr correlation);
* :mod:`~climdl.evaluation.distributions` - Wasserstein distances between the value distributions;
* :mod:`~climdl.evaluation.spectra` - radially averaged PSD and RALSD (Harris et al. 2022);
* :mod:`~climdl.evaluation.mlbench` - RMSE, RALSD and Wasserstein distance exactly as the
  benchmark's own code defines them (reported beside climdl's, for its leaderboard);
* :mod:`~climdl.evaluation.signal` - climate-change signal of the emulator vs the RCM;
* :mod:`~climdl.evaluation.summary` - one number per diagnostic, comparison table;
* :mod:`~climdl.evaluation.ensemble` - fair CRPS, spread-skill ratio and rank histogram of a
  prediction with a ``member`` dim (whose members are evaluated as models:
  :mod:`~climdl.evaluation.members`);
* :func:`evaluate` / :func:`evaluate_files` (:mod:`~climdl.evaluation.engine`) and
  :func:`write_outputs` - everything at once,
  written as NetCDF fields, JSON/CSV numbers and an HTML/Markdown report (``climdl evaluate``).

All functions take xarray objects backed by NumPy or Dask and stay lazy; thresholds carry units.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from climdl.evaluation.diagnostics import (
        bias,
        bias_index,
        bias_multivariable_correlation,
        ratio_index,
        rmse,
        spatial_correlation,
        std_ratio,
        temporal_correlation,
    )
    from climdl.evaluation.distributions import wasserstein_distance
    from climdl.evaluation.engine import EvaluationResult, evaluate, evaluate_files
    from climdl.evaluation.indices import (
        cdd,
        cwd,
        interannual_variability,
        lag1_autocorrelation,
        mean,
        quantile,
        rx1day,
        sdii,
        summer_days,
        txn,
        txx,
    )
    from climdl.evaluation.output import write_outputs
    from climdl.evaluation.signal import climate_change_signal, signal_bias
    from climdl.evaluation.spectra import psd, ralsd

# Imported on first use, so that ``climdl --help`` (which imports the cli submodule) stays fast.
_WHERE = {
    **dict.fromkeys(
        [
            "bias",
            "bias_index",
            "bias_multivariable_correlation",
            "ratio_index",
            "rmse",
            "spatial_correlation",
            "std_ratio",
            "temporal_correlation",
        ],
        "diagnostics",
    ),
    "wasserstein_distance": "distributions",
    **dict.fromkeys(["EvaluationResult", "evaluate", "evaluate_files"], "engine"),
    **dict.fromkeys(
        [
            "cdd",
            "cwd",
            "interannual_variability",
            "lag1_autocorrelation",
            "mean",
            "quantile",
            "rx1day",
            "sdii",
            "summer_days",
            "txn",
            "txx",
        ],
        "indices",
    ),
    "write_outputs": "output",
    "climate_change_signal": "signal",
    "signal_bias": "signal",
    "psd": "spectra",
    "ralsd": "spectra",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"climdl.evaluation.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'climdl.evaluation' has no attribute {name!r}")


__all__ = [
    "EvaluationResult",
    "bias",
    "bias_index",
    "bias_multivariable_correlation",
    "cdd",
    "climate_change_signal",
    "cwd",
    "evaluate",
    "evaluate_files",
    "interannual_variability",
    "lag1_autocorrelation",
    "mean",
    "psd",
    "quantile",
    "ralsd",
    "ratio_index",
    "rmse",
    "rx1day",
    "sdii",
    "signal_bias",
    "spatial_correlation",
    "std_ratio",
    "summer_days",
    "temporal_correlation",
    "txn",
    "txx",
    "wasserstein_distance",
    "write_outputs",
]
