"""Atomic NetCDF writing.

A user never sees a half-written file: every write goes to a hidden temporary name in the target
folder and is renamed over the target only once the file is complete and closed. Failures that a
user can fix (existing output, no permission, disk full) become :class:`OutputError`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import xarray as xr

from climdl.errors import OutputError
from climdl.io.oserrors import output_error
from climdl.io.umask import private_to_usual


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    The temporary file is removed if the block raises, so no partial output is ever left under
    the final name. ``overwrite=False`` refuses to replace an existing file.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise OutputError(f"{final} already exists; pass --overwrite to replace it.")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        private_to_usual(tmp_name)  # mkstemp makes 0600; outputs get the usual permissions
    except OSError as exc:
        err = output_error(exc, final)
        if err is None:
            raise
        raise err from exc
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    except (OSError, RuntimeError) as exc:
        # judged before the partial file is removed: it is what filled the disk
        err = output_error(exc, final)
        tmp.unlink(missing_ok=True)
        if err is None:
            raise
        raise err from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_netcdf(
    ds: xr.Dataset,
    path: str | os.PathLike[str],
    *,
    encoding: Mapping[str, Mapping[str, Any]] | None = None,
    overwrite: bool = False,
    unlimited_dims: tuple[str, ...] = (),
) -> Path:
    """Write ``ds`` to ``path`` as NetCDF4 through a temporary file; return the final path.

    ``encoding`` may also give a variable's ``coordinates`` attribute (which xarray otherwise
    derives, listing grid-mapping variables among the auxiliary coordinates)."""
    enc: dict[str, dict[str, Any]] = {}
    for name, e in (encoding or {}).items():
        e = dict(e)
        if "coordinates" in e and name in ds.variables:
            ds[name].encoding["coordinates"] = e.pop("coordinates")
        enc[name] = e
    with atomic_path(path, overwrite=overwrite) as tmp:
        ds.to_netcdf(
            tmp,
            engine="netcdf4",
            format="NETCDF4",
            encoding=enc,
            unlimited_dims=unlimited_dims,
        )
    return Path(path)


def write_skeleton(
    ds: xr.Dataset,
    path: str | os.PathLike[str],
    *,
    encoding: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Write an in-memory ``ds`` (NumPy-backed: coordinates and attributes of a file whose
    data come later) to ``path`` as NetCDF4, encoded as :meth:`xarray.Dataset.to_netcdf` would.

    Why not ``to_netcdf``: to decide whether to close the file between Dask writes it asks Dask
    for the scheduler, which imports ``distributed`` whole (~0.08 s of import holding the GIL,
    while the network runs beside it), and so does the store's default lock (a per-file lock for
    Dask's writers on top of xarray's HDF5 lock). A dataset without Dask arrays needs neither:
    the store is given the HDF5 lock that xarray's own netCDF4 reads and writes take."""
    from xarray.backends.netCDF4_ import NETCDF4_PYTHON_LOCK

    if any(v.chunks is not None for v in ds.variables.values()):
        raise ValueError("write_skeleton writes in-memory datasets only")
    store = xr.backends.NetCDF4DataStore.open(
        path, mode="w", format="NETCDF4", lock=NETCDF4_PYTHON_LOCK
    )
    try:
        ds.dump_to_store(store, encoding=dict(encoding or {}))
    except BaseException:
        with contextlib.suppress(Exception):  # the write's own error is the one to report
            store.close()
        raise
    store.close()
