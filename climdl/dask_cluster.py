"""The Dask client of the commands that can run on a cluster (``downscale``, ``prepare``).

Both take ``--dask-scheduler ADDRESS`` (an existing cluster, e.g. started on SLURM with
dask-jobqueue) or ``--workers N`` (N local worker processes, one thread each); :func:`client_for`
turns either into a connected client, so the two commands start and reach clusters the same way
and report an unreachable scheduler with the same one-sentence :class:`ConfigError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from climdl.errors import ConfigError


@contextlib.contextmanager
def client_for(scheduler: str | int, *, timeout: float | str | None = None) -> Iterator[Any]:
    """A Dask client: connected to ``scheduler`` (an address) or to N new local worker processes.

    ``timeout``: how long to try to reach an existing scheduler (seconds or a Dask duration
    such as ``"30s"``); default Dask's ``distributed.comm.timeouts.connect`` (30 s unless
    configured otherwise, e.g. with ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=5s``).
    """
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - distributed is a dependency
        raise ConfigError("running on Dask needs the 'distributed' package.") from exc
    if isinstance(scheduler, int) or str(scheduler).isdigit():
        n = int(scheduler)
        if n < 1:
            raise ConfigError("--workers must be at least 1.")
        with (
            LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    wait = dask.config.get("distributed.comm.timeouts.connect") if timeout is None else timeout
    try:
        client = Client(str(scheduler), timeout=wait)
    except OSError as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
    with client:
        yield client
