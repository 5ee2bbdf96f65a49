"""The report of a ``climdl sensitivity`` file: a section of the evaluation report, or its own page.

:func:`sensitivity_section` turns a sensitivity NetCDF (emulator or segmenter kind, see
:mod:`climdl.sensitivity`) into the pieces of a report section titled "Sensitivity to bounded
predictor perturbations": the bounds, a table of the median and maximum over days of each change
measure per attack, the figures of :mod:`climdl.plot.sensitivity` (emulator) or
:mod:`climdl.plot.sensitivity_scene` (segmenter), and the definitions. The file is opened and
checked by :mod:`climdl.evaluation.sensitivity_file`.
``climdl evaluate --sensitivity FILE`` inserts it in the evaluation report;
:func:`write_sensitivity_report` writes it alone as ``report.html`` (figures embedded, the page
can be mailed alone) and ``report.md`` (figures in ``figures/``), which ``climdl sensitivity``
calls after writing its NetCDF.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from climdl.evaluation.report import (
    ReportFigure,
    figure_html,
    figure_markdown,
    html_head,
    save_report_figure,
)
from climdl.evaluation.sensitivity_file import open_sensitivity
from climdl.evaluation.summary import fmt

if TYPE_CHECKING:
    import xarray as xr

PathLike = str | os.PathLike[str]

REPORT_TITLE = "climdl sensitivity"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")


# ----------------------------------------------------------------------------- numbers
def _attr(ds: xr.Dataset, name: str) -> str:
    value = ds.attrs.get(name)
    return "" if value is None else str(value)


def _meta(ds: xr.Dataset, kind: str, p: Path) -> list[tuple[str, str]]:
    items = [("file", str(p)), ("model", _attr(ds, "checkpoints") or _attr(ds, "source"))]
    if kind == "emulator" and "time" in ds.coords and ds.sizes.get("time", 0):
        t = ds["time"].values
        items.append(("days", f"{t.size} ({_day(t[0])} to {_day(t[-1])})"))
    items.append(("bounds", _attr(ds, "bounds")))
    for name, label in (
        ("pgd_steps", "PGD steps"),
        ("random_draws", "random draws" + (" per day" if kind == "emulator" else "")),
        ("ig_steps", "integrated-gradients steps"),
        ("seed", "seed"),
        ("wet_day_threshold", "wet-point threshold"),
        ("classes", "classes"),
    ):
        if _attr(ds, name):
            items.append((label, _attr(ds, name)))
    return [(k, v) for k, v in items if v]


def _day(t: object) -> str:
    try:
        return str(t.strftime("%Y-%m-%d"))  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return str(np.datetime_as_string(np.datetime64(t), unit="D"))  # type: ignore[call-overload]


def emulator_rows(ds: xr.Dataset) -> tuple[list[str], list[list[str]]]:
    """The table of an emulator file: one row per target and attack, the median and maximum
    over days of every measure (absolute values of the signed ones) in the target's units, the
    wet-fraction change in percentage points."""
    from climdl.plot.sensitivity import MEASURES, attacks_of, day_values, measures_of

    targets = _targets(ds)
    present = {m for t in targets for m in measures_of(ds, t)}
    measures = [m for m in MEASURES if m in present]
    head = ["target", "attack", "units"]
    for m in measures:
        head += [f"{_MEASURE_HEAD[m]}: median", f"{_MEASURE_HEAD[m]}: max"]
    rows = []
    for t in targets:
        units = str(ds[f"{t}_mean_change"].attrs.get("units", ""))
        for a in attacks_of(ds):
            row = [t, a, units]
            for m in measures:
                if m not in measures_of(ds, t):
                    row += ["", ""]
                    continue
                v = day_values(ds, t, m, a) * (100.0 if m == "wet_fraction_change" else 1.0)
                row += [fmt(float(np.median(v))), fmt(float(v.max()))] if v.size else ["-", "-"]
            rows.append(row)
    return head, rows


_MEASURE_HEAD = {
    "mean_change": "|mean change|",
    "max_abs_change": "max |change|",
    "rms_change": "RMS change",
    "wet_fraction_change": "|wet-fraction change| [pp]",
}


def _targets(ds: xr.Dataset) -> list[str]:
    from climdl.plot.sensitivity import targets_of

    return targets_of(ds)


def _units(ds: xr.Dataset, target: str, measure: str) -> str:
    units = str(ds[f"{target}_{measure}"].attrs.get("units", ""))
    return "" if units == "1" else units


def _headline(ds: xr.Dataset) -> list[str]:
    """One sentence per target: PGD's median domain-mean change against the random one."""
    from climdl.plot.sensitivity import attacks_of, day_values

    lines: list[str] = []
    attacks = attacks_of(ds)
    if "pgd" not in attacks or "random" not in attacks:
        return lines
    for t in _targets(ds):
        adv = day_values(ds, t, "mean_change", "pgd")
        rnd = day_values(ds, t, "mean_change", "random")
        if not adv.size or not rnd.size:
            continue
        a, r = float(np.median(adv)), float(np.median(rnd))
        units = _units(ds, t, "mean_change")
        ratio = f", {a / r:.3g} times" if r > 0 else ""
        lines.append(
            f"{t}: PGD moves the domain mean by a median {fmt(a)} {units} per day{ratio} the "
            f"change under random perturbations of the same bound ({fmt(r)} {units})."
        )
    return lines


def segmenter_rows(ds: xr.Dataset) -> tuple[list[str], list[list[str]]]:
    """The table of a segmenter file: per attack the share and number of pixels that change."""
    from climdl.plot.sensitivity import attacks_of

    head = ["attack", "pixels that change class", "changed pixels"]
    rows = []
    for a in attacks_of(ds):
        share = float(ds["changed_fraction"].sel(attack=a))
        counts = np.asarray(ds["transitions"].sel(attack=a).values, dtype=float)
        changed = counts.sum() - np.trace(counts) if counts.ndim == 2 else float("nan")
        rows.append([a, f"{fmt(100.0 * share)} %", f"{changed:.0f}"])
    return head, rows


def _bounds(ds: xr.Dataset, kind: str) -> tuple[list[str], list[list[str]]]:
    coord = "predictor" if kind == "emulator" else "band"
    var = f"{coord}_bound"
    names = [str(n) for n in ds[coord].values]
    texts = [str(v) for v in ds[var].values] if var in ds else ["" for _ in names]
    return [coord, "bound"], [[n, b] for n, b in zip(names, texts, strict=True)]


# ----------------------------------------------------------------------------- figures
def _name(text: str) -> str:
    """A harmless file-name component from a name read in the file."""
    safe = _UNSAFE.sub("-", text).lstrip(".")[:64]
    return safe if safe.strip(".-") else "variable"


def _figures(ds: xr.Dataset, kind: str, out: Path, section: str) -> list[ReportFigure]:
    from climdl.plot import sensitivity as s
    from climdl.plot import sensitivity_scene as scene

    folder = out / "figures"
    figs: list[ReportFigure] = []

    def save(fig: object, name: str, caption: str) -> None:
        path = folder / f"sensitivity_{name}.png"
        figs.append(save_report_figure(fig, path, section, caption))  # type: ignore[arg-type]

    if kind == "segmenter":
        save(
            scene.changed_fraction_figure(ds),
            "changed_fraction",
            "Share of valid pixels whose class changes under each perturbation.",
        )
        save(
            scene.transitions_figure(ds),
            "transitions",
            "Class before (rows) and after (columns) each perturbation, in pixels.",
        )
        save(
            scene.changed_map_figure(ds),
            "changed_pgd",
            "Pixels whose class PGD changes (red).",
        )
        save(
            scene.band_maps_figure(ds, "band_bound_sensitivity"),
            "band_bound_sensitivity",
            "First-order change of the cross-entropy when a band moves by its bound, per pixel.",
        )
        if "band_saliency" in ds:
            save(
                scene.band_maps_figure(ds, "band_saliency"),
                "band_saliency",
                "Integrated-gradients saliency of each band.",
            )
        return figs
    for t in s.targets_of(ds):
        n = _name(t)
        save(
            s.attack_change_figure(ds, t),
            f"{n}_attacks",
            f"Change of {t} per day under each perturbation: boxes span the quartiles, "
            "whiskers the 5th-95th percentiles, dots are days; grey: random, colours: adversarial.",
        )
        save(
            s.saliency_figure(ds, t),
            f"{n}_saliency",
            f"Integrated-gradients saliency of the domain-mean {t} per predictor, mean over "
            "days (one colour scale: panels compare).",
        )
        save(
            s.bound_sensitivity_figure(ds, t),
            f"{n}_bound_sensitivity",
            f"First-order change of the domain-mean {t} when a predictor at a grid point moves "
            "by its bound, mean over days.",
        )
    return figs


# ----------------------------------------------------------------------------- text
DEFINITIONS = [
    (
        "bounds",
        "Each predictor may move by at most its bound at every grid point and day, in its own "
        "units (a '%' bound is relative to the value); predictors without a bound are held fixed.",
    ),
    (
        "FGSM",
        "Fast gradient sign method (Goodfellow et al. 2015): one step to the corner of the bounds "
        "along the sign of the gradient of the objective.",
    ),
    (
        "PGD",
        "Projected gradient descent (Madry et al. 2018): a few gradient-sign steps, each projected "
        "back into the bounds; the best iterate is kept.",
    ),
    (
        "adversary's objective",
        "FGSM and PGD maximise the change of the domain mean of the target (both signs tried, "
        "the larger kept); 'PGD (pattern)' maximises the RMS change of the field from the "
        "unperturbed prediction, started at a random corner. For the cloud CNN the objective "
        "is the cross-entropy against the unperturbed classes.",
    ),
    (
        "random",
        "Random corners of the bounds (each predictor value moved up or down by its full bound, "
        "signs drawn at random): 'random' is the mean of each measure over the draws, "
        "'random (largest)' the draw with the largest absolute value.",
    ),
    ("|mean change|", "Absolute change of the target's mean over the valid grid points."),
    ("max |change|", "Largest absolute change at any grid point."),
    ("RMS change", "Root-mean-square change over the grid points."),
    (
        "|wet-fraction change|",
        "Absolute change of the fraction of grid points with precipitation at or above the "
        "wet-point threshold (1 mm/day), in percentage points (pp), on the predicted field as "
        "downscale writes it (for a Bernoulli-gamma model its expected value, not a sampled "
        "wet-day occurrence).",
    ),
    (
        "saliency",
        "Integrated gradients of the domain mean from a baseline to the day's predictors, "
        "averaged over days; the maps of all predictors sum to the change of the domain mean "
        "from the baseline. The baseline is the model's training mean of each predictor; for "
        "models that standardise each daily map (Doury's daily_map), the day's spatial mean with "
        "the day's spatial moments held, so the maps attribute the anomaly pattern (the "
        "variable's comment says which).",
    ),
    (
        "bound sensitivity",
        "|d(domain mean)/d(predictor)| times the bound at each grid point, averaged over days: "
        "the first-order change of the domain mean when that predictor there moves by its bound.",
    ),
]


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]], left: int = 3) -> str:
    """An HTML table; the first ``left`` columns (names) left-aligned, numbers right-aligned."""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="l">{html.escape(c)}</td>' if i < left else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _html_pairs(items: Sequence[tuple[str, str]]) -> str:
    return (
        "<table>"
        + "".join(
            f'<tr><td class="l">{html.escape(k)}</td><td class="l">{html.escape(v)}</td></tr>'
            for k, v in items
        )
        + "</table>"
    )


def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def cell(c: str) -> str:
        return c.replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, head)) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return [*lines, ""]


def sensitivity_section(
    nc_path: PathLike, out_dir: PathLike, *, shown_as: PathLike | None = None
) -> tuple[list[ReportFigure], str, str]:
    """The sensitivity section of a report, from a ``climdl sensitivity`` file.

    The figures are written to ``out_dir/figures/sensitivity_*.png``; the HTML piece embeds them
    (base64) and the Markdown piece links them relative to ``out_dir``. Both start with a
    second-level heading and hold the bounds, the summary table, the figures and the
    definitions, ready to be inserted in a page.

    Args:
        nc_path: the sensitivity NetCDF (emulator or segmenter kind).
        out_dir: the report's folder.
        shown_as: the file's name in the report, if not ``nc_path`` (a file read from a
            temporary folder before it is moved to where the reader will find it).

    Returns:
        The figures written, the HTML section and the Markdown section.

    Raises:
        DataError: ``nc_path`` is not a sensitivity file this climdl reads (see
            :func:`~climdl.evaluation.sensitivity_file.open_sensitivity`).
        OutputError: a figure cannot be written.
    """
    p, out = Path(nc_path), Path(out_dir)
    with open_sensitivity(p) as (ds, kind):
        what = "predictor" if kind == "emulator" else "band"
        title = f"Sensitivity to bounded {what} perturbations"
        meta = _meta(ds, kind, p if shown_as is None else Path(shown_as))
        bounds = _bounds(ds, kind)
        table = emulator_rows(ds) if kind == "emulator" else segmenter_rows(ds)
        headline = _headline(ds) if kind == "emulator" else []
        figs = _figures(ds, kind, out, title)
    intro = (
        "How far a perturbation of the inputs within the bounds below can move the output: "
        "chosen adversarially (FGSM, PGD) against random perturbations of the same size."
    )
    caption = (
        "Median and maximum over days of each measure, per attack."
        if kind == "emulator"
        else "Pixels whose class changes, per attack."
    )
    definitions = DEFINITIONS if kind == "emulator" else DEFINITIONS[:5]
    parts = [f"<h2>{html.escape(title)}</h2>", f"<p>{html.escape(intro)}</p>"]
    parts.append(_html_pairs(meta))
    parts += [f"<p>{html.escape(line)}</p>" for line in headline]
    parts += ["<h3>Bounds</h3>", _html_table(*bounds, 2)]
    left = 3 if kind == "emulator" else 1
    parts += [f"<h3>Change per attack</h3><p>{html.escape(caption)}</p>", _html_table(*table, left)]
    parts += [figure_html(f) for f in figs]
    parts += ["<h3>Definitions</h3>", _html_pairs(definitions)]
    md = [f"## {title}", "", intro, ""]
    md += [f"- **{k}**: {v}" for k, v in meta] + [""]
    md += [line + "\n" for line in headline]
    md += ["### Bounds", "", *_md_table(*bounds)]
    md += ["### Change per attack", "", caption, "", *_md_table(*table)]
    for f in figs:
        md += figure_markdown(f, out)
    md += ["### Definitions", ""] + [f"- **{k}**: {v}" for k, v in definitions]
    return figs, "\n".join(parts), "\n".join(md) + "\n"


def _write_text(path: Path, text: str) -> Path:
    from climdl.io.netcdf import atomic_path

    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_sensitivity_report(
    nc_path: PathLike,
    out_dir: PathLike,
    *,
    title: str = REPORT_TITLE,
    shown_as: PathLike | None = None,
) -> tuple[Path, Path]:
    """Write the stand-alone report of a sensitivity file: ``report.html`` and ``report.md``.

    ``report.html`` embeds every figure (base64 PNG); ``report.md`` links the PNGs in
    ``out_dir/figures/``. Every file is written through a temporary name and renamed when
    complete; existing report files are replaced (the caller decides about overwriting).

    Args:
        nc_path: the sensitivity NetCDF (emulator or segmenter kind).
        out_dir: the folder to write to (created when missing).
        title: the page's title.
        shown_as: the file's name in the report, if not ``nc_path``.

    Returns:
        The paths of ``report.html`` and ``report.md``.

    Raises:
        DataError: ``nc_path`` is not a sensitivity file this climdl reads.
        OutputError: the folder or a file cannot be written.
    """
    out = Path(out_dir)
    figs, section_html, section_md = sensitivity_section(nc_path, out, shown_as=shown_as)
    del figs
    page = f"{html_head(title)}\n{section_html}\n</body></html>\n"
    html_path = _write_text(out / "report.html", page)
    md_path = _write_text(out / "report.md", f"# {title}\n\n{section_md}")
    return html_path, md_path
