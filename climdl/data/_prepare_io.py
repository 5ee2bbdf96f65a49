"""Files for :mod:`climdl.data.prepare`: coarse grids in, the coarse NetCDF and the stats out.

:func:`coarse_from_dataset` reads a coarse lat/lon grid (centres, CF bounds) from a Dataset.
:class:`CoarseWriter` creates the CF-1.10 file (time, lat, lon, bounds, coverage) up front and
then takes one block of time steps at a time, so the output never has to fit in memory;
:class:`ZarrCoarseWriter` does the same into a Zarr store, with the same variables, attributes
and chunks (:mod:`climdl.io.zarr_store`). The caller owns the path (a temporary name from
:func:`climdl.io.netcdf.atomic_path` or :func:`climdl.io.zarr_store.atomic_store`).
:func:`write_stats` / :func:`load_stats` store the per-variable statistics as JSON or NetCDF.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

import netCDF4
import numpy as np
import xarray as xr

from climdl.errors import ConfigError, DataError
from climdl.io.netcdf import atomic_path, write_netcdf
from climdl.io.zarr_store import ZarrBlockWriter, create_store
from climdl.preprocess import LatLonGrid, bounds_from_centres

Which = Literal["coarse", "fine"]

_LAT_ATTRS = {
    "standard_name": "latitude",
    "long_name": "latitude",
    "units": "degrees_north",
    "axis": "Y",
    "bounds": "lat_bnds",
}
_LON_ATTRS = {
    "standard_name": "longitude",
    "long_name": "longitude",
    "units": "degrees_east",
    "axis": "X",
    "bounds": "lon_bnds",
}


# ----------------------------------------------------------------------------- coarse grids
@dataclass(frozen=True)
class CoarseGrid:
    """A coarse lat/lon grid: weights grid, centres (lat ascending) and CF bounds ``[n, 2]``."""

    grid: LatLonGrid
    lat: np.ndarray
    lon: np.ndarray
    lat_bnds: np.ndarray
    lon_bnds: np.ndarray


def _edges(bnds: np.ndarray | None, centres: np.ndarray, name: str) -> np.ndarray:
    """Contiguous 1-D cell edges from CF bounds ``[n, 2]`` (or from the centres)."""
    if bnds is None:
        return bounds_from_centres(centres)
    b = np.sort(bnds, axis=1) if centres[-1] > centres[0] else np.sort(bnds, axis=1)[:, ::-1]
    if b.shape != (centres.size, 2) or not np.allclose(b[1:, 0], b[:-1, 1]):
        raise DataError(f"the coarse grid's {name} cells are not contiguous (gaps or overlaps).")
    return np.append(b[:, 0], b[-1, 1])


def coarse_from_dataset(grid: xr.Dataset, where: str) -> CoarseGrid:
    """The coarse grid of a dataset with 1-D lat/lon (by name or standard_name), bounds if any."""
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for axis, std in (("lat", "latitude"), ("lon", "longitude")):
        cands = [
            n
            for n, v in grid.variables.items()
            if v.ndim == 1
            and (str(n).lower() in (axis, std) or v.attrs.get("standard_name") == std)
        ]
        if not cands:
            raise DataError(f"{where} has no 1-D {std} coordinate to define a coarse lat/lon grid.")
        v = grid[cands[0]]
        bname = v.attrs.get("bounds")
        bnds = np.asarray(grid[bname].values, np.float64) if bname in grid.variables else None
        centres = np.asarray(v.values, np.float64)
        edges = _edges(bnds, centres, std)
        if centres.size > 1 and centres[0] > centres[-1]:  # south to north, like the reader
            centres, edges = centres[::-1], edges[::-1]
        found[axis] = (centres, edges)
    (lat, lat_e), (lon, lon_e) = found["lat"], found["lon"]
    return CoarseGrid(
        LatLonGrid(lat_e, lon_e), lat, lon,
        np.stack([lat_e[:-1], lat_e[1:]], 1), np.stack([lon_e[:-1], lon_e[1:]], 1),
    )  # fmt: skip


def latlon_grid_dataset(lat_e: np.ndarray, lon_e: np.ndarray) -> xr.Dataset:
    """A regular lat/lon grid (coordinates and CF bounds) from its 1-D cell edges."""
    lat, lon = 0.5 * (lat_e[1:] + lat_e[:-1]), 0.5 * (lon_e[1:] + lon_e[:-1])
    return xr.Dataset(
        {"lat_bnds": (("lat", "bnds"), np.stack([lat_e[:-1], lat_e[1:]], 1)),
         "lon_bnds": (("lon", "bnds"), np.stack([lon_e[:-1], lon_e[1:]], 1))},
        coords={"lat": ("lat", lat, dict(_LAT_ATTRS)), "lon": ("lon", lon, dict(_LON_ATTRS))},
    )  # fmt: skip


@dataclass(frozen=True)
class VariableStats:
    """Mean, (population) standard deviation and number of valid values of one variable.

    Attributes:
        mean: the mean.
        std: the population standard deviation.
        count: the number of valid values.
    """

    mean: float
    std: float
    count: int


@dataclass(frozen=True)
class PrepareStats:
    """Per-variable statistics of the coarse (written) and the fine (input) fields.

    Computed over ``period`` (the first and last dates actually used, ``n_times`` steps),
    ignoring NaN. ``coarse`` are the statistics of the output (after smoothing).

    Attributes:
        variables: the canonical names.
        units: each variable's units.
        period: first and last dates used.
        n_times: time steps used.
        coarse: each variable's statistics on the coarse grid (the output).
        fine: each variable's statistics on the fine grid (the input).
        attrs: provenance written with the statistics.
    """

    variables: tuple[str, ...]
    units: dict[str, str]
    period: tuple[str, str]
    n_times: int
    coarse: dict[str, VariableStats]
    fine: dict[str, VariableStats]
    attrs: dict[str, str] = field(default_factory=dict)

    def arrays(self, which: Which, names: Sequence[str] | None = None) -> tuple[np.ndarray, ...]:
        """``(mean, std)`` float64 arrays in the order of ``names`` (default: ``variables``)."""
        table = self.coarse if which == "coarse" else self.fine
        names = list(self.variables if names is None else names)
        missing = [n for n in names if n not in table]
        if missing:
            raise DataError(f"no statistics for {', '.join(missing)}; they cover {self.variables}.")
        return (
            np.array([table[n].mean for n in names], dtype=np.float64),
            np.array([table[n].std for n in names], dtype=np.float64),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN written as null)."""

        def num(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {
            "variables": list(self.variables),
            "units": dict(self.units),
            "period": list(self.period),
            "n_times": self.n_times,
            **{
                which: {
                    n: {"mean": num(s.mean), "std": num(s.std), "count": s.count}
                    for n, s in table.items()
                }
                for which, table in (("coarse", self.coarse), ("fine", self.fine))
            },
            "attrs": dict(self.attrs),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PrepareStats:
        def num(v: float | None) -> float:
            return math.nan if v is None else float(v)

        tables = {
            which: {
                n: VariableStats(num(s["mean"]), num(s["std"]), int(s["count"]))
                for n, s in d[which].items()
            }
            for which in ("coarse", "fine")
        }
        return cls(
            tuple(d["variables"]), dict(d["units"]), (str(d["period"][0]), str(d["period"][1])),
            int(d["n_times"]), tables["coarse"], tables["fine"], dict(d.get("attrs", {})),
        )  # fmt: skip

    def to_dataset(self) -> xr.Dataset:
        """NetCDF form: ``{coarse,fine}_{mean,std,count}`` along a ``variable`` dimension."""
        names = list(self.variables)
        data: dict[str, Any] = {}
        for which, table in (("coarse", self.coarse), ("fine", self.fine)):
            for stat in ("mean", "std", "count"):
                values = [getattr(table[n], stat) for n in names]
                data[f"{which}_{stat}"] = (
                    "variable",
                    np.asarray(values, np.int64 if stat == "count" else np.float64),
                    {"long_name": f"{stat} of the {which} fields over the training period"},
                )
        ds = xr.Dataset(data, coords={"variable": ("variable", np.array(names, dtype=object))})
        ds["units"] = ("variable", np.array([self.units[n] for n in names], dtype=object))
        ds.attrs = {
            **self.attrs,
            "period_start": self.period[0],
            "period_end": self.period[1],
            "n_times": self.n_times,
        }
        return ds

    @classmethod
    def from_dataset(cls, ds: xr.Dataset) -> PrepareStats:
        names = tuple(str(v) for v in ds["variable"].values)
        tables = {
            which: {
                n: VariableStats(
                    float(ds[f"{which}_mean"].values[i]),
                    float(ds[f"{which}_std"].values[i]),
                    int(ds[f"{which}_count"].values[i]),
                )
                for i, n in enumerate(names)
            }
            for which in ("coarse", "fine")
        }
        skip = {"period_start", "period_end", "n_times"}
        return cls(
            names, {n: str(u) for n, u in zip(names, ds["units"].values, strict=True)},
            (str(ds.attrs["period_start"]), str(ds.attrs["period_end"])), int(ds.attrs["n_times"]),
            tables["coarse"], tables["fine"],
            {k: str(v) for k, v in ds.attrs.items() if k not in skip},
        )  # fmt: skip


def stats_format(path: str | os.PathLike[str]) -> Literal["json", "netcdf"]:
    """File format of a stats path from its suffix (``.json``; ``.nc``/``.nc4``/``.netcdf``)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".nc", ".nc4", ".netcdf"):
        return "netcdf"
    raise ConfigError(f"cannot tell the format of the stats file {path}; name it *.json or *.nc.")


def write_stats(
    stats: PrepareStats, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``stats`` as JSON or NetCDF (by suffix), atomically."""
    if stats_format(path) == "json":
        with atomic_path(path, overwrite=overwrite) as tmp:
            tmp.write_text(json.dumps(stats.to_dict(), indent=2) + "\n")
    else:
        write_netcdf(stats.to_dataset(), path, overwrite=overwrite)
    return Path(path)


def load_stats(path: str | os.PathLike[str]) -> PrepareStats:
    """Read statistics written by :func:`write_stats` (or ``prepare(stats_out=...)``).

    Args:
        path: a ``.json`` or ``.nc`` statistics file.

    Returns:
        The statistics.

    Raises:
        ConfigError: a file name that is neither ``.json`` nor ``.nc``.
        DataError: the file is missing or not a climdl statistics file.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"the stats file {p} does not exist; run `climdl prepare` with stats_out.")
    try:
        if stats_format(p) == "json":
            return PrepareStats.from_dict(json.loads(p.read_text()))
        with xr.open_dataset(p) as ds:
            return PrepareStats.from_dataset(ds.load())
    except (KeyError, ValueError, TypeError, OSError, RuntimeError) as exc:
        raise DataError(f"{p} is not a climdl stats file ({exc}).") from exc


def _time_attrs(time_units: str, calendar: str) -> dict[str, str]:
    return {"standard_name": "time", "long_name": "time", "axis": "T", "units": time_units,
            "calendar": calendar}  # fmt: skip


def _encode_dates(dates: np.ndarray, time_units: str, calendar: str) -> np.ndarray:
    """The dates as float64 numbers of ``time_units`` in ``calendar`` (DataError if they
    cannot be)."""
    try:
        values = netCDF4.date2num(list(dates), time_units, calendar=calendar)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"the dates cannot be encoded as {time_units!r} in the {calendar} calendar ({exc})."
        ) from exc
    return np.asarray(values, dtype=np.float64)


_COVERAGE_ATTRS = {
    "long_name": "fraction of the coarse cell covered by the fine input grid",
    "units": "1",
}
_DATA_LEVEL: Final = 4
"""Compression level of the coarse fields (zlib in NetCDF, zstd in Zarr)."""


class CoarseWriter:
    """A CF-1.10 (time, lat, lon) NetCDF4 file filled one block of time steps at a time.

    Coordinates, bounds, the time axis (values encoded with ``time_units``/``calendar``) and
    the ``climdl_coverage`` field are written on creation; :meth:`write` then stores each
    block ``[T, C, lat, lon]`` at its time offset. Data are float32, zlib-compressed, NaN as
    ``_FillValue`` (as elsewhere in climdl), chunked ``(chunk_t, lat, lon)``.
    """

    def __init__(
        self,
        path: Path,
        *,
        names: Sequence[str],
        var_attrs: Mapping[str, Mapping[str, Any]],
        lat: np.ndarray,
        lon: np.ndarray,
        lat_bnds: np.ndarray,
        lon_bnds: np.ndarray,
        dates: np.ndarray,
        time_units: str,
        calendar: str,
        coverage: np.ndarray,
        global_attrs: Mapping[str, Any],
        chunk_t: int,
    ) -> None:
        self.names = list(names)
        self.nc = netCDF4.Dataset(path, "w", format="NETCDF4")
        try:
            nc, nt = self.nc, len(dates)
            nc.setncatts(dict(global_attrs))
            nc.createDimension("time", nt)
            nc.createDimension("lat", lat.size)
            nc.createDimension("lon", lon.size)
            nc.createDimension("bnds", 2)
            t = nc.createVariable("time", "f8", ("time",))
            t.setncatts(_time_attrs(time_units, calendar))
            t[:] = _encode_dates(dates, time_units, calendar)
            for name, centres, bnds, attrs in (
                ("lat", lat, lat_bnds, _LAT_ATTRS),
                ("lon", lon, lon_bnds, _LON_ATTRS),
            ):
                v = nc.createVariable(name, "f8", (name,))
                v.setncatts(attrs)
                v[:] = centres
                b = nc.createVariable(f"{name}_bnds", "f8", (name, "bnds"))
                b[:] = bnds
            cov = nc.createVariable("climdl_coverage", "f4", ("lat", "lon"))
            cov.setncatts({**_COVERAGE_ATTRS, "coordinates": "lat lon"})
            cov[:] = coverage.astype(np.float32)
            chunks = (max(1, min(chunk_t, nt)), lat.size, lon.size)
            for name in self.names:
                v = nc.createVariable(
                    name, "f4", ("time", "lat", "lon"), zlib=True, complevel=_DATA_LEVEL, shuffle=True,
                    chunksizes=chunks, fill_value=np.float32(np.nan),
                )  # fmt: skip
                v.setncatts(dict(var_attrs[name]))
        except BaseException:
            self.nc.close()
            raise

    def write(self, start: int, block: np.ndarray) -> None:
        """Store ``block[T, C, lat, lon]`` (C in ``names`` order) at time offset ``start``."""
        stop = start + block.shape[0]
        for c, name in enumerate(self.names):
            self.nc.variables[name][start:stop] = block[:, c].astype(np.float32, copy=False)

    def close(self) -> None:
        if self.nc.isopen():
            self.nc.close()

    def __enter__(self) -> CoarseWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ZarrCoarseWriter:
    """:class:`CoarseWriter`'s output as a Zarr store (same arguments, same content).

    The store holds the NetCDF file's variables, attributes, fill values and chunks: the time
    axis as the same float64 numbers with ``units``/``calendar``, coordinates and bounds
    without a fill value, the fields float32 with NaN as ``_FillValue``, compressed at the same
    level (zstd instead of zlib). Created on construction (every variable but the fields'
    data); :meth:`write` stores each block.
    """

    def __init__(
        self,
        path: Path,
        *,
        names: Sequence[str],
        var_attrs: Mapping[str, Mapping[str, Any]],
        lat: np.ndarray,
        lon: np.ndarray,
        lat_bnds: np.ndarray,
        lon_bnds: np.ndarray,
        dates: np.ndarray,
        time_units: str,
        calendar: str,
        coverage: np.ndarray,
        global_attrs: Mapping[str, Any],
        chunk_t: int,
    ) -> None:
        self.names = list(names)
        nt = len(dates)
        shape = (nt, lat.size, lon.size)
        chunks = (max(1, min(chunk_t, nt)), lat.size, lon.size)
        blank = np.broadcast_to(np.float32(np.nan), shape)  # never read: only its shape
        enc: dict[str, dict[str, Any]] = {}
        data: dict[str, Any] = {
            "lat_bnds": (("lat", "bnds"), np.asarray(lat_bnds, np.float64)),
            "lon_bnds": (("lon", "bnds"), np.asarray(lon_bnds, np.float64)),
            "climdl_coverage": (("lat", "lon"), coverage.astype(np.float32), _COVERAGE_ATTRS),
        }
        enc["climdl_coverage"] = {"coordinates": "lat lon"}
        for name in self.names:
            attrs = dict(var_attrs[name])
            enc[name] = {
                "dtype": "float32", "_FillValue": np.float32(np.nan), "zlib": True,
                "complevel": _DATA_LEVEL, "chunksizes": chunks,
                **({"coordinates": attrs.pop("coordinates")} if "coordinates" in attrs else {}),
            }  # fmt: skip
            data[name] = (("time", "lat", "lon"), blank, attrs)
        coords = {
            "time": ("time", _encode_dates(dates, time_units, calendar),
                     _time_attrs(time_units, calendar)),
            "lat": ("lat", np.asarray(lat, np.float64), dict(_LAT_ATTRS)),
            "lon": ("lon", np.asarray(lon, np.float64), dict(_LON_ATTRS)),
        }  # fmt: skip
        template = xr.Dataset(data, coords=coords, attrs=dict(global_attrs))
        for var in template.variables:  # as netCDF4 writes them: no fill value but the fields'
            enc.setdefault(str(var), {}).setdefault("_FillValue", None)
        create_store(template, path, self.names, enc, chunks[0])
        self._writer = ZarrBlockWriter(path, self.names)

    def write(self, start: int, block: np.ndarray) -> None:
        """Store ``block[T, C, lat, lon]`` (C in ``names`` order) at time offset ``start``."""
        for c, name in enumerate(self.names):
            self._writer.write(name, start, block[:, c])

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> ZarrCoarseWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
