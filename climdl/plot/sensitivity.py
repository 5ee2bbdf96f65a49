"""Figures of a ``climdl sensitivity`` file: adversarial vs random change, saliency maps.

Emulator files (``climdl_sensitivity = "emulator"``) give, per target, one figure of the output
change per day under each attack (:func:`attack_change_figure`), the integrated-gradients
saliency of every predictor on the coarse grid (:func:`saliency_figure`, diverging, one symmetric
scale per target so panels compare) and the first-order change of the domain mean when a
predictor moves by its bound (:func:`bound_sensitivity_figure`, sequential, one scale per
target). Segmenter files give the share of pixels that change class per attack
(:func:`changed_fraction_figure`), the class transitions (:func:`transitions_figure`), the map of
pixels PGD flips (:func:`changed_map_figure`) and per-band maps (:func:`band_maps_figure`).

The functions take the opened Dataset (grid mapping as a coordinate, ``decode_coords="all"``) and
return Agg figures; reading and checking the file is the caller's job
(:mod:`climdl.evaluation.sensitivity_report`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from climdl.errors import DataError
from climdl.plot.figures import new_figure
from climdl.plot.maps import panel_figure, plot_field

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
_ATTACK_COLOURS = {
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
        colour = _ATTACK_COLOURS.get(a, "C7")
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


def _panels(
    ds: xr.Dataset, var: str, coord: str, short: str, how: str = "mean"
) -> tuple[list[str], list[tuple[str, xr.DataArray]]]:
    """The names along ``coord`` and one ``(label with bound, 2-D field)`` per name; fields are
    relabelled ``short`` so that the colour bars under small panels stay legible."""
    names = [str(p) for p in ds[coord].values]
    panels = []
    for name in names:
        bound = _bound_text(ds, coord, name)
        label = f"{name} (bound {bound})" if bound else name
        field = _reduced(ds[var].sel({coord: name}, drop=True), how)
        panels.append((label, field.assign_attrs(long_name=short)))
    return names, panels


def shared_limits(arrays: Sequence[np.ndarray], kind: str) -> tuple[float, float]:
    """One colour range for several panels: the largest of the panels' own robust limits.

    Pooling the values instead would let the panels of unused predictors (all zero) pull the
    98th percentile down and saturate the one that matters; taking each panel's robust limit
    and the widest of them keeps every panel readable on the common scale. Diverging ranges
    are symmetric about 0; sequential ones of non-negative values start at 0.
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


def _maps(
    panels: Sequence[tuple[str, xr.DataArray]], kind: str, suptitle: str, ncols: int
) -> Figure:
    """Map panels on one colour range (:func:`shared_limits`): on the map projection when the
    grid is placed, else in the grid's own x/y (a scene without geo-reference)."""
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
    names, panels = _panels(ds, f"{target}_saliency", "predictor", "saliency")
    return _maps(
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
    names, panels = _panels(ds, f"{target}_bound_sensitivity", "predictor", "|gradient| x bound")
    return _maps(
        panels,
        "sequential",
        f"{target}: first-order change of the domain mean for a predictor moved by its bound",
        _ncols(names),
    )


# ----------------------------------------------------------------------------- segmenter
def changed_fraction_figure(ds: xr.Dataset) -> Figure:
    """Bar chart: the percentage of valid pixels whose class each attack changes.

    Args:
        ds: a segmenter sensitivity Dataset.

    Returns:
        The figure.
    """
    attacks = attacks_of(ds)
    values = [100.0 * float(ds["changed_fraction"].sel(attack=a)) for a in attacks]
    fig = new_figure((5.5, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    bars = ax.bar(
        [ATTACK_LABELS.get(a, a) for a in attacks],
        values,
        color=[_ATTACK_COLOURS.get(a, "C7") for a in attacks],
        edgecolor="0.2",
        linewidth=0.5,
    )
    ax.bar_label(bars, labels=[f"{v:.3g} %" for v in values], fontsize="small", padding=2)
    ax.set_ylabel("pixels that change class [%]")
    ax.set_ylim(0, max(max(values, default=0.0) * 1.2, 1e-3))
    ax.set_title("share of valid pixels whose class changes", fontsize="medium")
    ax.grid(True, axis="y", linewidth=0.3, alpha=0.5)
    return fig


def transitions_figure(ds: xr.Dataset) -> Figure:
    """One small matrix per attack: pixels moved from each class (rows) to each (columns).

    Colour is the share of the row's pixels (off the diagonal: the pixels that changed; the
    diagonal, pixels that kept their class, is grey); each cell is annotated with its count.

    Args:
        ds: a segmenter sensitivity Dataset.

    Returns:
        The figure.
    """
    from matplotlib.colors import LogNorm

    attacks = attacks_of(ds)
    frm = [str(c) for c in ds["class_from"].values]
    to = [str(c) for c in ds["class_to"].values]
    side = 1.0 + 0.55 * max(len(frm), len(to))
    fig = new_figure((side * len(attacks) + 0.8, side + 0.6))
    mesh = None
    for i, attack in enumerate(attacks):
        ax = fig.add_subplot(1, len(attacks), i + 1)
        counts = np.asarray(ds["transitions"].sel(attack=attack).values, dtype=float)
        totals = counts.sum(axis=1, keepdims=True)
        share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        off = np.where(np.equal.outer(frm, to), np.nan, share)
        off = np.where(off > 0, off, np.nan)
        ax.imshow(np.where(np.equal.outer(frm, to), 1.0, np.nan), cmap="Greys", vmin=0, vmax=4)
        mesh = ax.imshow(off, cmap="OrRd", norm=LogNorm(1e-5, 1.0))
        for r in range(counts.shape[0]):
            for c in range(counts.shape[1]):
                ax.text(c, r, f"{int(counts[r, c]):d}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(to)), to, rotation=45, ha="right", fontsize="small")
        ax.set_yticks(range(len(frm)), frm if i == 0 else [""] * len(frm), fontsize="small")
        ax.set_xlabel("class after")
        if i == 0:
            ax.set_ylabel("class before")
        ax.set_title(ATTACK_LABELS.get(attack, attack).replace("\n", " "), fontsize="medium")
    if mesh is not None:
        fig.colorbar(mesh, ax=fig.axes, label="share of the class's pixels", shrink=0.8)
    fig.suptitle("class transitions (pixel counts)")
    return fig


def _reduced(da: xr.DataArray, how: str) -> xr.DataArray:
    """``da`` reduced in blocks to at most :data:`MAX_MAP_SIDE` per side (``max`` keeps every
    flipped pixel visible; ``mean`` for continuous maps)."""
    step = max(1, -(-max(da.shape) // MAX_MAP_SIDE))
    if step == 1:
        return da
    blocks = da.coarsen({d: step for d in da.dims}, boundary="trim", coord_func="mean")
    out = blocks.max() if how == "max" else blocks.mean()
    return out.assign_attrs(da.attrs)


def changed_map_figure(ds: xr.Dataset) -> Figure:
    """The pixels whose class PGD changed (red) on the scene's own grid.

    Large scenes are drawn in blocks of pixels, a block red when any of its pixels changed.

    Args:
        ds: a segmenter sensitivity Dataset.

    Returns:
        The figure.
    """
    from matplotlib.colors import ListedColormap

    flag = ds["changed_pgd"].astype("float64")
    flag = flag.where(flag <= 1)  # fill values (no data) stay transparent
    flag = _reduced(flag.assign_attrs(ds["changed_pgd"].attrs), "max")
    share = (
        100.0 * float(ds["changed_fraction"].sel(attack="pgd"))
        if "pgd" in ds["attack"].values
        else float(np.nanmean(flag.values)) * 100.0
    )
    title = f"pixels whose class PGD changes ({share:.3g} % of valid pixels)"
    cmap = ListedColormap(["#f7f7f7", "#d7191c"])
    try:
        ax = plot_field(
            flag, kind="sequential", cmap=cmap, vmin=0.0, vmax=1.0, cbar=False, title=title
        )
        fig = ax.get_figure()
    except DataError:
        fig = new_figure((6.0, 5.5))
        ax = fig.add_subplot(1, 1, 1)
        ax.imshow(np.asarray(flag.values), origin="lower", cmap=cmap, vmin=0, vmax=1)
        ax.set_title(title, fontsize="medium")
    assert fig is not None
    return fig  # type: ignore[return-value]


def band_maps_figure(ds: xr.Dataset, var: str = "band_bound_sensitivity") -> Figure:
    """One map per band of ``var`` (``band_bound_sensitivity`` or ``band_saliency``), one scale.

    Args:
        ds: a segmenter sensitivity Dataset.
        var: the per-band variable to draw.

    Returns:
        The figure.
    """
    short = "|gradient| x bound" if var == "band_bound_sensitivity" else "saliency"
    names, panels = _panels(ds, var, "band", short)
    kind = "sequential" if var == "band_bound_sensitivity" else "diverging"
    what = (
        "first-order change of the cross-entropy for a band moved by its bound"
        if var == "band_bound_sensitivity"
        else "saliency per band (integrated gradients)"
    )
    return _maps(panels, kind, what, min(len(names), 4))
