"""Figures without pyplot, and their atomic saving.

climdl's plotting functions build :class:`matplotlib.figure.Figure` objects attached to the
non-interactive Agg canvas instead of going through ``pyplot``: nothing depends on a display or
on the global backend (HPC nodes, CLI, report loops), and figures are freed when no longer
referenced instead of piling up in pyplot's registry. Jupyter still shows a returned figure.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from climdl.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: the figure formats climdl writes, from the file suffix
FORMATS = ("png", "pdf", "svg")
DEFAULT_DPI = 150


def new_figure(
    figsize: tuple[float, float] = (6.0, 5.0),
    *,
    layout: Literal["constrained", "compressed", "tight"] | None = "constrained",
    dpi: float = 100.0,
) -> Figure:
    """A new figure on the Agg canvas (no pyplot, no display needed).

    Args:
        figsize: width and height in inches.
        layout: matplotlib's layout engine (None: none).
        dpi: dots per inch of the canvas.

    Returns:
        The figure.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def figure_format(path: str | os.PathLike[str]) -> str:
    """The format of a figure path from its suffix; ConfigError for anything but png/pdf/svg."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ConfigError(
            f"cannot write a figure as {Path(path).name!r}: use a .png, .pdf or .svg file name."
        )
    return fmt


def save_figure(
    fig: Figure, path: str | os.PathLike[str], *, dpi: float | None = None, overwrite: bool = True
) -> Path:
    """Write ``fig`` to ``path`` through a temporary file renamed when complete.

    The format follows the suffix (png, pdf or svg); raster output uses ``dpi`` (150 by default,
    print quality for a paper column). ``overwrite=False`` refuses to replace an existing file
    (OutputError). Returns the final path.

    Args:
        fig: the figure.
        path: the file to write (``.png``, ``.pdf`` or ``.svg``).
        dpi: resolution of raster output; None: 150.
        overwrite: replace an existing file.

    Returns:
        The path written.

    Raises:
        ConfigError: a suffix other than png, pdf or svg.
        OutputError: an existing file without ``overwrite``, or a folder that cannot be written.
    """
    from climdl.io.netcdf import atomic_path

    fmt = figure_format(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(
            tmp, format=fmt, dpi=dpi or DEFAULT_DPI, bbox_inches="tight", metadata=_metadata(fmt)
        )
    return Path(path)


def _metadata(fmt: str) -> dict[str, str]:
    from climdl import __version__

    return {("Software" if fmt == "png" else "Creator"): f"climdl {__version__}"}
