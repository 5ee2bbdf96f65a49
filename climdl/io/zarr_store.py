"""Zarr stores written atomically, with the same CF content and chunks as climdl's NetCDF.

A path ending in ``.zarr`` makes ``downscale`` and ``prepare`` write a Zarr store instead of a
NetCDF file: the same variables, coordinates, CF attributes, time encoding, global attributes,
fill value and chunk shape (the NetCDF encoding is translated by :func:`zarr_encoding`).

**Format 2, consolidated.** xarray writes both Zarr formats, but format 2 is what the rest of
the field reads today: netCDF-C's NCZarr (hence CDO and ncdump), zarr-python 2 and 3, Julia's
and R's readers; format 3 is read by zarr-python 3 only, and its consolidated metadata is not
part of the format-3 specification (xarray warns when writing it). Consolidated metadata
(``.zmetadata``) lets a reader open a store of thousands of chunk files with one read.
Chunks are compressed with Blosc's zstd after a byte shuffle (multi-threaded, and off the GIL:
a store writes several times faster than zlib at a similar size).

**Atomic.** A store is a folder of many files, so no single write can make it appear
complete. It is built under a hidden temporary name beside the target (or inside a run's
parts folder) and renamed onto the target when complete (:func:`atomic_store`,
:func:`replace_tree`): a killed run never leaves a folder under the output's name, whatever
the reader. Writing the consolidated metadata last would not do: xarray and zarr open a store
without ``.zmetadata`` by listing it, and would read a half-written one as complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import xarray as xr

from climdl.errors import OutputError
from climdl.io.oserrors import output_error
from climdl.io.umask import private_to_usual

__all__ = [
    "SUFFIX",
    "ZARR_FORMAT",
    "ZarrBlockWriter",
    "atomic_store",
    "check_replaceable",
    "create_store",
    "is_zarr",
    "replace_tree",
    "write_zarr",
    "zarr_encoding",
]

SUFFIX = ".zarr"
"""The suffix that selects a Zarr store (case-insensitive)."""
ZARR_FORMAT: Final[Literal[2]] = 2
"""The Zarr format written (see the module's docstring for why 2)."""
_MARKERS = (".zmetadata", ".zgroup", "zarr.json")
"""Files at the top of a Zarr store (format 2: the first two; format 3: the last)."""
_CF_KEYS = ("units", "calendar", "dtype", "_FillValue", "scale_factor", "add_offset")
"""Encoding keys xarray's CF coders apply before the store sees the variable."""


def is_zarr(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a Zarr store (it ends in ``.zarr``)."""
    return Path(path).suffix.lower() == SUFFIX


def _compressor(level: int) -> Any:
    """Blosc zstd with a byte shuffle at ``level`` (1..9; NetCDF's zlib level maps onto it)."""
    from numcodecs import Blosc

    return Blosc(cname="zstd", clevel=max(1, min(int(level), 9)), shuffle=Blosc.SHUFFLE)


def zarr_encoding(
    ds: xr.Dataset, encoding: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    """The Zarr encoding of the NetCDF ``encoding`` climdl writes for ``ds``.

    ``chunksizes`` become ``chunks``; ``zlib``/``complevel``/``shuffle`` become Blosc zstd
    (shuffled) at the same level; units, calendar, dtype and fill value pass through (xarray's
    CF coders apply them to both formats alike). A variable's ``coordinates`` is set on ``ds``
    itself, as :func:`climdl.io.netcdf.write_netcdf` does. A bounds variable gets its
    variable's units and calendar, as xarray's NetCDF writer gives it (its Zarr writer does
    not). Variables of ``ds`` not named are left to xarray's defaults.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, given in (encoding or {}).items():
        if name not in ds.variables:
            continue
        e = dict(given)
        if "coordinates" in e:
            ds[name].encoding["coordinates"] = e.pop("coordinates")
        z: dict[str, Any] = {k: e[k] for k in _CF_KEYS if k in e}
        if e.get("chunksizes"):
            z["chunks"] = tuple(int(c) for c in e["chunksizes"])
        if e.get("zlib") or e.get("compression") == "zlib":
            z["compressors"] = (_compressor(int(e.get("complevel", 4))),)
        out[name] = z
    for name, z in list(out.items()):  # CF 7.1: bounds take their variable's units, calendar
        bounds = ds[name].attrs.get("bounds")
        if bounds in ds.variables and ("units" in z or "calendar" in z):
            b = out.setdefault(str(bounds), {})
            for key in ("units", "calendar"):
                if key in z:
                    b.setdefault(key, z[key])
    return out


def check_replaceable(path: Path) -> None:
    """Refuse to replace ``path`` when it is a folder that is neither empty nor a Zarr store.

    ``--overwrite`` replaces the output the user named; a store is a folder, and removing a
    folder of other files (a typo, a data folder that happens to end in ``.zarr``) would
    destroy what climdl never wrote. Files, links, empty folders and stores may be replaced.

    Raises:
        OutputError: ``path`` is a folder of other files.
    """
    if path.is_symlink() or not path.is_dir():
        return
    if any((path / m).is_file() for m in _MARKERS) or not any(path.iterdir()):
        return
    raise OutputError(
        f"{path} is a folder that is not a Zarr store; climdl replaces only a store: move or "
        "remove the folder, or choose another output."
    )


def replace_tree(src: Path, dst: Path) -> None:
    """Move the complete store ``src`` onto ``dst`` (which may exist: a store, a file).

    A folder cannot be renamed over a non-empty one, so an existing ``dst`` is first renamed
    aside to a hidden name and removed after the move: ``dst`` is at all times the old output,
    absent for an instant, or the new one, never a mix. Both paths must be on one file system.

    Raises:
        OutputError: ``dst`` is a folder of other files (:func:`check_replaceable`).
    """
    check_replaceable(dst)
    old: Path | None = None
    if dst.exists() or dst.is_symlink():
        old = dst.parent / f".{dst.name}.{uuid.uuid4().hex[:8]}.old"
        os.rename(dst, old)
    try:
        os.rename(src, dst)
    except BaseException:
        if old is not None:  # put the old output back
            with contextlib.suppress(OSError):
                os.rename(old, dst)
        raise
    if old is not None:
        _remove(old)


def _remove(path: Path) -> None:
    """Remove a file, a link or a folder tree (never through a link)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _translate(exc: BaseException, final: Path) -> BaseException:
    """The :class:`OutputError` for a failed write of ``final``, or ``exc`` itself (a bug)."""
    err = output_error(exc, final) if isinstance(exc, OSError | RuntimeError) else None
    return err if err is not None else exc


@contextlib.contextmanager
def atomic_store(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``path``; move it onto ``path`` when the block
    succeeds, remove it when the block raises.

    ``overwrite=False`` refuses an existing ``path``. The folder gets the usual permissions
    (``mkdtemp`` makes it private).

    Raises:
        OutputError: ``path`` exists (without ``overwrite``) or is a folder of other files,
            or the folder is not writable,
            full or read-only.
    """
    final = Path(path)
    if (final.exists() or final.is_symlink()) and not overwrite:
        raise OutputError(f"{final} already exists; pass --overwrite to replace it.")
    check_replaceable(final)  # before any work, not only at the final rename
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        private_to_usual(tmp, folder=True)
    except OSError as exc:
        raise _translate(exc, final) from exc
    try:
        yield tmp
        replace_tree(tmp, final)
    except (OSError, RuntimeError) as exc:
        err = _translate(exc, final)  # judged before the partial store is removed
        _remove(tmp)
        if err is exc:
            raise
        raise err from exc
    except BaseException:
        _remove(tmp)
        raise


def _to_zarr(ds: xr.Dataset, path: Path, encoding: dict[str, dict[str, Any]], **kw: Any) -> None:
    ds.to_zarr(path, mode="w", zarr_format=ZARR_FORMAT, consolidated=True, encoding=encoding, **kw)


def write_zarr(
    ds: xr.Dataset,
    path: str | os.PathLike[str],
    *,
    encoding: Mapping[str, Mapping[str, Any]] | None = None,
    overwrite: bool = False,
    tmp: Path | None = None,
) -> Path:
    """Write ``ds`` as a consolidated Zarr store at ``path``, atomically; return ``path``.

    Args:
        ds: the dataset (Dask-backed variables are computed chunk by chunk; their chunks
            must each cover whole Zarr chunks, as a NetCDF encoding's ``chunksizes`` do).
        path: the store.
        encoding: climdl's NetCDF encoding (translated by :func:`zarr_encoding`).
        overwrite: replace an existing ``path``.
        tmp: where to build the store (a path on ``path``'s file system that is removed
            first; left behind only if the process is killed: inside a parts folder, it goes
            with it). None: a hidden name beside ``path`` (:func:`atomic_store`).
    """
    final = Path(path)
    enc = zarr_encoding(ds, encoding)
    if tmp is None:
        with atomic_store(final, overwrite=overwrite) as where:
            _to_zarr(ds, where, enc)
        return final
    if final.exists() and not overwrite:
        raise OutputError(f"{final} already exists; pass --overwrite to replace it.")
    _remove(tmp)
    try:
        _to_zarr(ds, tmp, enc)
        replace_tree(tmp, final)
    except (OSError, RuntimeError) as exc:
        err = _translate(exc, final)
        _remove(tmp)
        if err is exc:
            raise
        raise err from exc
    except BaseException:
        _remove(tmp)
        raise
    return final


def create_store(
    template: xr.Dataset,
    path: Path,
    fill: Sequence[str],
    encoding: Mapping[str, Mapping[str, Any]],
    time_chunk: int,
) -> None:
    """Create the store ``path`` from ``template``: coordinates, attributes and every variable
    written, except the data of the variables ``fill`` (defined only, to be filled by a
    :class:`ZarrBlockWriter`); ``template``'s values of those are never read.

    Args:
        template: the whole output's dataset (its ``fill`` variables may be zero-stride views).
        path: the store (an empty or missing folder).
        fill: the variables whose data come later.
        encoding: climdl's NetCDF encoding (:func:`zarr_encoding`).
        time_chunk: the ``fill`` variables' chunk along time (for the lazy stand-ins).
    """
    ds = template.copy()
    for name in fill:  # lazy stand-ins: compute=False writes their metadata, not their data
        ds[name] = ds[name].chunk({"time": time_chunk})
    enc = zarr_encoding(ds, encoding)
    _to_zarr(ds, path, enc, compute=False)


class ZarrBlockWriter:
    """Blocks of time steps written into the existing variables of a Zarr store.

    The variables (from :func:`create_store`) take blocks along their time axis (the first,
    or the second after ``member``), each starting on a chunk boundary; NaN becomes the
    variable's fill value (CF's missing data, as xarray would encode it). Zarr compresses the
    chunks in its own threads, off the GIL.

    Args:
        path: the store.
        names: the variables to write.
    """

    def __init__(self, path: Path, names: Sequence[str]) -> None:
        import zarr

        group = zarr.open_group(str(path), mode="r+", zarr_format=ZARR_FORMAT)
        self._arrays: dict[str, Any] = {}
        for name in names:
            array = group[name]
            listed = array.attrs.get("_ARRAY_DIMENSIONS", [])
            dims = [str(d) for d in listed] if isinstance(listed, list) else []
            self._arrays[name] = (array, dims.index("time") if "time" in dims else 0)

    def write(self, name: str, start: int, block: np.ndarray) -> None:
        """Store ``block``, variable ``name``'s values at time steps ``start:start + T``
        (``T`` along the variable's time axis; all of its other axes)."""
        array, axis = self._arrays[name]
        data = np.asarray(block, dtype=array.dtype)
        fill = array.fill_value
        if np.issubdtype(data.dtype, np.floating) and fill is not None:
            data = np.where(np.isnan(data), data.dtype.type(fill), data)
        index: list[slice] = [slice(None)] * data.ndim
        index[axis] = slice(start, start + data.shape[axis])
        array[tuple(index)] = data

    def close(self) -> None:
        """Nothing is held open (each write is complete on return); for symmetry."""
        self._arrays = {}
