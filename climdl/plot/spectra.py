"""Radially averaged power spectra on log-log axes.

Emulators tend to lose small-scale variance (too smooth) or add spurious noise; both show at the
high-wavenumber end of a power spectral density plot, read most easily with the corresponding
wavelength on a second axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from climdl.errors import DataError
from climdl.plot.figures import new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _inverse(k: Any) -> Any:
    """1/k, with 0 mapped to inf (the secondary axis needs a total function)."""
    k = np.asarray(k, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(k == 0, np.inf, 1.0 / np.where(k == 0, 1.0, k))


def _length_unit(xlabel: str) -> str:
    """The length unit of a wavenumber label like "wavenumber (cycles per km)"."""
    for sep in (" per ", "/"):
        if sep in xlabel:
            tail = xlabel.rsplit(sep, 1)[1].strip(" )]")
            if tail:
                return tail
    return ""


def plot_psd(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    ax: Axes | None = None,
    xlabel: str = "wavenumber (cycles per km)",
    units: str | None = None,
    title: str | None = None,
    ylabel: str | None = None,
    wavelength_axis: bool = True,
) -> Axes:
    """Log-log PSD curves ``{label: (wavenumber, power)}`` with wavelength on the top axis.

    Zero wavenumbers and non-positive powers are left out (they have no place on log axes).
    ``units`` is the unit of the field whose spectrum it is: the y label becomes
    ``power spectral density [units^2 x length]``; ``ylabel`` overrides it.

    Args:
        curves: label -> (wavenumber, power) arrays.
        ax: the axes to draw on; None: a new figure.
        xlabel: the x-axis label.
        units: the field's units, for the y label.
        title: the panel's title.
        ylabel: the y-axis label, replacing the one built from ``units``.
        wavelength_axis: add a top axis in wavelength (km).

    Returns:
        The axes drawn on.

    Raises:
        DataError: no curve, or a curve without a positive wavenumber and power.
    """
    if not curves:
        raise DataError("plot_psd needs at least one (wavenumber, power) curve.")
    if ax is None:
        ax = new_figure((5.5, 4.0)).add_subplot(1, 1, 1)
    for label, (k, p) in curves.items():
        k = np.asarray(k, dtype=float).ravel()
        p = np.asarray(p, dtype=float).ravel()
        if k.shape != p.shape:
            raise DataError(f"PSD curve {label!r}: {k.size} wavenumbers but {p.size} powers.")
        ok = np.isfinite(k) & np.isfinite(p) & (k > 0) & (p > 0)
        if not ok.any():
            raise DataError(f"PSD curve {label!r} has no positive wavenumber with positive power.")
        ax.plot(k[ok], p[ok], label=label, linewidth=1.4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    length = _length_unit(xlabel)
    if ylabel is None:
        ylabel = "power spectral density"
        if units:
            squared = f"{units}$^2$" if units.isalnum() else f"({units})$^2$"
            ylabel += f" [{squared} {length}]" if length else f" [{squared}]"
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
    if len(curves) > 1 or next(iter(curves)):
        ax.legend(frameon=False)
    if wavelength_axis:
        top = ax.secondary_xaxis("top", functions=(_inverse, _inverse))
        top.set_xlabel(f"wavelength ({length})" if length else "wavelength")
    if title:
        ax.set_title(title, fontsize="medium")
    return ax
