"""``downscale``: a trained emulator applied to a predictor series, streamed to CF NetCDF.

Time is processed in fixed chunks (``chunk_days``, a year by default): one background I/O thread
reads the next chunk and writes the previous one while the current one is regridded (on the
device), normalised and passed through the network in batches: peak memory is a few chunks
whatever the series' length. Each finished chunk is stored as its own file
(:mod:`climdl.inference.parts`): runs resume, and ranks split the chunks (``torchrun
--nproc-per-node N -m climdl downscale ...`` or ``srun``) and are joined into one compressed file
at the end; a one-process deterministic run writes its output as it goes
(:mod:`climdl.inference.streamed`). Without an output path the predictions come back in memory.
Generative checkpoints write a reproducible ensemble (:mod:`climdl.inference.members`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import time as _time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from climdl.errors import ConfigError
from climdl.inference.cordex_archive import (
    RUN_DIGEST,
    PlannedFile,
    check_targets,
    plan,
    refuse_existing,
)
from climdl.inference.cordex_run import (
    archive_metadata,
    archive_plan,
    archive_result,
    archive_resume,
    publish_run,
    record_version,
    remove_if_empty,
    run_digest,
)
from climdl.inference.emulators import Output
from climdl.inference.inputs import Regrid
from climdl.inference.job import Job, JobConfig
from climdl.inference.members import sampler_description
from climdl.inference.output import Format, global_attrs, resolve_output
from climdl.inference.parts import PartStore
from climdl.inference.result import DownscaleResult
from climdl.inference.streamed import StreamedOutput
from climdl.io.zarr_store import is_zarr
from climdl.parallel.launch import barrier, join_ranks

log = logging.getLogger(__name__)

Precision = Literal["32", "bf16", "16"]
Progress = Callable[[int, int], None]


def release_memory() -> None:
    """Hand freed heap memory back to the OS after each chunk (glibc keeps it otherwise, and a
    long series' peak RSS would creep up from fragmentation although nothing is retained)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def downscale(
    checkpoints: str | Path | Sequence[str | Path],
    inputs: Sequence[str] | str | None = None,
    output: str | Path | None = None,
    *,
    catalog: str | None = None,
    period: str | None = None,
    kind: Literal["perfect", "imperfect"] = "imperfect",
    gcm: str | None = None,
    start: str | None = None,
    end: str | None = None,
    regrid: Regrid = "conservative",
    min_coverage: float = 0.999,
    device: str = "auto",
    precision: Precision | str = "32",
    batch_size: int | None = None,
    chunk_days: int | None = None,
    fmt: Format = "cf",
    emulator_output: Output = "emulator",
    forcing: str | Path | None = None,
    range_check: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    history: str | None = None,
    progress: Progress | None = None,
    dask_scheduler: str | int | None = None,
    max_chunks: int | None = None,
    members: int | None = None,
    seed: int | None = None,
    sampler_steps: int | None = None,
    block_rows: int | None = None,
    channels_last: bool | None = None,
    metadata: str | Path | None = None,
) -> DownscaleResult:
    """Downscale a predictor series with one or several trained emulators.

    Args:
        checkpoints: emulator checkpoint(s) from ``climdl train`` (one per target, or joint).
        inputs: predictor files or globs (or use ``catalog`` + ``period``).
        output: NetCDF file (or an existing folder: the name is derived; with ``fmt="mlbench"``
            the submission tree is built inside it). ``None``: return the predictions in memory.
        catalog: a catalog entry whose test predictors are downscaled (instead of ``inputs``).
        period: the catalog entry's test period.
        kind: the catalog entry's predictors, ``perfect`` (upscaled RCM) or ``imperfect`` (GCM).
        gcm: the catalog entry's GCM (default: its training GCM).
        start: first date of the period to downscale (inclusive).
        end: last date of the period to downscale (inclusive).
        regrid: how predictors on another grid are remapped: ``conservative`` or ``bilinear``.
        min_coverage: conservative remapping refuses training cells covered less than this.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        precision: ``32``, ``bf16`` (autocast, GPUs) or ``16`` (CUDA only).
        batch_size: days per forward pass (default: 16 on the CPU, 256 on a GPU).
        chunk_days: days per chunk (read, computed and stored together; the resume unit).
            None: 365, or ``max(1, 365 // members)`` for an ensemble (a chunk's memory does
            not grow with the members).
        fmt: ``cf`` (compressed CF-1.10), ``mlbench`` (the benchmark's submission layout) or
            ``cordex-cmip6`` (the CORDEX-CMIP6 archive under the folder ``output``: one
            variable per file, five years per file, DRS paths and names; needs ``metadata``).
        emulator_output: ``emulator`` or ``baseline`` (the fitted interpolation baseline).
        forcing: CSV of yearly forcing series, when the emulator was trained with one and the
            table in its checkpoint does not cover the period.
        range_check: refuse predictors outside their plausible range after unit conversion
            (a units mistake); False accepts them.
        resume: continue an interrupted run of the same output from its finished chunks.
        overwrite: replace an existing output (and discard an interrupted run).
        history: the command line for the ``history`` attribute.
        progress: ``callback(days_done, days_total)``.
        dask_scheduler: run the chunks as tasks on a Dask cluster: its address
            (``tcp://host:8786``) or a number of local worker processes to start.
        max_chunks: stop after computing this many chunks, leaving the run resumable (tests).
        members: ensemble members to sample with generative checkpoints (at least 1; None: the
            first checkpoint's configured ``members``); refused with deterministic ones.
            ``fmt="mlbench"`` needs exactly 10.
        seed: the ensemble's seed (non-negative; None: 0): member k of a day is the same
            whatever the chunking, batch size, ranks or workers. Generative checkpoints only.
        sampler_steps: ODE steps of the sampler (None: each checkpoint's own setting).
            Generative checkpoints only.
        block_rows: run the networks' fine part (the decoder levels beyond the input
            resolution, the orography fusion, the post-processing) in strips of this many
            output rows, each with an exact halo (:mod:`climdl.inference.strips`): the same
            values as the whole grid, with the activation memory of one strip. Any positive
            number (multiples of the output rows per coarse row waste least); Doury UNet
            emulators only. None: the whole grid.
        channels_last: NHWC network weights. None: on the CPU (oneDNN's convolutions run
            natively in NHWC: the sample UNet's forward takes ~0.6x the time) and on CUDA in
            bf16/16; the values agree with NCHW to rounding (a kernel choice, like the device:
            a run may be resumed with the other layout).
        metadata: RUN.yaml, the CORDEX-CMIP6 attributes climdl cannot know (institution,
            registered model, driving simulation, contact, ...), checked against the
            controlled vocabulary before any work (:func:`climdl.data.cordex.load_run`).
            ``fmt="cordex-cmip6"`` only.

    Returns:
        The predictions (reopened lazily from the file when one was written), where they are,
        and how the run went (days, seconds, device, chunks computed and resumed).

    Raises:
        ConfigError: contradictory or unknown options (no inputs, a bad regrid method, ...).
        DataError: predictors the emulators cannot use (variables, units, grid, values).
        OutputError: an output that exists (without ``overwrite``/``resume``) or cannot be
            written.
    """
    t0 = _time.perf_counter()
    archive = archive_metadata(fmt, metadata, output)  # checked before any work
    ckpts = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    inputs_list = [inputs] if isinstance(inputs, str) else (list(inputs) if inputs else None)
    config = JobConfig(
        checkpoints=tuple(str(c) for c in ckpts),
        inputs=tuple(inputs_list) if inputs_list else None,
        catalog=catalog,
        period=period,
        kind=kind,
        gcm=gcm,
        start=start,
        end=end,
        regrid=regrid,
        min_coverage=min_coverage,
        device=device,
        precision=str(precision),
        batch_size=batch_size,
        chunk_days=chunk_days,
        fmt=fmt,
        emulator_output=emulator_output,
        forcing=str(forcing) if forcing is not None else None,
        range_check=range_check,
        members=members,
        seed=seed,
        sampler_steps=sampler_steps,
        block_rows=block_rows,
        channels_last=channels_last,
    )
    if isinstance(dask_scheduler, str):  # a malformed address fails before any work
        from climdl.dask_cluster import check_scheduler

        check_scheduler(dask_scheduler)
    job = Job(config)
    if archive is not None:
        check_targets(archive, job.targets)
    # one-time start: checkpoints loaded, inputs opened and checked (reported, for benchmarks)
    start_s = _time.perf_counter() - t0
    ds, targets, n_days, starts = job.ds, job.targets, job.n_days, job.starts
    sampler = sampler_description(job.steps) if job.members else None
    ensemble: dict[str, Any] = {
        "members": job.members,
        "sampler": sampler,
        "extra": {"start_seconds": start_s},
    }
    planned: list[PlannedFile] = []
    if archive is not None:
        assert output is not None
        out_path: Path | None = None
        archive, staging = archive_plan(archive, Path(output), job, resume)
        planned = plan(archive, Path(output), targets, job.ds.time, job.members)
        refuse_existing(planned, overwrite=overwrite, resume=resume)
        out_path = staging
    else:
        out_path = resolve_output(
            output, job.source, targets, fmt, job.emulators.members[0].experiment
        )
    if dask_scheduler is not None and out_path is None:
        raise ConfigError("running on a Dask cluster needs an output file (--output).")

    rank, world = join_ranks() if (out_path is not None and dask_scheduler is None) else (0, 1)
    if archive is not None and out_path is not None and resume:
        done = archive_resume(job, planned, archive, out_path, rank, world, t0, ensemble)
        if done is not None:
            return done
    if archive is not None and out_path is not None and rank == 0:
        record_version(archive, out_path)
    # the lock and a parts folder left without a finished chunk are released on any exit
    with contextlib.ExitStack() as cleanup:
        if archive is not None and out_path is not None:  # runs last: after the lock is gone
            cleanup.callback(remove_if_empty, out_path.parent)
        store = None
        attrs = None
        if out_path is not None:
            if rank == 0:  # the coordinating process: locks the output, owns the folder
                store = PartStore(out_path, job.manifest(), resume=resume, overwrite=overwrite)
                cleanup.callback(store.close)
            barrier(world)
            if rank != 0:  # the folder's manifest names the run
                store = PartStore(out_path, {}, create=False)
            assert store is not None
            attrs = global_attrs(
                emulators=job.emulators.describe(),
                source_files=job.source.files,
                kind=job.source.kind,
                gcm=job.source.gcm,
                domain=job.source.domain or ds.attrs.get("domain"),
                regrid=job.adapter.describe(),
                history=history or "climdl.inference.downscale()",
                previous_history=str(ds.attrs["history"]) if "history" in ds.attrs else None,
                fmt=fmt,
                output=emulator_output,
                members=job.members,
                seed=job.seed,
                sampler=sampler,
            )
            if archive is not None:  # compared before a resumed run publishes the file
                attrs[RUN_DIGEST] = run_digest(job)
        finished = store.done() if store is not None else set()
        todo = [i for i in range(len(starts)) if i % world == rank and i not in finished]
        if max_chunks is not None:
            todo = todo[:max_chunks]
        results: list[xr.Dataset] = []
        done_days = sum(job.chunk_length(i) for i in finished if i % world == rank)
        if progress:
            progress(done_days, n_days)
        stream: StreamedOutput | None = None
        if dask_scheduler is not None:
            from climdl.inference.dask_run import run_on_dask

            assert store is not None
            run_on_dask(job, todo, store, dask_scheduler, progress=progress, done_days=done_days)
        else:
            # a run that computes every chunk here writes the compressed output as it goes
            stream = (
                StreamedOutput(
                    store.stream_path(),
                    store.output,
                    job.ds.time,
                    job.emulators.spec,
                    targets,
                    fmt,
                    job.final_encoding(),
                    attrs or {},
                )
                if store is not None
                and world == 1
                and job.members is None
                and max_chunks is None
                and todo == list(range(len(starts)))
                else None
            )
            if stream is not None:
                cleanup.callback(stream.close)
            done_days = _run_chunks(job, todo, store, stream, results, done_days, n_days, progress)
        resumed = len([i for i in finished if i % world == rank])
        dev, grid = str(job.device), job.adapter.describe()
        if store is None:
            out = (
                xr.concat(
                    results,
                    dim="time",
                    data_vars="minimal",
                    coords="minimal",
                    compat="override",
                    join="override",
                )
                if results
                else xr.Dataset()
            )
            return DownscaleResult(
                out,
                None,
                n_days,
                _time.perf_counter() - t0,
                dev,
                grid,
                len(todo),
                rank=rank,
                world_size=world,
                **ensemble,
            )
        barrier(world)
        assert attrs is not None
        if max_chunks is not None and len(store.done()) < len(starts):
            return DownscaleResult(
                xr.Dataset(),
                None,
                n_days,
                _time.perf_counter() - t0,
                dev,
                grid,
                len(todo),
                resumed,
                rank,
                world,
                **ensemble,
            )
        if rank == 0 and stream is not None:
            store.adopt(stream.path)
        elif rank == 0:
            store.join(len(starts), job.final_encoding(), attrs)
        barrier(world)
        assert out_path is not None
        if archive is not None:
            if rank != 0:
                return DownscaleResult(
                    xr.Dataset(),
                    None,
                    n_days,
                    _time.perf_counter() - t0,
                    dev,
                    grid,
                    len(todo),
                    resumed,
                    rank,
                    world,
                    **ensemble,
                )
            publish_run(out_path, planned, archive, overwrite=overwrite or resume)
            return archive_result(job, planned, out_path, t0, len(todo), resumed, ensemble)
        seconds = _time.perf_counter() - t0
        store_kw: dict[str, Any] = (
            {"engine": "zarr", "consolidated": True} if is_zarr(out_path) else {}
        )
        reopened = xr.open_dataset(
            out_path,
            decode_times=xr.coders.CFDatetimeCoder(use_cftime=True),
            decode_coords="all",
            chunks={},
            **store_kw,
        )
        return DownscaleResult(
            reopened,
            out_path,
            n_days,
            seconds,
            dev,
            grid,
            len(todo),
            resumed,
            rank,
            world,
            **ensemble,
        )


def _run_chunks(
    job: Job,
    todo: list[int],
    store: PartStore | None,
    stream: StreamedOutput | None,
    results: list[xr.Dataset],
    done_days: int,
    n_days: int,
    progress: Progress | None,
) -> int:
    """Compute the chunks ``todo`` in order; returns the days done.

    One I/O thread reads the next chunk, stores the last one's part and compresses the streamed
    output's days as they come, while this thread runs the networks; the thread's work is
    queued in that order and never runs twice at once (HDF5 is not thread-safe). On a failure
    the queued reads and parts are dropped, so that the error is reported at once."""
    pool = ThreadPoolExecutor(max_workers=1)
    queued: list[Future[None]] = []

    def emit_at(start: int) -> Callable[[int, np.ndarray], None]:
        assert stream is not None
        return lambda a, v: queued.append(pool.submit(stream.add, start + a, v))

    try:
        pending_read: Future[tuple[np.ndarray, xr.DataArray]] | None = (
            pool.submit(job.read, todo[0]) if todo else None
        )
        if stream is not None:
            queued.append(pool.submit(stream.open))
        for k, i in enumerate(todo):
            assert pending_read is not None
            x_np, times = pending_read.result()
            pending_read = pool.submit(job.read, todo[k + 1]) if k + 1 < len(todo) else None
            emit = emit_at(job.starts[i]) if stream is not None else None
            chunk = job.compute(x_np, times, emit)
            for f in [f for f in queued if f.done()]:  # a failed write stops the run now
                f.result()
                queued.remove(f)
            if store is None:
                results.append(chunk)
            elif stream is None or k + 1 < len(todo):  # the stream holds the last chunk's days
                queued.append(pool.submit(store.write, i, chunk, job.part_encoding(chunk)))
            done_days += int(times.size)
            release_memory()
            if progress:
                progress(done_days, n_days)
        if stream is not None:
            queued.append(pool.submit(stream.finish))
        for f in queued:
            f.result()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return done_days
