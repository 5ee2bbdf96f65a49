"""The compressed output written while the networks run, not joined afterwards.

A run that computes every chunk itself in one process (no resume, one rank, no Dask cluster,
a deterministic emulator) writes its final file as it goes: the file is created up front with
every coordinate, the whole series' time axis and the global attributes (by xarray, as the join
would write them), its data variables are defined with the join's attributes, fill value,
chunking and filters (by netCDF4) but not filled, and each full time-chunk of days is compressed
and stored as soon as the network has produced it (:class:`climdl.io.chunk_writer.ChunkWriter`,
which compresses off the GIL, so the I/O thread does it while the network computes the next
days). The result is the file :meth:`climdl.inference.parts.PartStore.join` would have written,
value for value and attribute for attribute, without reading the parts back and recompressing
them after the last chunk. The parts of every chunk but the last are still written: they are
what a killed run resumes from (the last chunk's days go into the stream, which is finished
right after them; a run killed in between recomputes that one chunk).
The file grows under a temporary name in the parts folder and is moved onto the output when
complete (:meth:`~climdl.inference.parts.PartStore.adopt`).

An output ending in ``.zarr`` grows the same way as a Zarr store: xarray creates it with the
join's coordinates, attributes and (translated) encoding (:func:`climdl.io.zarr_store.create_store`)
and each time-chunk of days is written into it as it completes
(:class:`climdl.io.zarr_store.ZarrBlockWriter`, whose codecs also run off the GIL).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import xarray as xr

from climdl.data.spec import EmulatorSpec
from climdl.inference.output import Format, chunk_dataset
from climdl.io.chunk_writer import ChunkWriter
from climdl.io.netcdf import write_skeleton
from climdl.io.oserrors import output_error
from climdl.io.zarr_store import ZarrBlockWriter, create_store, is_zarr


class StreamedOutput:
    """A deterministic run's output file, filled in time order as the days are computed.

    Args:
        path: where the file grows (a temporary name; moved onto the output at the end).
        output: the final output (named in error messages).
        times: every day of the series.
        spec: the emulators' spec (target grid and attributes).
        targets: the output variables, in the order of the predictions' second axis.
        fmt: ``cf`` or ``mlbench``.
        encoding: the joined file's encoding (:meth:`climdl.inference.job.Job.final_encoding`).
        attrs: the global attributes.

    Construction does no I/O; :meth:`open`, :meth:`add` and :meth:`finish` run in the caller's
    I/O thread, one at a time (HDF5 is not thread-safe).
    """

    def __init__(
        self,
        path: Path,
        output: Path,
        times: xr.DataArray,
        spec: EmulatorSpec,
        targets: Sequence[str],
        fmt: Format,
        encoding: Mapping[str, Mapping[str, Any]],
        attrs: Mapping[str, Any],
    ) -> None:
        self.path, self.output = Path(path), Path(output)
        self.times, self.spec, self.targets, self.fmt = times, spec, list(targets), fmt
        self.encoding = {k: dict(v) for k, v in encoding.items()}
        self.attrs = dict(attrs)
        self.n_days = int(times.size)
        self.time_chunk = int(self.encoding[self.targets[0]]["chunksizes"][0])
        self._writer: ChunkWriter | ZarrBlockWriter | None = None
        self._pending: list[np.ndarray] = []
        self._written = 0
        self._held = 0

    def open(self) -> None:
        """Create the file (or Zarr store): coordinates, time axis and attributes; data
        variables defined."""
        try:
            shape = (self.n_days, len(self.targets), *self.spec.out_size)
            # a zero-stride view: the template's data variables cost no memory
            template = chunk_dataset(
                np.broadcast_to(np.float32(0), shape), self.times, self.spec, self.targets, self.fmt
            )
            if is_zarr(self.output):
                template.attrs = dict(self.attrs)
                create_store(template, self.path, self.targets, self.encoding, self.time_chunk)
                self._writer = ZarrBlockWriter(self.path, self.targets)
                return
            skeleton = template.drop_vars(self.targets)
            skeleton.attrs = dict(self.attrs)
            coords_enc = {k: v for k, v in self.encoding.items() if k not in self.targets}
            write_skeleton(skeleton, self.path, encoding=coords_enc)
            with netCDF4.Dataset(self.path, "a") as nc:
                # xarray lists the coordinates that no variable names in a global attribute:
                # without the data variables, all of them; keep those the joined file lists
                listed = (
                    set(str(nc.getncattr("coordinates")).split())
                    if "coordinates" in nc.ncattrs()
                    else set()
                )
                for name in self.targets:
                    named = self._define(nc, name, template[name], template)
                    listed -= set(named.split())
                if listed:
                    nc.setncattr("coordinates", " ".join(sorted(listed)))
                elif "coordinates" in nc.ncattrs():
                    nc.delncattr("coordinates")
            self._writer = ChunkWriter(self.path, self.targets)
        except (OSError, RuntimeError) as exc:
            raise self._error(exc) from exc

    def _define(
        self, nc: netCDF4.Dataset, name: str, var: xr.DataArray, template: xr.Dataset
    ) -> str:
        """Define data variable ``name`` as the join would; returns its coordinates attribute
        (the encoding's, else what xarray derives: the non-dimension coordinates on a subset of
        the variable's dimensions, sorted)."""
        e = self.encoding[name]
        options: dict[str, Any] = {
            "zlib": bool(e.get("zlib", False)),
            "complevel": int(e.get("complevel", 4)),
            "shuffle": bool(e.get("shuffle", False)),
            "chunksizes": e.get("chunksizes"),
            "fill_value": e.get("_FillValue"),
        }
        v = nc.createVariable(
            name, str(np.dtype(e.get("dtype", "float32"))), [str(d) for d in var.dims], **options
        )
        attrs = dict(var.attrs)
        if "coordinates" in e:
            attrs["coordinates"] = e["coordinates"]
        else:
            own = sorted(
                str(c)
                for c in template.coords
                if c not in template.dims and set(template[c].dims) <= set(var.dims)
            )
            if own:
                attrs["coordinates"] = " ".join(own)
        v.setncatts(attrs)
        return str(attrs.get("coordinates", ""))

    def add(self, start: int, values: np.ndarray) -> None:
        """The predictions [T, V, H, W] of days ``start:start + T`` (the next ones in order);
        every time-chunk they complete is compressed and stored now."""
        if start != self._written + self._held:
            raise ValueError(f"days must come in order: got {start}, expected the next one")
        self._pending.append(values)
        self._held += values.shape[0]
        if self._held >= self.time_chunk:
            self._flush(self._held - self._held % self.time_chunk)

    def finish(self) -> None:
        """Store the last (partial) time-chunk and close the file; every day must be in."""
        if self._held:
            self._flush(self._held)
        if self._written != self.n_days:
            raise ValueError(f"{self._written} of {self.n_days} days were written")
        try:  # closing flushes HDF5's metadata: a full disk can show here
            self.close()
        except (OSError, RuntimeError) as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        """Close the file (finished or not)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _flush(self, n: int) -> None:
        assert self._writer is not None, "open() first"
        block = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        try:
            for i, name in enumerate(self.targets):
                self._writer.write(name, self._written, block[:n, i])
        except (OSError, RuntimeError) as exc:
            raise self._error(exc) from exc
        self._written += n
        self._held -= n
        self._pending = [block[n:]] if self._held else []

    def _error(self, exc: BaseException) -> BaseException:
        err = output_error(exc, self.output) if isinstance(exc, OSError | RuntimeError) else None
        return err if err is not None else exc
