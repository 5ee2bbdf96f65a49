"""``climdl prepare`` on a Dask cluster: each block of time steps is one task.

A task gets a small picklable :class:`BlockSource` (input files, variables, coarse grid,
smoothing, device) and the bounds of its block. Each worker process opens the input files and
builds the regridding weights once per run (a :class:`~climdl.dask_cluster.WorkerCache` under
the run's id, shared by the worker's threads, like the jobs of :mod:`climdl.inference.dask_run`;
closed when the client ends the run), upscales its block with the very
:meth:`~climdl.data.upscale.Upscaler.block` the in-process run uses, and sends back the coarse
block (small: time x variables x the coarse grid) with the block's share of the statistics.
The client writes the blocks in time order as they arrive (holding back those that come early)
and merges the statistics in that order, so the output file equals the in-process one. It
keeps at most :func:`window` blocks (twice the cluster's threads) in flight or held back, and
submits the next ones as blocks are written, so its memory stays a few blocks whatever the
length of the series.

The workers read the input files themselves: they must see them at the same (absolute) paths,
as on an HPC cluster's shared file system. On SLURM, start the workers with dask-jobqueue
(``SLURMCluster(...).scale(jobs=N)``) and pass the scheduler's address; for GPUs, pass
``device="cuda"`` and run one worker per GPU (dask-cuda's ``LocalCUDACluster``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from climdl.dask_cluster import WorkerCache
from climdl.data._prepare_io import CoarseGrid
from climdl.data.files import describe
from climdl.data.upscale import UpscaledBlock, Upscaler, open_fine
from climdl.errors import ConfigError, DataError
from climdl.preprocess.device import resolve_device

__all__ = ["BlockSource", "release", "run_block", "run_blocks", "window"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockSource:
    """What a worker needs to rebuild a run's :class:`~climdl.data.upscale.Upscaler`."""

    run: str
    """Unique id of the run: the key of the worker's cache."""
    files: tuple[str, ...]
    """Absolute paths of the input files, as the workers must see them."""
    names: tuple[str, ...]
    n_times: int
    """Time steps the client found: a worker that finds others reads other files."""
    coarse: CoarseGrid
    subcells: int
    smoothing: int
    device: str
    chunk_days: int
    torch_threads: int
    """Torch threads of the client: the same count gives the same rounding."""
    range_check: bool = True
    """Refuse values outside their variable's plausible range (see :func:`prepare`)."""


def _build(source: BlockSource) -> Upscaler:
    """Open the input files of ``source`` and build its run's upscaler (closed on failure)."""
    ds, src, dims, names = open_fine(source.files, source.names, source.chunk_days)
    try:
        if names != list(source.names) or ds.sizes["time"] != source.n_times:
            raise DataError(
                f"a Dask worker reads {ds.sizes['time']} time steps of {', '.join(names)} from "
                f"{source.files[0]}{' ...' if len(source.files) > 1 else ''} where the client read "
                f"{source.n_times} of {', '.join(source.names)}; the workers must see the same files."
            )
        return Upscaler.build(
            ds, src, dims, names, source.coarse, subcells=source.subcells,
            smoothing=source.smoothing, device=resolve_device(source.device),
            where=describe([Path(f) for f in source.files]), range_check=source.range_check,
        )  # fmt: skip
    except BaseException:
        ds.close()
        raise


_UPSCALERS: WorkerCache[Upscaler] = WorkerCache(lambda upscaler: upscaler.ds.close())
"""The upscalers of this worker process by run: shared by its threads, closed at a run's end."""


def release(run: str | None = None) -> None:
    """Close the input files of ``run`` (of every run if None) in this worker process.

    Sent by the client at the end of a run; files a task still reads are closed when it is done.
    """
    _UPSCALERS.release(run)


def run_block(
    source: BlockSource, start: int, stop: int, train_start: int, train_stop: int
) -> UpscaledBlock:
    """Worker task: upscale time steps ``start:stop``; statistics over the training steps."""
    import torch

    torch.set_num_threads(source.torch_threads)
    with _UPSCALERS.use(source.run, lambda: _build(source)) as upscaler:
        return upscaler.block(start, stop, slice(train_start, train_stop))


def window(client: Any) -> int:
    """Blocks in flight or waiting to be written at most: twice the cluster's threads, >= 2.

    Asked again as blocks complete, so that workers joining later (an adaptive cluster, SLURM
    jobs still queued) are used.
    """
    try:
        threads = sum(int(n) for n in client.nthreads().values())
    except Exception:  # the scheduler is slow or gone: the next result tells
        threads = 1
    return max(2, 2 * threads)


def run_blocks(
    client: Any,
    source: BlockSource,
    bounds: Sequence[tuple[int, int]],
    train: slice,
    take: Callable[[UpscaledBlock], None],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Compute the blocks ``bounds`` on the cluster and pass them to ``take`` in time order.

    ``progress(done, total)`` is called as blocks complete (in any order). A worker's
    :class:`ConfigError` or :class:`DataError` is raised as is, anything else as a
    :class:`DataError`; the blocks not yet done are then cancelled.
    """
    from distributed import as_completed

    total = bounds[-1][1] if bounds else 0
    log.info("Dask: %d block(s) of %s on %s", len(bounds), Path(source.files[0]).name, client)
    queue = iter(bounds)
    futures: dict[Any, tuple[int, int]] = {}
    early: dict[int, UpscaledBlock] = {}
    completed = as_completed()
    next_start, done = 0, 0

    def submit_more() -> None:
        """Keep at most :func:`window` blocks in flight or waiting: client memory is bounded.

        Blocks are submitted in time order, so the next one to write is always in flight or
        waiting (if every submitted block is written, there is room to submit it).
        """
        limit = window(client)
        while len(futures) + len(early) < limit:
            a, b = next(queue, (-1, -1))
            if a < 0:
                return
            future = client.submit(run_block, source, a, b, train.start, train.stop,
                                   key=f"climdl-prepare-{source.run}-{a}", pure=False)  # fmt: skip
            futures[future] = (a, b)
            completed.add(future)

    try:
        submit_more()
        for future in completed:
            a, b = futures.pop(future)
            try:
                block = future.result()
            except (ConfigError, DataError):
                raise
            except Exception as exc:
                raise DataError(
                    f"a Dask worker failed on time steps {a} to {b - 1} ({type(exc).__name__}: "
                    f"{exc}); nothing was written, fix the cause and run again."
                ) from exc
            early[block.start] = block
            del block, future  # only ``early`` holds the block until it is written
            while next_start in early:
                stop = early[next_start].stop
                take(early.pop(next_start))
                next_start = stop
            done += b - a
            if progress is not None:
                progress(done, total)
            submit_more()
    finally:
        for future in futures:
            future.cancel()
        with contextlib.suppress(Exception):  # the cluster may be gone: its files with it
            client.run(release, source.run)
    if early or next_start != total:  # pragma: no cover - a bug, not a user error
        raise RuntimeError(f"blocks missing: written up to {next_start} of {total} time steps")
