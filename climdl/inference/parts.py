"""Crash-safe, resumable output: one complete file per chunk of time, joined at the end.

A long ``downscale`` writes each finished chunk of time as its own small NetCDF file in a hidden
folder beside the output (``.OUT.nc.parts/``), each written under a temporary name and renamed
when complete, so a run killed at any moment leaves only whole chunks and never a file under the
output's name. ``--resume`` checks the folder's manifest (checkpoints, inputs, period, settings)
against the new run and computes only the missing chunks; the parts are then joined into the
compressed output, written atomically, and the folder is removed. Several ranks (GPUs, nodes)
share the folder, each writing its own chunks; one joins them.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask
import xarray as xr

from climdl.errors import OutputError
from climdl.io.netcdf import atomic_path, write_netcdf

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def parts_dir(output: Path) -> Path:
    """The hidden folder holding the finished chunks of ``output``."""
    return output.parent / f".{output.name}.parts"


class PartStore:
    """The finished chunks of one output file.

    Args:
        output: the final NetCDF path.
        manifest: what defines the run (JSON-serialisable); a resumed run must match it.
        resume: continue from the chunks a previous, interrupted run left.
        overwrite: replace an existing output and discard an interrupted run.
        create: set the folder up (one rank only); other ranks attach to it.
    """

    def __init__(
        self,
        output: Path,
        manifest: Mapping[str, Any],
        *,
        resume: bool = False,
        overwrite: bool = False,
        create: bool = True,
    ) -> None:
        self.output = Path(output)
        self.dir = parts_dir(self.output)
        self.manifest = json.loads(json.dumps(manifest))  # normalised (tuples -> lists)
        if not create:
            return
        if self.output.exists() and not overwrite:
            raise OutputError(f"{self.output} already exists; pass --overwrite to replace it.")
        if self.dir.exists():
            if resume:
                self._check_manifest()
            elif overwrite:
                shutil.rmtree(self.dir)
            else:
                raise OutputError(
                    f"an interrupted run of {self.output} left {len(self.done())} finished "
                    f"chunk(s) in {self.dir}; pass --resume to continue it or --overwrite "
                    "to start again."
                )
        elif resume:
            log.info("nothing to resume for %s; starting from the first chunk", self.output)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.dir / MANIFEST, overwrite=True) as tmp:
                tmp.write_text(json.dumps(self.manifest, indent=1))
        except PermissionError as exc:
            raise OutputError(f"cannot write to {self.output.parent}: permission denied.") from exc

    def _check_manifest(self) -> None:
        path = self.dir / MANIFEST
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise OutputError(
                f"{self.dir} has no readable manifest; pass --overwrite to start again."
            ) from exc
        differ = sorted(
            k for k in set(old) | set(self.manifest) if old.get(k) != self.manifest.get(k)
        )
        if differ:
            raise OutputError(
                f"the interrupted run in {self.dir} was made with other settings "
                f"({', '.join(differ)} differ); pass --overwrite to start again."
            )

    def path(self, index: int) -> Path:
        return self.dir / f"part-{index:06d}.nc"

    def done(self) -> set[int]:
        """Indices of the finished chunks."""
        if not self.dir.exists():
            return set()
        return {int(p.stem.split("-")[1]) for p in self.dir.glob("part-*.nc")}

    def write(self, index: int, ds: xr.Dataset, encoding: Mapping[str, Mapping[str, Any]]) -> None:
        """Store one finished chunk (atomically; uncompressed for speed, the join compresses)."""
        write_netcdf(ds, self.path(index), encoding=encoding, overwrite=True)

    def join(
        self, n_chunks: int, encoding: Mapping[str, Mapping[str, Any]], attrs: Mapping[str, Any]
    ) -> Path:
        """Concatenate chunks 0..n-1 into the output (atomically) and remove the folder."""
        missing = sorted(set(range(n_chunks)) - self.done())
        if missing:
            raise OutputError(
                f"chunks {missing[:5]} of {self.output} are missing from {self.dir}; "
                "run again with --resume."
            )
        paths: Sequence[Path] = [self.path(i) for i in range(n_chunks)]
        parts = [
            xr.open_dataset(p, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True), chunks={})
            for p in paths
        ]
        try:
            ds = xr.concat(
                parts,
                dim="time",
                data_vars="minimal",
                coords="minimal",
                compat="override",
                join="override",
                combine_attrs="override",
            )
            ds.attrs = dict(attrs)
            # one part in memory at a time (a threaded scheduler would load parts ahead of the
            # writer, and the join's memory would grow with the length of the series)
            with dask.config.set(scheduler="synchronous"):
                write_netcdf(ds, self.output, encoding=encoding, overwrite=True)
        finally:
            for p in parts:
                p.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.output
