"""Crash-safe, resumable output: one complete file per chunk of time, joined at the end.

A long ``downscale`` writes each finished chunk of time as its own small NetCDF file in a hidden
folder beside the output (``.OUT.nc.parts/``), each written under a temporary name and renamed
when complete, so a run killed at any moment leaves only whole chunks and never a file under the
output's name. ``--resume`` checks the folder's manifest (checkpoints, inputs and their
fingerprints, period, settings) against the new run and computes only the missing chunks; the
parts are then joined into the compressed output, written atomically, and the folder is removed.
Several ranks (GPUs, nodes) or Dask workers share the folder, each writing its own chunks; the
coordinating process (rank 0, the Dask client) holds an exclusive lock on ``.OUT.nc.lock`` for
the whole run and joins them. A folder that holds no finished chunk protects nothing and is
removed (after a failed run, or when found by the next one).

An output ending in ``.zarr`` is a Zarr store (:mod:`climdl.io.zarr_store`): the parts are
NetCDF all the same (they are only read back by the join); the store is built inside the parts
folder (``output.zarr.tmp``) and renamed onto the output when complete, so a killed run leaves
no folder under the output's name and the partial store goes with the parts folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask
import xarray as xr

from climdl.errors import OutputError
from climdl.io.netcdf import atomic_path, write_netcdf
from climdl.io.oserrors import output_error
from climdl.io.zarr_store import check_replaceable, is_zarr, replace_tree, write_zarr

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
RUN = "run"
"""Manifest key: the id of the run that owns the folder now (not compared on resume)."""
FINGERPRINTS = "fingerprints"
"""Manifest key: ``{resolved path: fingerprint}`` of every input and checkpoint."""
_EDGE = 1 << 20
_WHAT = {
    "size": "size",
    "mtime_ns": "modification time",
    "sha256_ends": "content",
    "sha256": "content",
}


def parts_dir(output: Path) -> Path:
    """The hidden folder holding the finished chunks of ``output``."""
    return output.parent / f".{output.name}.parts"


def lock_path(output: Path) -> Path:
    """The lock file of ``output``'s run (beside it, holding the running process's pid)."""
    return output.parent / f".{output.name}.lock"


def file_fingerprint(path: str | Path) -> dict[str, int | str]:
    """Size, modification time (ns) and SHA-256 of the first and last MiB of a file.

    Enough to notice a file rewritten in place under a resumed run (any rewrite changes the
    modification time; the ends hold NetCDF's header and chunk index), at a fixed cost whatever
    the file's size: a full hash of a century of daily predictors (tens of GB) would add minutes
    to every start. A file of at most 2 MiB is hashed whole. A folder (a Zarr store) is
    fingerprinted by :func:`tree_fingerprint`.
    """
    if os.path.isdir(path):
        return tree_fingerprint(path)
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_EDGE))
        if st.st_size > _EDGE:
            f.seek(max(_EDGE, st.st_size - _EDGE))
            h.update(f.read(_EDGE))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256_ends": h.hexdigest()}


def tree_fingerprint(path: str | Path) -> dict[str, int | str]:
    """Total size, latest modification time (ns) and a SHA-256 of a folder (a Zarr store).

    The hash covers every file's relative name, size and modification time, and the whole
    content of the small metadata files (``.zmetadata``, ``.zarray``, ``zarr.json``, ...): a
    chunk rewritten in place changes its modification time, a variable redefined changes its
    metadata. Only ``stat`` calls for the chunks, however large they are.
    """
    root = Path(path)
    h = hashlib.sha256()
    size, latest = 0, 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            f = Path(dirpath) / name
            st = f.stat()
            size += st.st_size
            latest = max(latest, st.st_mtime_ns)
            h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
            if name.startswith(".z") or name == "zarr.json":
                h.update(f.read_bytes())
    return {"size": size, "mtime_ns": latest, "sha256_ends": h.hexdigest()}


class _RunLock:
    """Exclusive advisory lock (``flock``) of one output's run, held by the coordinating process.

    The lock dies with its process, so a lock file left by a killed run blocks nothing. The file
    is removed while still locked at the end; a run that opened it just before then finds, once
    it holds the lock, that the file at the path is another one and locks that one instead.
    """

    def __init__(self, output: Path) -> None:
        self.path = lock_path(output)
        self.fd: int | None = None
        while True:
            try:  # never through a link: a planted one would make climdl write elsewhere
                fd = os.open(
                    self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
                )
            except PermissionError as exc:
                raise OutputError(
                    f"cannot write to {output.parent}: permission denied; choose a folder you "
                    "can write to."
                ) from exc
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise OutputError(
                    f"{self.path} is a symbolic link; climdl writes its lock file only as a plain "
                    "file: remove the link."
                ) from exc
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OutputError(f"{self.path} is not a plain file; remove it.")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise OutputError(
                    f"another climdl run is writing {output} (pid {pid}); wait for it or choose "
                    "another --output."
                ) from None
            except OSError as exc:  # no flock on this file system (Lustre without -o flock)
                os.close(fd)
                with contextlib.suppress(OSError):
                    self.path.unlink()
                log.warning("cannot lock %s (%s): concurrent runs are not detected", output, exc)
                return
            try:
                st = os.stat(self.path)
                here = os.fstat(fd)
                same = (st.st_ino, st.st_dev) == (here.st_ino, here.st_dev)
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still held (see the class's docstring)
        os.close(self.fd)
        self.fd = None


def _time_chunks(ds: xr.Dataset, encoding: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Dask chunks along time as long as the output's on-disk chunks (a year): each compressed
    chunk is then written once, not once per part (an ensemble's parts hold 365 // N days, and
    HDF5 would recompress a year's chunk for every part that touches it)."""
    for name, enc in encoding.items():
        sizes = enc.get("chunksizes")
        if name in ds.data_vars and sizes and "time" in ds[name].dims:
            return {"time": int(sizes[ds[name].dims.index("time")])}
    return {}


class PartStore:
    """The finished chunks of one output file.

    Args:
        output: the final NetCDF path.
        manifest: what defines the run (JSON-serialisable); a resumed run must match it.
        resume: continue from the chunks a previous, interrupted run left.
        overwrite: replace an existing output and discard an interrupted run.
        create: set the folder up and lock the output until :meth:`close` (the coordinating
            process only: rank 0, the Dask client); other ranks and Dask workers attach to it
            (their ``manifest`` may be the creator's :attr:`manifest`, which names the run).
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
        self._lock: _RunLock | None = None
        self.run: str | None = None
        if not create:
            self.run = self.manifest.get(RUN) or self._current_run()
            return
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
        except PermissionError as exc:
            raise OutputError(f"cannot write to {self.output.parent}: permission denied.") from exc
        self._lock = _RunLock(self.output)
        try:
            self._set_up(resume, overwrite)
        except BaseException:
            self.close()
            raise

    def _set_up(self, resume: bool, overwrite: bool) -> None:
        if self.dir.is_symlink():  # its chunks, and their removal, would land elsewhere
            raise OutputError(f"{self.dir} is a symbolic link; remove it and run again.")
        if self.output.exists() and not overwrite:
            raise OutputError(f"{self.output} already exists; pass --overwrite to replace it.")
        if is_zarr(self.output):  # before any work: a folder of other files is never replaced
            check_replaceable(self.output)
        if self.dir.exists():
            if not self.done():  # left by a run that failed before its first chunk
                log.info("removing %s: it holds no finished chunk", self.dir)
                shutil.rmtree(self.dir)
            elif resume:
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
        self.run = uuid.uuid4().hex
        self.manifest[RUN] = self.run
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
        before = old.get(FINGERPRINTS, {})
        for name, now in self.manifest.get(FINGERPRINTS, {}).items():
            then = before.get(name)
            if then is not None and then != now:
                keys = set(then) | set(now)
                what = sorted({_WHAT.get(k, k) for k in keys if then.get(k) != now.get(k)})
                raise OutputError(
                    f"{name} changed since the interrupted run started ({'/'.join(what)} "
                    "differ); pass --overwrite to start again."
                )
        keys = (set(old) | set(self.manifest)) - {RUN, FINGERPRINTS}
        differ = sorted(k for k in keys if old.get(k) != self.manifest.get(k))
        if (FINGERPRINTS in old) != (FINGERPRINTS in self.manifest):
            differ.append(FINGERPRINTS)  # an older run recorded none: the inputs are unverified
        if differ:
            raise OutputError(
                f"the interrupted run in {self.dir} was made with other settings "
                f"({', '.join(differ)} differ); pass --overwrite to start again."
            )

    def _current_run(self) -> str | None:
        """The run that owns the folder now (None: the folder or its manifest is gone)."""
        try:
            run = json.loads((self.dir / MANIFEST).read_text()).get(RUN)
        except (OSError, ValueError, AttributeError):
            return None
        return str(run) if run else None

    def _check_owner(self) -> None:
        if self.run is None or self._current_run() != self.run:
            raise OutputError(
                f"{self.dir} was removed or taken over by another run while this one was "
                "writing to it; this run stops here."
            )

    def close(self) -> None:
        """End of the coordinating process's run, finished or failed: remove a parts folder
        that holds no finished chunk (nothing to resume) and release the output's lock."""
        if self._lock is None:
            return
        try:
            if self.dir.exists() and not self.done():
                shutil.rmtree(self.dir, ignore_errors=True)
        finally:
            self._lock.release()
            self._lock = None

    def path(self, index: int) -> Path:
        """File of the finished chunk ``index``."""
        return self.dir / f"part-{index:06d}.nc"

    def done(self) -> set[int]:
        """Indices of the finished chunks."""
        if not self.dir.exists():
            return set()
        return {int(p.stem.split("-")[1]) for p in self.dir.glob("part-*.nc")}

    def write(self, index: int, ds: xr.Dataset, encoding: Mapping[str, Mapping[str, Any]]) -> None:
        """Store one finished chunk (atomically; uncompressed for speed, the join compresses).

        Only while the folder still belongs to this run: a worker of a run that was stopped or
        replaced must not drop a chunk without (or under another) manifest."""
        self._check_owner()
        path = self.path(index)
        write_netcdf(ds, path, encoding=encoding, overwrite=True)
        try:
            self._check_owner()
        except OutputError:
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # recreated by the write alone: leave no empty folder
            raise

    def stream_path(self) -> Path:
        """Where a streamed output grows (:mod:`climdl.inference.streamed`): inside the parts
        folder, so that a killed run's partial file (or Zarr store) goes with the folder."""
        return self.dir / ("output.zarr.tmp" if is_zarr(self.output) else "output.nc.tmp")

    def adopt(self, path: Path) -> Path:
        """Move a complete file or store (the streamed output) onto the output and remove the
        folder."""
        self._check_owner()
        try:
            if is_zarr(self.output):
                replace_tree(path, self.output)
            else:
                os.replace(path, self.output)
        except OSError as exc:
            err = output_error(exc, self.output)
            if err is None:
                raise
            raise err from exc
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.output

    def join(
        self, n_chunks: int, encoding: Mapping[str, Mapping[str, Any]], attrs: Mapping[str, Any]
    ) -> Path:
        """Concatenate chunks 0..n-1 into the output (atomically) and remove the folder.

        A ``.zarr`` output is built in the parts folder and renamed onto the output."""
        missing = sorted(set(range(n_chunks)) - self.done())
        if missing:
            raise OutputError(
                f"chunks {missing[:5]} of {self.output} are missing from {self.dir}; "
                "run again with --resume."
            )
        paths: Sequence[Path] = [self.path(i) for i in range(n_chunks)]
        # an ensemble's parts one member per dask chunk: the join reads only what it writes
        parts = [
            xr.open_dataset(
                p, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True), chunks={"member": 1}
            )
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
            with warnings.catch_warnings():  # regrouping the parts' days is the point here
                warnings.filterwarnings("ignore", "The specified chunks separate", UserWarning)
                ds = ds.chunk(_time_chunks(ds, encoding))
            # one part in memory at a time (a threaded scheduler would load parts ahead of the
            # writer, and the join's memory would grow with the length of the series)
            with dask.config.set(scheduler="synchronous"):
                if is_zarr(self.output):
                    write_zarr(
                        ds, self.output, encoding=encoding, overwrite=True, tmp=self.stream_path()
                    )
                else:
                    write_netcdf(ds, self.output, encoding=encoding, overwrite=True)
        finally:
            for p in parts:
                p.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.output
