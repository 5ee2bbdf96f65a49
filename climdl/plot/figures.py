"""Figures without pyplot, and their atomic saving.

climdl's plotting functions build :class:`matplotlib.figure.Figure` objects attached to the
non-interactive Agg canvas instead of going through ``pyplot``: nothing depends on a display or
on the global backend (HPC nodes, CLI, report loops), and figures are freed when no longer
referenced instead of piling up in pyplot's registry. Jupyter still shows a returned figure.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from climdl.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: the figure formats climdl writes, from the file suffix
FORMATS = ("png", "pdf", "svg")
DEFAULT_DPI = 150
#: the highest resolution ``climdl plot --dpi`` takes: 1200 dpi is print quality, and far more
#: exhausts the memory of the canvas (a 6-inch map at 100000 dpi is 600000 pixels wide)
MAX_DPI = 1200


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


_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def drawable_text(text: str) -> str:
    """``text`` as matplotlib should draw it: mathtext where it parses, else literally.

    Matplotlib reads a line with an even number of unescaped ``$`` as mathtext and raises a
    ParseException while *saving* the figure when that math does not parse (``'$\\foo$'``,
    ``'a $x^$ b'``). A title, label or attribute comes from a user or a file, so a line that
    fails to parse gets its dollar signs escaped and is drawn as typed; valid mathtext
    (``'$\\alpha$ index'``) is kept. Matplotlib lays out each line of a text on its own, so
    each line is judged on its own.

    Args:
        text: the text to draw (may hold several lines).

    Returns:
        The text, with the ``$`` of its unparsable lines escaped.
    """
    if "$" not in text:
        return text
    from matplotlib import cbook
    from matplotlib.mathtext import MathTextParser

    parser = MathTextParser("path")
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not cbook.is_math_text(line):
            continue
        try:
            parser.parse(line, dpi=72)
        except ValueError:  # matplotlib's ParseException, re-raised as ValueError
            lines[i] = _UNESCAPED_DOLLAR.sub(r"\\$", line)
    return "\n".join(lines)


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
