"""The "Ensemble" section of the evaluation report: CRPS maps, rank histograms, spread-skill.

Drawn from the ensemble fields of each variable (:func:`climdl.evaluation.ensemble_table.
ensemble_fields`) with the report's helpers; a result without ensemble predictions has no
such fields and gets no section.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from climdl.evaluation.report import ReportFigure, save_report_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The report section of the ensemble figures.
SECTION = "Ensemble"


def _rank_histogram(ds: xr.Dataset, variable: str) -> Figure:
    from climdl.plot import new_figure

    names = [str(n) for n in ds["ensemble"].values]
    fig = new_figure((3.6 * len(names) + 1.0, 3.6))
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        f = np.asarray(ds["rank_frequency"].sel(ensemble=name).values, dtype=np.float64)
        f = f[np.isfinite(f)]
        ax.bar(np.arange(f.size), f, width=0.9, color="C0")
        if f.size:
            ax.axhline(1.0 / f.size, color="black", linestyle="--", linewidth=1.0, label="flat")
        ax.set_xlabel(f"rank of the truth among {f.size - 1} members")
        ax.set_ylabel("relative frequency")
        ax.set_title(f"{name}", fontsize="medium")
        ax.legend(frameon=False)
    fig.suptitle(f"{variable}: rank histogram", fontsize="medium")
    return fig


def _spread_skill(ds: xr.Dataset, variable: str) -> Figure:
    from climdl.plot import new_figure

    names = [str(n) for n in ds["ensemble"].values]
    periods = [str(p) for p in ds["period"].values]
    units = str(ds["ensemble_spread"].attrs.get("units", ""))
    fig = new_figure((max(5.0, 1.2 * len(periods) * len(names) + 2.0), 4.0))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(periods))
    width = 0.8 / (2 * len(names))
    for i, name in enumerate(names):
        spread = ds["ensemble_spread"].sel(ensemble=name).values
        rmse = ds["ensemble_mean_rmse"].sel(ensemble=name).values
        ssr = ds["spread_skill_ratio"].sel(ensemble=name).values
        left = x - 0.4 + 2 * i * width
        ax.bar(left, spread, width, align="edge", color=f"C{2 * i}", label=f"{name}: spread")
        ax.bar(
            left + width,
            rmse,
            width,
            align="edge",
            color=f"C{2 * i + 1}",
            label=f"{name}: RMSE of ens. mean",
        )
        for xi, top, r in zip(left + width, np.fmax(spread, rmse), ssr, strict=True):
            if np.isfinite(r):
                ax.annotate(f"{r:.2f}", (xi, top), ha="center", va="bottom", fontsize="small")
    ax.set_xticks(x, periods)
    ax.set_ylabel(f"[{units}]")
    ax.set_title(
        f"{variable}: ensemble spread vs RMSE of the ensemble mean (number: spread-skill ratio)",
        fontsize="medium",
    )
    ax.legend(frameon=False, fontsize="small")
    ax.grid(True, axis="y", linewidth=0.3, alpha=0.5)
    return fig


def ensemble_figures(fields: Mapping[str, xr.Dataset], out: Path) -> list[ReportFigure]:
    """The figures of the "Ensemble" section, written to ``out/figures``.

    Args:
        fields: the evaluation's fields per variable.
        out: the report folder.

    Returns:
        Per variable with ensemble scores: the CRPS maps, the rank histogram and the
        spread-skill figure; none without ensemble predictions.
    """
    from climdl.plot import panel_figure

    figs: list[ReportFigure] = []
    for variable, ds in fields.items():
        if "crps" not in ds:
            continue
        units = str(ds["crps"].attrs.get("units", ""))
        panels = [(f"{n}: CRPS", ds["crps"].sel(ensemble=n)) for n in ds["ensemble"].values]
        fig = panel_figure(
            panels,
            kinds=["sequential"] * len(panels),
            suptitle=f"{variable}: temporal mean of the fair CRPS",
        )
        figs.append(
            _save(
                fig,
                out,
                variable,
                "crps",
                f"Temporal mean of the fair CRPS of {variable} [{units}] at each point "
                "(lower is better; the mean absolute error for one member).",
            )
        )
        figs.append(
            _save(
                _rank_histogram(ds, variable),
                out,
                variable,
                "rank_histogram",
                f"Rank histogram of {variable}: frequency of the truth's rank among the "
                "members (ties broken at random). Flat: calibrated; U-shaped: "
                "under-dispersive; dome-shaped: over-dispersive.",
            )
        )
        figs.append(
            _save(
                _spread_skill(ds, variable),
                out,
                variable,
                "spread_skill",
                f"Ensemble spread (sqrt((M+1)/M mean variance)) and RMSE of the "
                f"ensemble mean of {variable}, all days and per season; their ratio "
                "(spread-skill ratio, Fortin et al. 2014) is 1 for a calibrated "
                "ensemble.",
            )
        )
    return figs


def _save(fig: Figure, out: Path, variable: str, name: str, caption: str) -> ReportFigure:
    return save_report_figure(
        fig, out / "figures" / f"{variable}_ensemble_{name}.png", SECTION, caption
    )
