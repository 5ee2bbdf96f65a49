"""Cloud (or any categorical) masks over an RGB composite of a satellite scene.

Each class gets a fixed, recognisable colour (clouds magenta, shadows blue, snow cyan...) blended
over the scene with ``alpha``, "clear" is left see-through so the scene itself shows, and pixels
without a valid class (no data, fill values) stay fully transparent. A legend names the classes.
:func:`rgb_composite` makes the true-colour image of a scene and :func:`mask_panels` puts it
beside one or more masks (truth, prediction, errors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from climdl.errors import DataError
from climdl.plot.figures import drawable_text, new_figure

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from climdl.clouds.scene import Band

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

    Args:
        rgb: the RGB composite ``[H, W, 3]`` (0..1).
        mask: the classes ``[H, W]``.
        flag_meanings: the class names.
        ax: the axes to draw on; None: a new figure.
        alpha: opacity of the class colours.
        title: the panel's title.
        flag_values: the value of each class in ``mask`` (default ``0, 1, ...``).
        colours: class name -> colour (None: not drawn) over the defaults.
        legend: add a legend naming the classes.

    Returns:
        The axes drawn on.

    Raises:
        DataError: an image or mask of the wrong shape, or flag values and meanings that differ
            in number.
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
    for value, name, colour in zip(
        values, flag_meanings, class_colours(flag_meanings, colours), strict=True
    ):
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
        ax.set_title(drawable_text(title), fontsize="medium")
    return ax


#: band names of a true-colour composite, red first
RGB_BANDS = ("red", "green", "blue")
#: central wavelengths (um) of red, green and blue, for scenes whose bands have other names
_RGB_WAVELENGTHS = (0.655, 0.561, 0.482)


def rgb_indices(
    bands: Sequence[Band], names: Sequence[str] = ("red", "green", "blue")
) -> list[int]:
    """Indices of the red, green and blue bands: by name, else by the nearest wavelength."""
    by_name = {b.name.lower(): i for i, b in enumerate(bands)}
    if all(n.lower() in by_name for n in names):
        return [by_name[n.lower()] for n in names]
    reflective = [
        (i, b.wavelength)
        for i, b in enumerate(bands)
        if not b.thermal and np.isfinite(b.wavelength)
    ]
    out = []
    for target in _RGB_WAVELENGTHS:
        near = [(abs(w - target), i) for i, w in reflective if abs(w - target) <= 0.05]
        if not near:
            have = ", ".join(f"{b.name} ({b.wavelength:g} um)" for b in bands)
            raise DataError(
                f"the scene has no bands named {'/'.join(names)} and none within "
                f"0.05 um of {target} um for an RGB composite; bands: {have}."
            )
        out.append(min(near)[1])
    return out


def rgb_composite(
    scene: xr.Dataset,
    bands: Sequence[str] = ("red", "green", "blue"),
    *,
    percentiles: tuple[float, float] = (1.0, 99.0),
    gamma: float = 1.0 / 1.4,
) -> np.ndarray:
    """True-colour ``[H, W, 3]`` image (0..1, NaN where there are no data) of a scene.

    The bands are found by name (``bands``), else by the nearest central wavelength to red,
    green and blue. One linear stretch between the ``percentiles`` of all three bands together
    (so that the colour balance is kept: clouds stay white, snow stays white, deserts stay
    ochre), then ``gamma`` brightens the dark surfaces as the eye expects.

    Args:
        scene: the scene (band variables with names or central wavelengths).
        bands: names of the red, green and blue bands.
        percentiles: lower and upper percentiles of the linear stretch.
        gamma: exponent applied after the stretch.

    Returns:
        The image ``[H, W, 3]`` in 0..1 (NaN where there are no data).

    Raises:
        DataError: no band near red, green or blue, or those bands hold no data.
    """
    from climdl.clouds.scene import bands_of, read_image

    idx = rgb_indices(bands_of(scene), bands)
    rgb = np.moveaxis(read_image(scene, order=idx), 0, -1).astype(np.float64)
    finite = rgb[np.isfinite(rgb)]
    if finite.size == 0:
        raise DataError("the scene's red, green and blue bands hold no data.")
    lo, hi = np.percentile(finite, percentiles)
    scaled = np.clip((rgb - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    out: np.ndarray = scaled**gamma
    return out


def mask_panels(
    rgb: np.ndarray,
    masks: Sequence[tuple[str, np.ndarray]],
    *,
    flag_meanings: Sequence[str],
    ncols: int | None = None,
    panel_size: float = 3.6,
    suptitle: str | None = None,
    alpha: float = 0.45,
    colours: Mapping[str, str | None] | None = None,
) -> Figure:
    """One figure: the RGB composite alone, then each ``(title, mask)`` drawn over it.

    All masks share ``flag_meanings``; one legend (on the last panel) names the classes.

    Args:
        rgb: the scene's RGB composite ``[H, W, 3]`` (0..1).
        masks: ``(title, mask)`` pairs, each mask ``[H, W]`` of class values.
        flag_meanings: the class names, in class-value order.
        ncols: panels per row (default: all in one row up to 4).
        panel_size: width and height of a panel (inches).
        suptitle: the figure's title.
        alpha: opacity of the class colours.
        colours: class name -> colour (None: not drawn) over the defaults.

    Returns:
        The figure (Agg canvas).

    Raises:
        DataError: an image or mask of the wrong shape.
    """
    n = 1 + len(masks)
    ncols = ncols or n
    nrows = -(-n // ncols)
    h, w = rgb.shape[:2]
    fig = new_figure((panel_size * ncols, panel_size * nrows * h / max(w, 1) + 0.4))
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]
    axes[0].imshow(np.clip(np.nan_to_num(rgb), 0.0, 1.0), interpolation="nearest")
    axes[0].set_axis_off()
    axes[0].set_title("RGB composite", fontsize="medium")
    for k, (ax, (title, mask)) in enumerate(zip(axes[1:], masks, strict=True)):
        plot_mask_over_rgb(
            rgb,
            mask,
            flag_meanings=flag_meanings,
            ax=ax,
            alpha=alpha,
            title=title,
            colours=colours,
            legend=k == len(masks) - 1,
        )
    if suptitle:
        fig.suptitle(drawable_text(suptitle))
    return fig
