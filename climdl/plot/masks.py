"""Cloud (or any categorical) masks over an RGB composite of a satellite scene.

Each class gets a fixed, recognisable colour (clouds magenta, shadows blue, snow cyan...) blended
over the scene with ``alpha``, "clear" is left see-through so the scene itself shows, and pixels
without a valid class (no data, fill values) stay fully transparent. A legend names the classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from climdl.errors import DataError
from climdl.plot.figures import new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: colours of well-known class names (CF flag_meanings spellings); None: not drawn
CLASS_COLOURS: dict[str, str | None] = {
    "clear": None,
    "clear_sky": None,
    "land": None,
    "cloud": "#e7298a",
    "thick_cloud": "#e7298a",
    "opaque_cloud": "#e7298a",
    "thin_cloud": "#fdb462",
    "cirrus": "#fdb462",
    "cloud_shadow": "#1f4e9c",
    "shadow": "#1f4e9c",
    "snow": "#00e5ee",
    "snow_ice": "#00e5ee",
    "ice": "#00e5ee",
    "water": "#08306b",
}
_FALLBACK = ("#1b9e77", "#d95f02", "#7570b3", "#66a61e", "#e6ab02", "#a6761d", "#666666")


def class_colours(
    flag_meanings: Sequence[str], colours: Mapping[str, str | None] | None = None
) -> list[str | None]:
    """Colour of each class: ``colours`` first, then :data:`CLASS_COLOURS`, then a palette."""
    out: list[str | None] = []
    spare = iter(_FALLBACK * (1 + len(flag_meanings) // len(_FALLBACK)))
    for name in flag_meanings:
        key = name.strip().lower()
        if colours is not None and name in colours:
            out.append(colours[name])
        elif key in CLASS_COLOURS:
            out.append(CLASS_COLOURS[key])
        else:
            out.append(next(spare))
    return out


def plot_mask_over_rgb(
    rgb: np.ndarray,
    mask: np.ndarray,
    *,
    flag_meanings: Sequence[str],
    ax: Axes | None = None,
    alpha: float = 0.45,
    title: str | None = None,
    flag_values: Sequence[int] | None = None,
    colours: Mapping[str, str | None] | None = None,
    legend: bool = True,
) -> Axes:
    """Show ``rgb`` ([H, W, 3], 0..1; clipped) with the classes of ``mask`` ([H, W] int) over it.

    Class ``i`` is ``flag_values[i]`` (default ``i``) named ``flag_meanings[i]``; any other value
    (a no-data or fill value such as -1 or 255) is drawn transparent. ``colours`` maps class
    names to colours (None: not drawn) over the defaults of :data:`CLASS_COLOURS`.
    """
    from matplotlib.patches import Patch

    rgb = np.asarray(rgb, dtype=float)
    mask = np.asarray(mask)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DataError(f"rgb must be [H, W, 3]; got shape {rgb.shape}.")
    if mask.shape != rgb.shape[:2]:
        raise DataError(f"mask shape {mask.shape} does not match the image {rgb.shape[:2]}.")
    values = list(range(len(flag_meanings))) if flag_values is None else list(flag_values)
    if len(values) != len(flag_meanings):
        raise DataError(f"{len(values)} flag values for {len(flag_meanings)} flag meanings.")
    if ax is None:
        h, w = mask.shape
        width = 5.0
        ax = new_figure((width, max(2.0, width * h / max(w, 1)))).add_subplot(1, 1, 1)
    from matplotlib.colors import to_rgba

    ax.imshow(np.clip(np.nan_to_num(rgb), 0.0, 1.0), interpolation="nearest")
    overlay = np.zeros((*mask.shape, 4))
    handles = []
    for value, name, colour in zip(values, flag_meanings, class_colours(flag_meanings, colours),
                                   strict=True):
        if colour is None:
            handles.append(Patch(facecolor="none", edgecolor="0.3", label=name))
            continue
        overlay[mask == value] = (*to_rgba(colour)[:3], alpha)
        handles.append(Patch(facecolor=colour, alpha=max(alpha, 0.6), label=name))
    image = ax.imshow(overlay, interpolation="nearest")
    image.set_gid("mask")
    ax.set_axis_off()
    if legend:
        ax.legend(handles=handles, loc="lower right", fontsize="small", framealpha=0.8)
    if title:
        ax.set_title(title, fontsize="medium")
    return ax
