"""Writing an evaluation to a folder: fields as NetCDF, summary numbers as JSON/CSV, the report.

Layout of ``out/``::

    summary.json  summary.csv  summary.md      one number per diagnostic and model
    fields_<variable>.nc, fields_tasmax-pr.nc   maps, spectra, histograms (CF NetCDF)
    report.html (self-contained)  report.md  figures/*.png (an "Ensemble" section for
                                                ensemble predictions)

The set appears whole or not at all. Every file is written into a hidden temporary folder on the
file system of ``out`` (:func:`climdl.io.staged_folder.staged_folder`), which is removed on any failure or interrupt
(a full disk, Ctrl-C): summaries without the fields or the report would look like a finished
run, and a rerun would refuse the folder as holding an earlier report. A missing ``out`` is then
made by one rename of the temporary folder; an existing one (a mount point, a folder made for the
run) gets the entries renamed into it, a window of a few renames. A folder that already holds
files is not touched unless ``overwrite`` is given; then an earlier evaluation's entries (the
names below) are replaced as a whole, so that no report of the earlier run stays beside the new
numbers, and other files are kept.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from climdl.errors import OutputError
from climdl.evaluation import summary
from climdl.evaluation.engine import EvaluationResult
from climdl.io.netcdf import atomic_path, write_netcdf
from climdl.io.provenance import CF_CONVENTIONS, stamped
from climdl.io.staged_folder import content, stage_prefix, staged_folder
from climdl.io.umask import private_to_usual

REPORT_TITLE = "climdl evaluation"


#: The entries an evaluation writes into its folder (besides ``fields_<variable>.nc``).
OWN_ENTRIES = frozenset(
    {"summary.json", "summary.csv", "summary.md", "report.html", "report.md", "figures"}
)
#: The command's name in the hidden folders made inside an existing ``out``.
COMMAND = "evaluate"
#: The prefix of the temporary folder made inside an existing ``out`` (one left by a killed
#: run is not counted as content, and is removed by the next evaluation).
STAGE_PREFIX = stage_prefix(COMMAND)


def _is_own(name: str) -> bool:
    """Whether an entry of the folder belongs to an evaluation (replaced by ``overwrite``)."""
    return name in OWN_ENTRIES or (name.startswith("fields_") and name.endswith(".nc"))


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder without ``overwrite`` (OutputError), or a file in its place."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder; choose another --out.")
    if out.is_dir() and content(out, COMMAND) and not overwrite:
        raise OutputError(
            f"{out} is not empty (it may hold an earlier report); pass --overwrite to replace "
            "its files or choose another --out."
        )


def _readable(path: Path) -> None:
    """Give a finished file the usual permissions (the temporary file was private, 0600)."""
    private_to_usual(path)


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` atomically (replacing an existing file)."""
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _cf_dataset(ds: xr.Dataset, meta: dict[str, Any]) -> xr.Dataset:
    """Attributes NetCDF accepts, grid_mapping on spatial fields, CF global attributes."""
    ds = ds.copy()
    gm = [str(n) for n, c in ds.coords.items() if "grid_mapping_name" in c.attrs]
    grid = tuple(ds["lat"].dims) if "lat" in ds.coords and ds["lat"].ndim == 2 else ("y", "x")
    for name, var in ds.data_vars.items():
        attrs = {k: v for k, v in var.attrs.items() if v is not None}
        if gm and tuple(var.dims[-2:]) == grid:
            attrs["grid_mapping"] = gm[0]
        ds[name].attrs = attrs
    ds.attrs = {
        "Conventions": CF_CONVENTIONS,
        "title": f"climdl evaluation of {ds.attrs.get('variable', '')}",
        "variable": str(ds.attrs.get("variable", "")),
        "models": ", ".join(map(str, meta.get("models", []))),
        "period": " to ".join(map(str, meta.get("period", []))),
        "source": f"climdl {meta.get('climdl_version', '')}",
        "history": stamped("climdl evaluate"),
    }
    return ds


def _encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    enc: dict[str, dict[str, Any]] = {}
    for name, var in ds.data_vars.items():
        if np.issubdtype(var.dtype, np.floating):
            enc[str(name)] = {
                "zlib": True,
                "complevel": 4,
                "dtype": "f4",
                "_FillValue": np.float32(np.nan),
            }
        elif np.issubdtype(var.dtype, np.integer):
            enc[str(name)] = {"zlib": True, "complevel": 4}
    return enc


def write_outputs(
    result: EvaluationResult,
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    report: bool = True,
    title: str = REPORT_TITLE,
    sensitivity: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Write every output of ``result`` to ``out``; returns the paths by kind.

    Args:
        result: what :func:`~climdl.evaluation.engine.evaluate` returned.
        out: the output folder (created when missing).
        overwrite: replace existing outputs.
        report: also write the HTML and Markdown report with its figures.
        title: the report's title.
        sensitivity: a ``climdl sensitivity`` file whose section the report gets.

    Returns:
        Kind (``summary_json``, ``summary_csv``, ``fields_<variable>``, ``report_html``, ...) ->
        path written.

    Raises:
        OutputError: an output exists (without ``overwrite``) or the folder cannot be written.
    """
    out = Path(out)
    staged = staged_folder(
        out,
        own=_is_own,
        marker="summary.json",
        command=COMMAND,
        overwrite=overwrite,
        check=lambda folder: check_out_dir(folder, overwrite),
    )
    with staged as stage:
        written = _write_all(result, stage, report, title, sensitivity)
    return {kind: out / path.relative_to(stage) for kind, path in written.items()}


def _write_all(
    result: EvaluationResult,
    out: Path,
    report: bool,
    title: str,
    sensitivity: str | os.PathLike[str] | None,
) -> dict[str, Path]:
    """Write every output of ``result`` into the empty folder ``out``; the paths by kind."""
    paths: dict[str, Path] = {}
    meta = dict(result.meta)
    paths["summary_json"] = write_text(out / "summary.json", summary.to_json(result.rows, meta))
    paths["summary_csv"] = write_text(out / "summary.csv", summary.to_csv(result.rows))
    paths["summary_md"] = write_text(out / "summary.md", summary.to_markdown(result.rows))
    for variable, ds in result.fields.items():
        cf = _cf_dataset(ds, meta)
        paths[f"fields_{variable}"] = write_netcdf(
            cf, out / f"fields_{variable}.nc", encoding=_encoding(cf), overwrite=True
        )
    if report:
        from climdl.evaluation.ensemble_report import ensemble_figures
        from climdl.evaluation.report import (
            ReportFigure,
            make_figures,
            render_html,
            render_markdown,
        )

        figs = make_figures(result, out) + ensemble_figures(result.fields, out)
        extra_figs: list[ReportFigure] = []
        extra_html = extra_md = ""
        if sensitivity is not None:
            from climdl.evaluation.sensitivity_report import sensitivity_section

            extra_figs, extra_html, extra_md = sensitivity_section(sensitivity, out)
        paths["report_html"] = write_text(
            out / "report.html", render_html(result, figs, title, extra_html)
        )
        paths["report_md"] = write_text(
            out / "report.md", render_markdown(result, figs, title, out, extra_md)
        )
        for fig in [*figs, *extra_figs]:
            _readable(fig.path)
    for path in paths.values():
        _readable(path)
    return paths
