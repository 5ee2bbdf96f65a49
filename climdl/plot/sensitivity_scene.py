"""Figures of a segmenter ``climdl sensitivity`` file: how many pixels change class, and where.

The share of valid pixels each attack flips (:func:`changed_fraction_figure`), the class
transitions per attack (:func:`transitions_figure`), the map of the pixels PGD flips
(:func:`changed_map_figure`) and per-band maps of the bound sensitivity or saliency
(:func:`band_maps_figure`). Scenes larger than a figure shows are drawn in blocks of pixels
(:func:`climdl.plot.sensitivity.block_reduced`); scenes without a grid mapping or lat/lon are
drawn in their own pixel grid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from climdl.errors import DataError
from climdl.plot.figures import new_figure
from climdl.plot.maps import plot_field
from climdl.plot.sensitivity import (
    ATTACK_COLOURS,
    ATTACK_LABELS,
    attacks_of,
    block_reduced,
    labelled_panels,
    map_panels,
)

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.figure import Figure


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
        color=[ATTACK_COLOURS.get(a, "C7") for a in attacks],
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
    flag = block_reduced(flag.assign_attrs(ds["changed_pgd"].attrs), "max")
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
    names, panels = labelled_panels(ds, var, "band", short)
    kind = "sequential" if var == "band_bound_sensitivity" else "diverging"
    what = (
        "first-order change of the cross-entropy for a band moved by its bound"
        if var == "band_bound_sensitivity"
        else "saliency per band (integrated gradients)"
    )
    return map_panels(panels, kind, what, min(len(names), 4))
