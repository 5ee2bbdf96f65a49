"""``climdl prepare`` on a Dask cluster: each block of time steps is one task.

A task gets a small picklable :class:`BlockSource` (input files, variables, coarse grid,
smoothing, device) and the bounds of its block. Each worker process opens the input files and
builds the regridding weights once per run (cached under the run's id, like the jobs of
:mod:`climdl.inference.dask_run`), upscales its block with the very
:meth:`~climdl.data.prepare.Upscaler.block` the in-process run uses, and sends back the coarse
block (small: time x variables x the coarse grid) with the block's share of the statistics.
The client writes the blocks in time order as they arrive (holding back those that come early)
and merges the statistics in that order, so the output file equals the in-process one.

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

from climdl.data._prepare_io import CoarseGrid
from climdl.data.prepare import UpscaledBlock, Upscaler, _device, open_fine
from climdl.errors import ConfigError, DataError

__all__ = ["BlockSource", "release", "run_block", "run_blocks"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockSource:
    """What a worker needs to rebuild a run's :class:`~climdl.data.prepare.Upscaler`."""

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


_UPSCALERS: dict[str, Upscaler] = {}


def _upscaler(source: BlockSource) -> Upscaler:
    """The upscaler of ``source``'s run in this worker process (built on first use)."""
    if source.run not in _UPSCALERS:
        release()  # one run at a time per worker: close the previous run's files
        ds, src, dims, names = open_fine(source.files, source.names, source.chunk_days)
        if names != list(source.names) or ds.sizes["time"] != source.n_times:
            ds.close()
            raise DataError(
                f"a Dask worker reads {ds.sizes['time']} time steps of {', '.join(names)} from "
                f"{source.files[0]}{' ...' if len(source.files) > 1 else ''} where the client read "
                f"{source.n_times} of {', '.join(source.names)}; the workers must see the same files."
            )
        _UPSCALERS[source.run] = Upscaler.build(
            ds, src, dims, names, source.coarse, subcells=source.subcells,
            smoothing=source.smoothing, device=_device(source.device),
        )  # fmt: skip
    return _UPSCALERS[source.run]


def release(run: str | None = None) -> None:
    """Close the input files of ``run`` (of every run if None) held by this worker process."""
    for key in [k for k in _UPSCALERS if run is None or k == run]:
        _UPSCALERS.pop(key).ds.close()


def run_block(
    source: BlockSource, start: int, stop: int, train_start: int, train_stop: int
) -> UpscaledBlock:
    """Worker task: upscale time steps ``start:stop``; statistics over the training steps."""
    import torch

    torch.set_num_threads(source.torch_threads)
    return _upscaler(source).block(start, stop, slice(train_start, train_stop))


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
    futures = {
        client.submit(run_block, source, a, b, train.start, train.stop,
                      key=f"climdl-prepare-{source.run}-{a}", pure=False): (a, b)
        for a, b in bounds
    }  # fmt: skip
    early: dict[int, UpscaledBlock] = {}
    next_start, done = 0, 0
    try:
        for future in as_completed(list(futures)):
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
            while next_start in early:
                ready = early.pop(next_start)
                take(ready)
                next_start = ready.stop
            done += b - a
            if progress is not None:
                progress(done, total)
    finally:
        for future in futures:
            future.cancel()
        with contextlib.suppress(Exception):  # the cluster may be gone: its files with it
            client.run(release, source.run)
    if early or next_start != total:  # pragma: no cover - a bug, not a user error
        raise RuntimeError(f"blocks missing: written up to {next_start} of {total} time steps")
