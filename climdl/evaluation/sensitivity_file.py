"""Reading a ``climdl sensitivity`` file for a report: open it lazily and check what it is.

A sensitivity NetCDF says what it holds in two global attributes: ``climdl_sensitivity``
(``emulator`` or ``segmenter``) and ``climdl_sensitivity_version`` (the layout, see
:mod:`climdl.sensitivity`). Anything else, a newer layout, or a file without the variables of
its kind is refused with one sentence naming the file, before any figure is drawn (``climdl
evaluate --sensitivity`` checks it before computing anything).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from climdl.errors import DataError

if TYPE_CHECKING:
    import xarray as xr

PathLike = str | os.PathLike[str]

#: the newest sensitivity file layout this climdl reads
SENSITIVITY_VERSION = 1
KINDS = ("emulator", "segmenter")
_REQUIRED = {
    "emulator": ("attack", "predictor"),
    "segmenter": ("attack", "band", "changed_fraction", "transitions", "changed_pgd"),
}
_PER_TARGET = ("mean_change", "max_abs_change", "rms_change", "saliency", "bound_sensitivity")


def _check(ds: xr.Dataset, p: Path) -> str:
    """The kind of a sensitivity Dataset; DataError (naming ``p``) for anything else."""
    kind = ds.attrs.get("climdl_sensitivity")
    if kind not in KINDS:
        raise DataError(
            f"{p} is not a climdl sensitivity file (its climdl_sensitivity attribute is "
            f"{kind!r}, not 'emulator' or 'segmenter'); give the sensitivity.nc that "
            "climdl sensitivity wrote."
        )
    try:
        version = int(ds.attrs["climdl_sensitivity_version"])
    except (KeyError, TypeError, ValueError):
        raise DataError(
            f"{p} has no valid climdl_sensitivity_version attribute; give the sensitivity.nc "
            "that climdl sensitivity wrote."
        ) from None
    if version > SENSITIVITY_VERSION:
        raise DataError(
            f"{p} is a version {version} sensitivity file, newer than this climdl reads "
            f"(up to {SENSITIVITY_VERSION}); upgrade climdl to report it."
        )
    missing = [n for n in _REQUIRED[str(kind)] if n not in ds.variables]
    if kind == "emulator":
        from climdl.plot.sensitivity import targets_of

        targets = targets_of(ds)
        if not targets:
            missing.append("<target>_mean_change")
        missing += [f"{t}_{m}" for t in targets for m in _PER_TARGET if f"{t}_{m}" not in ds]
    if missing:
        raise DataError(
            f"{p} lacks {', '.join(missing)}; it is not a complete {kind} sensitivity file "
            "(run climdl sensitivity again)."
        )
    return str(kind)


@contextmanager
def open_sensitivity(path: PathLike) -> Iterator[tuple[xr.Dataset, str]]:
    """Open a sensitivity file lazily (grid mapping as a coordinate) and check it.

    Args:
        path: the file ``climdl sensitivity`` wrote.

    Yields:
        The Dataset (open while the block runs) and its kind, ``emulator`` or ``segmenter``.

    Raises:
        DataError: a missing or unreadable file, not a sensitivity file, a newer layout, or a
            file without the variables of its kind; the sentence names the file.
    """
    import xarray as xr

    p = Path(path)
    if p.is_dir():
        raise DataError(f"{p} is a folder; give the sensitivity.nc file inside it.")
    if not p.is_file():
        raise DataError(
            f"{p} does not exist; give the sensitivity.nc that climdl sensitivity wrote."
        )
    try:
        ds = xr.open_dataset(
            p, decode_coords="all", decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)
        )
    except Exception as exc:  # netCDF4/h5py/xarray raise many types for unreadable files
        raise DataError(
            f"cannot read {p} as NetCDF ({type(exc).__name__}); check that the file is complete."
        ) from None
    with ds:
        kind = _check(ds, p)
        yield ds, kind


def check_sensitivity_file(path: PathLike) -> str:
    """Check that ``path`` is a sensitivity file this climdl can report; return its kind.

    Args:
        path: the file.

    Returns:
        ``emulator`` or ``segmenter``.

    Raises:
        DataError: see :func:`open_sensitivity`.
    """
    with open_sensitivity(path) as (_, kind):
        return kind
