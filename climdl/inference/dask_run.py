"""Downscaling chunks as tasks on a Dask cluster (an existing one, or local worker processes).

Each task rebuilds the run's :class:`~climdl.inference.job.Job` from its JSON config once per
worker process (a :class:`~climdl.dask_cluster.WorkerCache` shared by the worker's threads and
freed when the client ends the run), reads its chunk of predictors, predicts and stores the
chunk file in the run's parts folder, which must therefore be on a file system the workers
share (as on an HPC cluster). The client only schedules, shows progress and joins the parts at
the end; it alone holds the output's lock. A task stores its chunk only while the folder's
manifest still names the client's run, so a task left running by a stopped run never drops a
chunk into another run's folder. On SLURM, start the workers with dask-jobqueue
(``SLURMCluster(...).scale(jobs=N)``) and pass the scheduler's address; for GPUs, one worker per
GPU (dask-cuda's ``LocalCUDACluster``), or use ``torchrun`` instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from climdl.dask_cluster import WorkerCache, client_for
from climdl.errors import ConfigError, DataError
from climdl.inference.job import Job, JobConfig
from climdl.inference.parts import PartStore

__all__ = ["release", "run_chunk", "run_on_dask"]

log = logging.getLogger(__name__)

_JOBS: WorkerCache[Job] = WorkerCache(lambda job: job.ds.close())
"""The jobs of this worker process by config: shared by its threads, freed at a run's end."""


def release(config_json: str | None = None) -> None:
    """Free the job of ``config_json`` (every job if None): its predictors and emulators.

    Sent by the client at the end of a run; a job a task still uses is freed when it is done.
    """
    _JOBS.release(config_json)


def run_chunk(
    config_json: str, index: int, output: str, manifest: dict[str, Any], torch_threads: int
) -> int:
    """Worker task: compute chunk ``index`` and store it in the output's parts folder."""
    import torch

    torch.set_num_threads(torch_threads)
    with _JOBS.use(config_json, lambda: Job(JobConfig.from_json(config_json))) as job:
        x, times = job.read(index)
        chunk = job.compute(x, times)
        PartStore(Path(output), manifest, create=False).write(
            index, chunk, job.part_encoding(chunk)
        )
    return int(times.size)


def run_on_dask(
    job: Job,
    todo: Sequence[int],
    store: PartStore,
    scheduler: str | int,
    *,
    progress: Callable[[int, int], None] | None = None,
    done_days: int = 0,
) -> None:
    """Compute the chunks ``todo`` on the cluster, storing each in ``store``."""
    import torch
    from distributed import as_completed

    if not todo:
        return
    config = job.config.to_json()
    threads = torch.get_num_threads()
    with client_for(scheduler) as client:
        log.info("Dask: %d chunk(s) on %s", len(todo), client)
        futures = [
            client.submit(
                run_chunk,
                config,
                i,
                str(store.output),
                store.manifest,
                threads,
                key=f"climdl-downscale-{store.output.name}-{i}",
                pure=False,
            )
            for i in todo
        ]
        try:
            for future in as_completed(futures):
                try:
                    done_days += int(future.result())
                except Exception as exc:
                    for f in futures:
                        f.cancel()
                    if isinstance(exc, (ConfigError, DataError)):
                        raise
                    raise DataError(
                        f"a Dask worker failed on a chunk: {exc}; the finished chunks are kept, "
                        "rerun with --resume."
                    ) from exc
                if progress:
                    progress(done_days, job.n_days)
        finally:
            with contextlib.suppress(Exception):  # the cluster may be gone: its jobs with it
                client.run(release, config)
