"""The evaluation report: a self-contained HTML page and a Markdown twin.

The HTML file embeds every figure as a base64 PNG (it can be mailed or archived alone); the
Markdown file links the same PNGs in ``figures/``. Contents: what was evaluated, the comparison
table (emulator vs each baseline, best value in bold), and per variable maps of the bias and of
key indices on the native grid (:mod:`climdl.plot`, offline coastlines), the radially averaged
spectra, histograms of all values, climate-change signal maps when a historical period was
given, an "Ensemble" section for ensemble predictions (:mod:`climdl.evaluation.ensemble_report`;
their cells read "mean ± std over members") and the definitions of every summary number.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from climdl.evaluation.summary import BETTER_TEXT, Row, cell, fmt, models_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from climdl.evaluation.engine import EvaluationResult

#: Index maps shown per variable (first ones present are used).
KEY_INDICES: dict[str, tuple[str, ...]] = {
    "tasmax": ("mean", "txx"),
    "tas": ("mean",),
    "tasmin": ("mean",),
    "pr": ("mean", "rx1day"),
}
_KIND = {"tasmax": "temperature", "tas": "temperature", "tasmin": "temperature", "pr": "precip"}


@dataclass
class ReportFigure:
    """One figure of the report: its file (under ``figures/``), caption and section."""

    section: str
    path: Path
    caption: str


# ----------------------------------------------------------------------------- figures
def _maps(panels: Sequence[tuple[str, xr.DataArray]], kind: str, suptitle: str) -> Figure:
    from climdl.plot import panel_figure

    return panel_figure(list(panels), kinds=[kind] * len(panels), suptitle=suptitle)


def _histogram(ds: xr.Dataset, variable: str, units: str) -> Figure:
    from climdl.plot import new_figure

    fig = new_figure((6.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    lower = np.asarray(ds["bin_lower"].values)
    upper = np.asarray(ds["bin_upper"].values)
    edges = np.r_[lower, upper[-1:]]
    widths = upper - lower
    for i, source in enumerate(ds["source"].values):
        counts = np.asarray(ds["histogram"].sel(source=source).values, dtype=np.float64)
        total = counts.sum()
        dens = counts / (total * widths) if total > 0 else counts
        truth = str(source) == "truth"
        ax.stairs(
            dens,
            edges,
            label=str(source),
            baseline=None,
            linewidth=1.6 if truth else 1.1,
            color="black" if truth else f"C{i - 1}",
        )
    if variable == "pr":
        ax.set_yscale("log")
    ax.set_xlabel(f"{variable} [{units}]")
    ax.set_ylabel(f"density [1/({units})]")
    ax.set_title(f"{variable}: distribution of all values", fontsize="medium")
    ax.legend(frameon=False)
    ax.grid(True, linewidth=0.3, alpha=0.5)
    return fig


def _psd(ds: xr.Dataset, variable: str, units: str) -> Figure:
    from climdl.plot import new_figure, plot_psd

    fig = new_figure((6.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    k = np.asarray(ds["wavenumber"].values)
    curves = {str(s): (k, np.asarray(ds["psd"].sel(source=s).values)) for s in ds["source"].values}
    plot_psd(curves, ax=ax, units=units, title=f"{variable}: radially averaged PSD (time mean)")
    return fig


def _figures_for(variable: str, ds: xr.Dataset, out: Path) -> list[ReportFigure]:
    """Draw and save every figure of one variable; returns them in report order."""
    figs: list[ReportFigure] = []
    if variable == "tasmax-pr":
        panels = [(str(s), ds["correlation"].sel(source=s)) for s in ds["source"].values]
        fig = _maps(panels, "diverging", "temporal correlation of tasmax and pr")
        figs.append(
            _save(
                fig,
                out,
                variable,
                "tasmax_pr_correlation",
                "Temporal correlation of daily tasmax and pr at each grid point.",
            )
        )
        return figs
    units = str(ds["bias"].attrs.get("units", ""))
    models = [str(m) for m in ds["model"].values]
    panels = [(f"{m}: bias of mean", ds["bias"].sel(model=m)) for m in models]
    fig = _maps(panels, "diverging", f"{variable}: bias of the mean (prediction - truth)")
    figs.append(
        _save(
            fig,
            out,
            variable,
            "bias",
            f"Bias of the mean of {variable} [{units}] "
            "(prediction minus truth) on the native grid.",
        )
    )
    for name in KEY_INDICES.get(variable, ("mean",)):
        key = f"index_{name}"
        if key not in ds:
            continue
        label = str(ds[key].attrs.get("long_name", name))
        panels = [(f"{s}: {label}", ds[key].sel(source=s)) for s in ds["source"].values]
        fig = _maps(panels, _KIND.get(variable, "auto"), f"{variable}: {label}")
        figs.append(
            _save(
                fig,
                out,
                variable,
                f"index_{name}",
                f"{label} of {variable} in the truth and each prediction (one scale).",
            )
        )
    signals = [
        str(k)
        for k in ds.data_vars
        if str(k).startswith("signal_") and not str(k).startswith("signal_bias")
    ]
    for skey in signals[:1]:
        da = ds[skey]
        panels = [(f"{s}: change", da.sel(signal_source=s)) for s in da["signal_source"].values]
        fig = _maps(panels, "diverging", f"{variable}: {da.attrs.get('long_name', skey)}")
        figs.append(
            _save(
                fig,
                out,
                variable,
                skey,
                f"Climate-change signal (future - historical) of {variable} "
                f"[{da.attrs.get('units', '')}].",
            )
        )
    figs.append(
        _save(
            _psd(ds, variable, units),
            out,
            variable,
            "psd",
            f"Radially averaged power spectral density of daily {variable} fields, "
            "averaged over days; wavelength on the top axis.",
        )
    )
    figs.append(
        _save(
            _histogram(ds, variable, units),
            out,
            variable,
            "histogram",
            f"Distribution of all daily {variable} values (space and time pooled).",
        )
    )
    return figs


def save_report_figure(fig: Figure, path: Path, section: str, caption: str) -> ReportFigure:
    """Save ``fig`` as the PNG ``path`` (atomically, 110 dpi) and describe it for the report.

    Args:
        fig: the figure.
        path: the PNG to write (under the report's ``figures/``).
        section: the report section the figure belongs to.
        caption: its caption.

    Returns:
        The report's record of the figure.
    """
    from climdl.plot import save_figure

    save_figure(fig, path, dpi=110, overwrite=True)
    return ReportFigure(section, path, caption)


def _save(fig: Figure, out: Path, variable: str, name: str, caption: str) -> ReportFigure:
    return save_report_figure(fig, out / "figures" / f"{variable}_{name}.png", variable, caption)


def make_figures(result: EvaluationResult, out: Path) -> list[ReportFigure]:
    """Every figure of the report per variable, written to ``out/figures`` (the "Ensemble"
    section's come from :func:`climdl.evaluation.ensemble_report.ensemble_figures`)."""
    figs: list[ReportFigure] = []
    for variable, ds in result.fields.items():
        figs += _figures_for(variable, ds, out)
    return figs


# ----------------------------------------------------------------------------- text
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;
margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right}
th:first-child,td:first-child,td.l{text-align:left}
td.best{font-weight:bold;background:#e6f4ea}
figure{margin:1.5em 0}figure img{max-width:100%}figcaption{font-size:0.9em;color:#555}
code{background:#f4f4f4;padding:0 0.2em}
"""


def _meta_lines(meta: dict[str, object]) -> list[tuple[str, str]]:
    items = [
        ("models", ", ".join(map(str, meta.get("models", [])))),  # type: ignore[call-overload]
        ("variables", ", ".join(map(str, meta.get("variables", [])))),  # type: ignore[call-overload]
        ("period", " to ".join(map(str, meta.get("period", [])))),  # type: ignore[call-overload]
        (
            "days" if meta.get("time_step", "daily") == "daily" else "time steps",
            str(meta.get("n_days", ""))
            + ("" if meta.get("time_step", "daily") == "daily" else f" ({meta['time_step']})"),
        ),
        ("calendar", str(meta.get("calendar", ""))),
        ("grid", " x ".join(f"{v} {k}" for k, v in dict(meta.get("grid", {})).items())),  # type: ignore[call-overload]
        ("evaluation time", f"{meta.get('seconds', '')} s"),
    ]
    for v, names in dict(meta.get("skipped_indices", {})).items():  # type: ignore[call-overload]
        items.append((f"left out for {v} (not daily)", ", ".join(map(str, names))))
    if meta.get("skipped_seasons"):
        items.append(
            (
                f"seasons left out ({meta.get('time_step')} steps span several)",
                ", ".join(map(str, meta["skipped_seasons"])),  # type: ignore[call-overload]
            )
        )
    if "historical_period" in meta:
        items.append(("historical period", " to ".join(map(str, meta["historical_period"]))))  # type: ignore[call-overload]
    for k, v in dict(meta.get("inputs", {})).items():  # type: ignore[call-overload]
        items.append((f"input: {k}", ", ".join(map(str, v))))
    return items


def _html_table(rows: Sequence[Row]) -> str:
    models = models_of(rows)
    head = "".join(
        f"<th>{html.escape(h)}</th>"
        for h in ["variable", "diagnostic", "units", "truth", *models, "best is"]
    )
    body = []
    for r in rows:
        best = set(r.best())
        cells = "".join(
            f'<td class="best">{cell(r, m)}</td>' if m in best else f"<td>{cell(r, m)}</td>"
            for m in models
        )
        ref = fmt(r.reference) if r.reference is not None else ""
        body.append(
            f'<tr><td class="l">{html.escape(r.variable)}</td>'
            f'<td class="l" title="{html.escape(r.reduction)}">{html.escape(r.label)}</td>'
            f'<td class="l">{html.escape(r.units)}</td><td>{ref}</td>{cells}'
            f'<td class="l">{BETTER_TEXT[r.better]}</td></tr>'
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _definitions(rows: Sequence[Row]) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for r in rows:
        seen.setdefault(f"{r.label} ({r.key})" if r.key not in seen else r.key, r.reduction)
    return list(seen.items())


def figure_html(f: ReportFigure) -> str:
    """One figure as an HTML ``<figure>`` with the PNG embedded (base64) and its caption."""
    data = base64.b64encode(f.path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(f.path.name)}" '
        f'src="data:image/png;base64,{data}"><figcaption>'
        f"{html.escape(f.caption)}</figcaption></figure>"
    )


def figure_markdown(f: ReportFigure, out: Path) -> list[str]:
    """One figure as Markdown lines: the PNG linked relative to ``out``, then its caption."""
    return [f"![{f.caption}]({f.path.relative_to(out).as_posix()})", "", f"*{f.caption}*", ""]


def html_head(title: str) -> str:
    """The start of a report page: doctype, title, the report's CSS, the ``<h1>``."""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
    )


def render_html(
    result: EvaluationResult, figs: Sequence[ReportFigure], title: str, extra_html: str = ""
) -> str:
    """The self-contained HTML report; ``extra_html`` (a section, e.g. the sensitivity section
    of :mod:`climdl.evaluation.sensitivity_report`) goes after the figures."""
    parts = [html_head(title)]
    parts.append(
        "<table>"
        + "".join(
            f'<tr><td class="l">{html.escape(k)}</td><td class="l">{html.escape(v)}</td></tr>'
            for k, v in _meta_lines(result.meta)
        )
        + "</table>"
    )
    parts.append(
        "<h2>Comparison</h2><p>One number per diagnostic and model; the best value of "
        "each row is in bold; <em>truth</em> is the reference simulation's own value "
        "of an index (spatial mean) for scale. Hover a diagnostic for its reduction.</p>"
    )
    parts.append(_html_table(result.rows))
    for section in dict.fromkeys(f.section for f in figs):
        parts.append(f"<h2>{html.escape(section)}</h2>")
        parts += [figure_html(f) for f in figs if f.section == section]
    if extra_html:  # an evaluation without a sensitivity file renders as before
        parts.append(extra_html)
    parts.append(
        "<h2>Definitions</h2><table>"
        + "".join(
            f'<tr><td class="l">{html.escape(k)}</td><td class="l">{html.escape(v)}</td></tr>'
            for k, v in _definitions(result.rows)
        )
        + "</table>"
    )
    parts.append(
        "<p>Definitions follow the CORDEX ML-Bench evaluation (indices: ETCCDI; RALSD: "
        "Harris et al. 2022); see the climdl.evaluation docstrings for departures. Rows "
        "labelled (ML-Bench definition) are computed as the benchmark's own code computes "
        "them, for comparison with its leaderboard (climdl.evaluation.mlbench).</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(
    result: EvaluationResult,
    figs: Sequence[ReportFigure],
    title: str,
    out: Path,
    extra_markdown: str = "",
) -> str:
    """The Markdown report (figures linked from ``figures/``); ``extra_markdown`` (a section)
    goes after the figures."""
    from climdl.evaluation.summary import to_markdown

    lines = [f"# {title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in _meta_lines(result.meta)]
    lines += [
        "",
        "## Comparison",
        "",
        "One number per diagnostic and model; the best value of each row is in bold; "
        "*truth* is the reference simulation's own value of an index (spatial mean).",
        "",
        to_markdown(result.rows),
    ]
    for section in dict.fromkeys(f.section for f in figs):
        lines += [f"## {section}", ""]
        for f in (f for f in figs if f.section == section):
            lines += figure_markdown(f, out)
    if extra_markdown:
        lines += [extra_markdown.rstrip("\n"), ""]
    lines += ["## Definitions", ""]
    lines += [f"- **{k}**: {v}" for k, v in _definitions(result.rows)]
    return "\n".join(lines) + "\n"
