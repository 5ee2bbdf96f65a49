"""Figures of an emulator ``climdl sensitivity`` file: adversarial vs random change, saliency.

Per target: the output change per day under each attack (:func:`attack_change_figure`), the
integrated-gradients saliency of every predictor on the coarse grid (:func:`saliency_figure`,
diverging, one symmetric range per target so panels compare) and the first-order change of the
domain mean when a predictor moves by its bound (:func:`bound_sensitivity_figure`, magnitudes,
one range per target). The panel helpers here (:func:`labelled_panels`, :func:`map_panels`,
:func:`block_reduced`) also draw the segmenter's maps (:mod:`climdl.plot.sensitivity_scene`).

The functions take the opened Dataset (grid mapping as a coordinate, ``decode_coords="all"``) and
return Agg figures; reading and checking the file is the caller's job
(:mod:`climdl.evaluation.sensitivity_file`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from climdl.errors import DataError
from climdl.plot.figures import new_figure
from climdl.plot.maps import panel_figure

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from climdl.plot.colours import ResolvedKind

#: per-day measures of an emulator file, in the order they are drawn
MEASURES = ("mean_change", "max_abs_change", "rms_change", "wet_fraction_change")
#: measures whose sign the adversary chose: drawn (and tabulated) as absolute values
SIGNED = frozenset({"mean_change", "wet_fraction_change"})
MEASURE_LABELS = {
    "mean_change": "|change of the domain mean|",
    "max_abs_change": "max. |change| over the grid",
    "rms_change": "RMS change over the grid",
    "wet_fraction_change": "|change of the wet-point fraction|",
}
#: attacks in drawing order (random first: the yardstick left of the adversaries)
ATTACK_ORDER = ("random", "random_max", "fgsm", "pgd", "pgd_rms")
ATTACK_LABELS = {
    "random": "random\n(mean)",
    "random_max": "random\n(largest)",
    "fgsm": "FGSM",
    "pgd": "PGD",
    "pgd_rms": "PGD\n(pattern)",
}
ATTACK_COLOURS = {
    "random": "0.75",
    "random_max": "0.5",
    "fgsm": "#fdae61",
    "pgd": "#d7191c",
    "pgd_rms": "#2c7bb6",
}
#: colours of magnitude maps: pale at 0, so that coastlines stay visible where nothing happens
MAGNITUDE_CMAP = "YlOrRd"
#: the longest side of a scene map; larger scenes are reduced in blocks (a figure shows no more)
MAX_MAP_SIDE = 1024


def targets_of(ds: xr.Dataset) -> list[str]:
    """The targets of an emulator sensitivity file (``T`` for every ``T_mean_change``)."""
    return [str(n)[: -len("_mean_change")] for n in ds.data_vars if str(n).endswith("_mean_change")]


def attacks_of(ds: xr.Dataset) -> list[str]:
    """The file's attacks, known ones in :data:`ATTACK_ORDER`, any others after them."""
    have = [str(a) for a in ds["attack"].values]
    return [a for a in ATTACK_ORDER if a in have] + [a for a in have if a not in ATTACK_ORDER]


def measures_of(ds: xr.Dataset, target: str) -> list[str]:
    """The measures stored for ``target`` (``wet_fraction_change`` for precipitation only)."""
    return [m for m in MEASURES if f"{target}_{m}" in ds]


def day_values(ds: xr.Dataset, target: str, measure: str, attack: str) -> np.ndarray:
    """The finite per-day values of one measure and attack, absolute for signed measures."""
    v = np.asarray(ds[f"{target}_{measure}"].sel(attack=attack).values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    return np.abs(v) if measure in SIGNED else v


def _display(measure: str, units: str) -> tuple[float, str]:
    """Scale and unit label of a measure: fractions are shown in percentage points."""
    if measure == "wet_fraction_change":
        return 100.0, "percentage points"
    return 1.0, units


def _attack_panel(ax: Axes, ds: xr.Dataset, target: str, measure: str) -> None:
    """Boxes (median, quartiles, 5-95 % whiskers) of one measure per attack, days as dots."""
    attacks = attacks_of(ds)
    scale, unit = _display(measure, str(ds[f"{target}_{measure}"].attrs.get("units", "")))
    data = [day_values(ds, target, measure, a) * scale for a in attacks]
    positions = np.arange(1, len(attacks) + 1)
    shown = [d if d.size else np.array([np.nan]) for d in data]
    boxes = ax.boxplot(
        shown,
        positions=positions,
        widths=0.6,
        whis=(5, 95),
        showfliers=False,
        patch_artist=True,
        tick_labels=[ATTACK_LABELS.get(a, a) for a in attacks],
        medianprops={"color": "black", "linewidth": 1.4},
    )
    rng = np.random.default_rng(0)  # fixed jitter: the same file gives the same figure
    for pos, a, d, patch in zip(positions, attacks, data, boxes["boxes"], strict=True):
        colour = ATTACK_COLOURS.get(a, "C7")
        patch.set_facecolor(colour)
        patch.set_alpha(0.55)
        jitter = rng.uniform(-0.18, 0.18, d.size)
        ax.plot(pos + jitter, d, "o", ms=2.5, color=colour, mec="0.2", mew=0.3, alpha=0.9)
    positive = np.concatenate([d[d > 0] for d in data] or [np.zeros(0)])
    everything = np.concatenate(data or [np.zeros(0)])
    if positive.size and positive.size == everything.size and positive.max() > 20 * positive.min():
        ax.set_yscale("log")  # adversaries ~100x random: a linear axis hides the random boxes
    else:
        ax.set_ylim(bottom=0.0)
    ax.set_ylabel(unit)  # the measure is the panel's title
    ax.set_title(MEASURE_LABELS[measure], fontsize="medium")
    ax.grid(True, axis="y", linewidth=0.3, alpha=0.5)
    ax.tick_params(axis="x", labelsize="small")


def attack_change_figure(ds: xr.Dataset, target: str) -> Figure:
    """Adversarial vs random change of ``target``: per measure, a box of the days per attack.

    Box plots on a shared attack axis are chosen over a per-day scatter of adversarial against
    random change: one panel holds all five attacks, the random boxes (grey, left) are the
    yardstick and the adversaries' boxes (colours) how far above it the model can be pushed, so
    "how many times the random change" is read from box heights at a glance; the dots keep every
    day visible (a scatter would need one panel per adversary and hide ``random_max``). The
    adversary chose the sign of the mean and wet-fraction changes, so their absolute values are
    drawn. When every value is positive and they span more than a factor 20, the axis is
    logarithmic so that the random boxes stay readable.

    Args:
        ds: an emulator sensitivity Dataset.
        target: the target variable (e.g. ``tasmax``).

    Returns:
        The figure (one panel per measure).
    """
    measures = measures_of(ds, target)
    if not measures:
        raise DataError(f"the sensitivity file has no change measures for {target!r}.")
    ncols = min(len(measures), 2 if len(measures) == 4 else 3)
    nrows = math.ceil(len(measures) / ncols)
    fig = new_figure((4.2 * ncols, 3.4 * nrows))
    for i, measure in enumerate(measures):
        _attack_panel(fig.add_subplot(nrows, ncols, i + 1), ds, target, measure)
    n = ds.sizes.get("time", 0)
    fig.suptitle(f"{target}: change of the output, adversarial vs random ({n} days)")
    return fig


def _ncols(names: Sequence[str]) -> int:
    """Columns of a predictor panel grid: the levels of a family (``t_500, t_700, t_850``) when
    every family has the same number of levels, so rows are families and columns levels."""
    families: dict[str, int] = {}
    for name in names:
        m = re.fullmatch(r"(.+?)_(\d+)", name)
        families[m.group(1) if m else name] = families.get(m.group(1) if m else name, 0) + 1
    counts = set(families.values())
    if len(counts) == 1 and 1 < (per := counts.pop()) <= 5 and len(families) > 1:
        return per
    return min(len(names), 4)


def _bound_text(ds: xr.Dataset, coord: str, name: str) -> str:
    var = f"{coord}_bound"
    if var not in ds:
        return ""
    text = str(ds[var].sel({coord: name}).values.item())
    return re.sub(r"^(\S+) 1$", r"\1", text)  # "0.01 1" (dimensionless) reads as "0.01"


def labelled_panels(
    ds: xr.Dataset, var: str, coord: str, short: str, how: str = "mean"
) -> tuple[list[str], list[tuple[str, xr.DataArray]]]:
    """The names along ``coord`` and one ``(label with bound, 2-D field)`` per name.

    Fields are relabelled ``short`` so that the colour bars under small panels stay legible,
    and reduced in blocks (:func:`block_reduced`, ``how``) when larger than a figure shows.

    Args:
        ds: a sensitivity Dataset.
        var: the variable with a ``coord`` dimension and two spatial ones.
        coord: ``predictor`` or ``band``; the bound text is ``<coord>_bound``.
        short: the fields' new ``long_name``.
        how: ``mean`` or ``max`` block reduction.

    Returns:
        The names and the labelled fields.
    """
    names = [str(p) for p in ds[coord].values]
    panels = []
    for name in names:
        bound = _bound_text(ds, coord, name)
        label = f"{name} (bound {bound})" if bound else name
        field = block_reduced(ds[var].sel({coord: name}, drop=True), how)
        panels.append((label, field.assign_attrs(long_name=short)))
    return names, panels


def shared_limits(arrays: Sequence[np.ndarray], kind: str) -> tuple[float, float]:
    """One colour range for several panels: the largest of the panels' own robust limits.

    Pooling the values instead would let the panels of unused predictors (all zero) pull the
    98th percentile down and saturate the one that matters; taking each panel's robust limit
    and the widest of them keeps every panel readable on the common scale. Diverging ranges
    are symmetric about 0; sequential ones of non-negative values start at 0.

    Args:
        arrays: the panels' values.
        kind: ``diverging`` or ``sequential``.

    Returns:
        ``(vmin, vmax)``.
    """
    from climdl.plot.colours import robust_limits

    resolved: ResolvedKind = "diverging" if kind == "diverging" else "sequential"
    # a constant panel (an ignored predictor: all zero) has no range of its own to offer
    values = [np.asarray(a, float) for a in arrays]
    varied = [a for a in values if np.unique(a[np.isfinite(a)]).size > 1]
    finite = [robust_limits(a, resolved) for a in varied]
    if not finite:
        return (-1.0, 1.0) if resolved == "diverging" else (0.0, 1.0)
    if resolved == "diverging":
        m = max(hi for _, hi in finite)
        return -m, m
    lo = min(lo for lo, _ in finite)
    if all(np.nanmin(a) >= 0 for a in varied):
        lo = 0.0  # a magnitude (|gradient| x bound): its scale starts at nothing
    return lo, max(hi for _, hi in finite)


def _tidy_colourbars(fig: Figure) -> None:
    """At most five ticks per colour bar, small numbers with a shared power of ten, so the
    labels under narrow panels do not run into each other."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    for ax in fig.axes:
        for mesh in [*ax.collections, *ax.images]:
            cb = getattr(mesh, "colorbar", None)
            if cb is None:
                continue
            formatter = ScalarFormatter(useMathText=True)
            formatter.set_powerlimits((-2, 3))
            cb.locator = MaxNLocator(nbins=4, symmetric=cb.norm.vmin == -cb.norm.vmax)
            cb.formatter = formatter
            cb.update_ticks()


def map_panels(
    panels: Sequence[tuple[str, xr.DataArray]], kind: str, suptitle: str, ncols: int
) -> Figure:
    """Map panels on one colour range (:func:`shared_limits`): on the map projection when the
    grid is placed, else in the grid's own x/y (a scene without geo-reference).

    Args:
        panels: ``(label, 2-D field)`` pairs.
        kind: ``diverging`` (centred on 0) or ``sequential`` (magnitudes, :data:`MAGNITUDE_CMAP`).
        suptitle: the figure's title.
        ncols: panels per row.

    Returns:
        The figure.
    """
    lo, hi = shared_limits([np.asarray(da.values, float) for _, da in panels], kind)
    try:
        fig = panel_figure(
            list(panels),
            kinds=[kind] * len(panels),
            shared=False,
            ncols=ncols,
            suptitle=suptitle,
            panel_size=(3.0, 3.0),
            limits=[(lo, hi)] * len(panels),
        )
    except DataError:
        nrows = math.ceil(len(panels) / ncols)
        fig = new_figure((3.0 * ncols, 3.0 * nrows))
        for i, (label, da) in enumerate(panels):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            mesh = ax.imshow(
                np.asarray(da.values, float),
                origin="lower",
                cmap="RdBu_r" if kind == "diverging" else MAGNITUDE_CMAP,
                vmin=lo,
                vmax=hi,
                interpolation="nearest",
            )
            ax.set_title(label, fontsize="medium")
            units = str(da.attrs.get("units", ""))
            fig.colorbar(mesh, ax=ax, orientation="horizontal", label=units, shrink=0.9)
        fig.suptitle(suptitle)
    if kind == "sequential":
        for ax in fig.axes:
            for artist in [*ax.collections, *ax.images]:
                if getattr(artist, "colorbar", None) is not None:
                    artist.set_cmap(MAGNITUDE_CMAP)
    _tidy_colourbars(fig)
    return fig


def saliency_figure(ds: xr.Dataset, target: str) -> Figure:
    """Integrated-gradients saliency of ``target``'s domain mean per predictor, on the map.

    Diverging colours centred on 0 with one symmetric range for the target
    (:func:`shared_limits`), so that panels compare: a predictor whose map is pale matters
    little for the domain mean.

    Args:
        ds: an emulator sensitivity Dataset.
        target: the target variable.

    Returns:
        The figure (one panel per predictor).
    """
    names, panels = labelled_panels(ds, f"{target}_saliency", "predictor", "saliency")
    return map_panels(
        panels,
        "diverging",
        f"{target}: saliency per predictor (integrated gradients of the domain mean)",
        _ncols(names),
    )


def bound_sensitivity_figure(ds: xr.Dataset, target: str) -> Figure:
    """|d(domain mean of target)/dx| x bound per predictor: where a bounded nudge matters most.

    Args:
        ds: an emulator sensitivity Dataset.
        target: the target variable.

    Returns:
        The figure (one panel per predictor, sequential colours, one scale).
    """
    names, panels = labelled_panels(
        ds, f"{target}_bound_sensitivity", "predictor", "|gradient| x bound"
    )
    return map_panels(
        panels,
        "sequential",
        f"{target}: first-order change of the domain mean for a predictor moved by its bound",
        _ncols(names),
    )


def block_reduced(da: xr.DataArray, how: str) -> xr.DataArray:
    """``da`` reduced in blocks to at most :data:`MAX_MAP_SIDE` per side.

    Args:
        da: a 2-D field.
        how: ``max`` (keeps every flipped pixel visible) or ``mean`` (continuous maps).

    Returns:
        The reduced field (``da`` itself when small enough).
    """
    step = max(1, -(-max(da.shape) // MAX_MAP_SIDE))
    if step == 1:
        return da
    blocks = da.coarsen({d: step for d in da.dims}, boundary="trim", coord_func="mean")
    out = blocks.max() if how == "max" else blocks.mean()
    return out.assign_attrs(da.attrs)
