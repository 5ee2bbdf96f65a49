"""Input files and their time axes: finding, opening, checking and combining.

Every failure a user can cause (no such file, a glob matching nothing, a truncated or corrupt file,
overlapping or misordered times, files that do not fit together) becomes a :class:`DataError`
that names the file(s). Public: the reader, prepare, evaluation and inference all take paths
through here.

An input is a NetCDF file or a Zarr store (a folder ending in ``.zarr``, or any folder with Zarr
metadata at its top: ``.zgroup``/``.zmetadata`` of format 2, ``zarr.json`` of format 3). A store
opens with its consolidated metadata when it has some; a folder without Zarr metadata, or with
metadata that cannot be parsed, is refused in one sentence, like a corrupt NetCDF file.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from climdl.errors import DataError

PathArg = str | os.PathLike[str]
_DATE = re.compile(r"^\d{1,4}(-\d{1,2}(-\d{1,2})?)?$")
_ZARR_MARKERS = (".zmetadata", ".zgroup", "zarr.json")
"""Files at the top of a Zarr store (format 2: the first two; format 3: the last)."""


def is_store(path: Path) -> bool:
    """Whether ``path`` is meant as a Zarr store: it ends in ``.zarr``, or it is a folder with
    Zarr metadata at its top."""
    if path.suffix.lower() == ".zarr":
        return True
    return path.is_dir() and any((path / m).is_file() for m in _ZARR_MARKERS)


def resolve_paths(paths: PathArg | Sequence[PathArg]) -> list[Path]:
    """Expand one path, a glob, or a sequence of paths/globs into existing files (sorted, unique)."""
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not items:
        raise DataError("no input files were given; pass a file, a glob or a list of files.")
    found: list[Path] = []
    for item in items:
        text = os.fspath(item)
        if glob.has_magic(text):
            matches = sorted(glob.glob(os.path.expanduser(text)))
            if not matches:
                raise DataError(f"no files match {text!r}; check the path and the pattern.")
            found.extend(Path(m) for m in matches)
        else:
            path = Path(text).expanduser()
            if path.is_dir() and not is_store(path):
                raise DataError(
                    f"input {path} is a folder, not a file or a Zarr store; give the files in "
                    f"it (e.g. '{path / '*.nc'}')."
                )
            if not (path.is_file() or path.is_dir()):
                if path.exists():  # a FIFO, a device, a socket: nothing to read twice from
                    raise DataError(f"input {path} is not a regular file; give a NetCDF file.")
                raise DataError(f"input file {path} does not exist; check the path.")
            found.append(path)
    return list(dict.fromkeys(found))


def _corrupt(path: Path) -> DataError:
    return DataError(
        f"{path} is not a readable NetCDF file (truncated or corrupt?); download or write it again."
    )


def _check_classic_size(path: Path) -> None:
    """NetCDF-3 files cut short open without error and read zeros, so check their size here."""
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic not in (b"CDF\x01", b"CDF\x02"):
        return
    from scipy.io import netcdf_file  # reads the header and maps (does not read) the data

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            netcdf_file(path, mode="r", mmap=True).close()
    except (ValueError, TypeError, OSError, IndexError) as exc:
        raise _corrupt(path) from exc


def _not_a_store(path: Path, why: str) -> DataError:
    return DataError(
        f"{path} is not a readable Zarr store ({why}); give a store written by xarray or "
        "zarr (or write it again), or the NetCDF files instead."
    )


def _consolidated(path: Path) -> bool:
    """Whether the store ``path`` has consolidated metadata (DataError: it is no store, or its
    top metadata cannot be parsed)."""
    if not path.is_dir():
        raise _not_a_store(path, "it is a file; a Zarr store is a folder")
    if (path / ".zmetadata").is_file():
        return True
    if (path / "zarr.json").is_file():
        try:
            meta = json.loads((path / "zarr.json").read_text())
        except (OSError, ValueError) as exc:
            raise _not_a_store(path, "its zarr.json is not valid JSON") from exc
        return isinstance(meta, dict) and bool(meta.get("consolidated_metadata"))
    if (path / ".zgroup").is_file():
        return False
    raise _not_a_store(path, "no .zgroup, .zmetadata or zarr.json in it")


def _open_store(path: Path, kwargs: Mapping[str, Any]) -> xr.Dataset:
    """Open one Zarr store lazily (as :func:`open_file` opens a NetCDF file)."""
    import zarr

    consolidated = _consolidated(path)
    try:
        return xr.open_dataset(
            path,
            engine="zarr",
            consolidated=consolidated,
            mask_and_scale=True,
            decode_timedelta=False,
            **kwargs,
        )
    except ValueError as exc:
        if "time" in str(exc) or "calendar" in str(exc):
            raise DataError(
                f"the times in {path} cannot be decoded ({exc}); fix the time units/calendar."
            ) from exc
        raise _not_a_store(path, "its metadata cannot be parsed") from exc
    except (
        zarr.errors.BaseZarrError,
        OSError,
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
    ) as exc:  # corrupt metadata surfaces as any of these, from zarr or the JSON in it
        raise _not_a_store(path, "its metadata cannot be parsed") from exc


def open_file(path: Path) -> xr.Dataset:
    """Open one file (or Zarr store) lazily, decoding times as cftime in any calendar."""
    coders = getattr(xr, "coders", None)
    kwargs: dict[str, Any] = (
        {"decode_times": coders.CFDatetimeCoder(use_cftime=True)}
        if coders is not None and hasattr(coders, "CFDatetimeCoder")
        else {"use_cftime": True}
    )
    if is_store(path):
        return _open_store(path, kwargs)
    if path.is_dir():  # a glob's match: a folder without Zarr metadata
        raise _not_a_store(path, "no .zgroup, .zmetadata or zarr.json in it")
    return open_netcdf(path, **kwargs)


def open_netcdf(path: Path, **kwargs: Any) -> xr.Dataset:
    """One NetCDF file, lazily (``kwargs`` go to :func:`xarray.open_dataset`, e.g.
    ``decode_times``, ``decode_coords``): a truncated or damaged file, or times that cannot be
    decoded, is one :class:`DataError` sentence, never xarray's advice on IO engines."""
    _check_classic_size(path)
    try:
        options = {"mask_and_scale": True, "decode_timedelta": False} | kwargs
        return xr.open_dataset(path, engine="netcdf4", **options)
    except (OSError, RuntimeError) as exc:  # netCDF-C reports damage as either
        raise _corrupt(path) from exc
    except ValueError as exc:
        if "time" in str(exc) or "calendar" in str(exc):
            raise DataError(
                f"the times in {path} cannot be decoded ({exc}); fix the time units/calendar."
            ) from exc
        raise _corrupt(path) from exc


def _dates(values: Any) -> str:
    return ", ".join(str(v)[:19] for v in values)


def check_times(time: xr.DataArray, where: str) -> None:
    """Raise DataError unless there are times, they are dates, and they are strictly increasing
    (no duplicates, no steps back)."""
    values = time.values
    if values.size == 0:
        raise DataError(f"{where} has a time axis with no steps; check the file or the period.")
    if values.dtype.kind in "biufc":  # no time coordinate, or one xarray could not decode
        raise DataError(
            f"{where} has a time axis without dates (no time coordinate, or one whose units "
            "are not 'UNIT since DATE'); give it a CF time coordinate."
        )
    if values.size < 2:
        return
    bad = [i for i in range(values.size - 1) if not values[i + 1] > values[i]]
    if bad:
        pairs = "; ".join(f"{_dates(values[i : i + 2])}" for i in bad[:3])
        raise DataError(
            f"the times in {where} are not strictly increasing (duplicate or decreasing dates: "
            f"{pairs}); remove the duplicated or misordered files/steps."
        )


def describe(files: Sequence[Path]) -> str:
    """Short description of the input files for messages."""
    return str(files[0]) if len(files) == 1 else f"{files[0]} and {len(files) - 1} more file(s)"


def _first_time(item: tuple[Path, xr.Dataset]) -> Any:
    """Sort key: the first date of a per-file dataset."""
    return item[1]["time"].values[0]


def combine(parts: list[tuple[Path, xr.Dataset]]) -> xr.Dataset:
    """Combine per-file datasets by coordinates after checking calendars and time overlaps."""
    parts = [p for p in parts if p[1].data_vars] or parts[:1]
    if len(parts) == 1:
        return parts[0][1]
    timed = [p for p in parts if "time" in p[1].dims and p[1].sizes["time"] > 0]
    calendars = {str(getattr(p[1]["time"].values[0], "calendar", "standard")) for p in timed}
    if len(calendars) > 1:
        raise DataError(
            f"the input files use different calendars ({', '.join(sorted(calendars))}); "
            "open files of one calendar together."
        )
    groups: dict[frozenset[str], list[tuple[Path, xr.Dataset]]] = {}
    for item in timed:
        groups.setdefault(frozenset(map(str, item[1].data_vars)), []).append(item)
    for members in groups.values():
        members.sort(key=_first_time)
        for (p0, d0), (p1, d1) in itertools.pairwise(members):
            last, first = d0["time"].values[-1], d1["time"].values[0]
            if not first > last:
                raise DataError(
                    f"{p0} and {p1} overlap in time ({p0.name} ends {_dates([last])}, {p1.name} "
                    f"starts {_dates([first])}); remove the duplicated file or period."
                )
    try:
        return xr.combine_by_coords(
            [d for _, d in parts],
            data_vars="minimal",
            coords="minimal",
            compat="override",
            join="exact",
            combine_attrs="drop_conflicts",
        )  # type: ignore[return-value]
    except (ValueError, xr.MergeError) as exc:
        spans = {
            ", ".join(sorted(g)): (m[0][1]["time"].values[0], m[-1][1]["time"].values[-1])
            for g, m in groups.items()
        }
        if len(set(spans.values())) > 1:
            detail = "; ".join(
                f"{k}: {_dates([a])} to {_dates([b])}" for k, (a, b) in spans.items()
            )
            raise DataError(
                f"the variables in {describe([p for p, _ in parts])} cover different periods "
                f"({detail}); pass a time_range that all of them cover."
            ) from exc
        raise DataError(
            f"the files {describe([p for p, _ in parts])} cannot be combined ({exc}); open "
            "files on different grids or time steps separately."
        ) from exc


def select_time(
    parts: list[tuple[Path, xr.Dataset]], time_range: tuple[str, str], where: str
) -> list[tuple[Path, xr.Dataset]]:
    """Select ``time_range`` (inclusive 'YYYY-MM-DD' strings, any calendar) in every file.

    Files left without time steps are dropped; files without a time axis (static) are kept.
    """
    start, end = (str(t).strip() for t in time_range)
    if not (_DATE.match(start) and _DATE.match(end)):
        raise DataError(f"time_range {start!r}..{end!r} is not of the form 'YYYY-MM-DD'.")
    timed = [(p, d) for p, d in parts if "time" in d.dims]
    if not timed:
        raise DataError(f"a time_range was given but {where} has no time axis.")
    out = [(p, d) for p, d in parts if "time" not in d.dims]
    for path, ds in timed:
        try:
            sel = ds.sel(time=slice(start, end))
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(
                f"time_range {start}..{end} cannot be applied to {path} ({exc})."
            ) from exc
        if sel.sizes["time"]:
            out.append((path, sel))
    if len(out) == len(parts) - len(timed):
        first = min((d["time"].values[0] for _, d in timed if d.sizes["time"]), default=None)
        last = max((d["time"].values[-1] for _, d in timed if d.sizes["time"]), default=None)
        raise DataError(
            f"time_range {start}..{end} selects no time steps; {where} covers "
            f"{_dates([first])} to {_dates([last])}."
        )
    return out
