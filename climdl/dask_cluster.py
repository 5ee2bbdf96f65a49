"""The Dask client of the commands that can run on a cluster (``downscale``, ``prepare``).

Both take ``--dask-scheduler ADDRESS`` (an existing cluster, e.g. started on SLURM with
dask-jobqueue) or ``--workers N`` (N local worker processes, one thread each); :func:`client_for`
turns either into a connected client, so the two commands start and reach clusters the same way
and report a malformed or unreachable scheduler with the same one-sentence
:class:`ConfigError`. :class:`WorkerCache` is what their tasks keep per worker process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from climdl.errors import ConfigError

__all__ = ["WorkerCache", "check_scheduler", "client_for", "dask_target"]

T = TypeVar("T")

# set by a nanny besides its pre-spawn-environ config: the workers' hash seed, the host's pid
_NANNY_EXTRA = ("PYTHONHASHSEED", "__DASK_PARENT_PID")

_FORM = "tcp://HOST:PORT"


def check_scheduler(address: str) -> str:
    """``address`` if it is a well-formed Dask scheduler address, else a :class:`ConfigError`.

    Only the form is checked (nothing is contacted): a known scheme, and for the network
    schemes a host and a port. A bare number is refused: it would read as a worker count.
    """
    text = str(address).strip()
    if text.isdigit():
        raise ConfigError(
            f"--dask-scheduler {text} is not an address: give the scheduler's address, e.g. "
            "tcp://HOST:8786; for local workers use --workers N."
        )
    try:
        from distributed.comm.addressing import parse_address, parse_host_port
        from distributed.comm.registry import get_backend

        scheme, location = parse_address(text)
        get_backend(scheme)  # an unknown scheme (http://...) raises ValueError
        if scheme in ("tcp", "tls", "ws", "wss"):
            host, port = parse_host_port(location)
            if not host or not 0 < int(port) < 65536:
                raise ValueError("no host or no valid port")
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{text!r} is not a Dask scheduler address ({exc}); give it as {_FORM}."
        ) from exc
    return text


def dask_target(scheduler: str | None, workers: int | None) -> str | int | None:
    """What the CLIs pass on from ``--dask-scheduler`` / ``--workers``: checked, or None."""
    if scheduler is not None:
        return check_scheduler(scheduler)
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}.")
    return workers


def _restore_environ(before: dict[str, str], keys: set[str]) -> None:
    """Give the variables ``keys`` of this process's environment their values of ``before``.

    A nanny sets ``distributed.nanny.pre-spawn-environ`` (``OMP_NUM_THREADS=1``,
    ``MKL_NUM_THREADS=1``, ``OPENBLAS_NUM_THREADS=1``, ``MALLOC_TRIM_THRESHOLD_``,
    ``PYTHONHASHSEED``) in ``os.environ`` before it spawns a worker, and a local cluster's nannies
    live in this process, so the variables would stay after the cluster is gone: every process
    started afterwards (a torchrun, the next command of a notebook) would run single-threaded
    BLAS and sum floats in another order than before. The workers get them at spawn; this
    process gets its own values back (only of these variables: others are not ours to undo).
    """
    for key in keys:
        if key in before:
            os.environ[key] = before[key]
        else:
            os.environ.pop(key, None)


@contextlib.contextmanager
def _quiet_distributed() -> Iterator[None]:
    """Dask's ``distributed`` logs its scheduler's and nannies' INFO lines (~40 per run) with a
    handler of its own, whatever the root logger's level: they are kept for ``--debug`` (the
    root logger at DEBUG) and otherwise raised to WARNING for the block, then restored."""
    logger = logging.getLogger("distributed")
    level = logger.level
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def client_for(scheduler: str | int, *, timeout: float | str | None = None) -> Iterator[Any]:
    """A Dask client: connected to ``scheduler`` (an address) or to N new local worker processes.

    Only an ``int`` is a worker count; a string is an address (a digit-only string is refused,
    see :func:`check_scheduler`). ``timeout``: how long to try to reach an existing scheduler
    (seconds or a Dask duration such as ``"30s"``); default Dask's
    ``distributed.comm.timeouts.connect`` (30 s unless configured otherwise, e.g. with
    ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=5s``).
    """
    try:  # imported before the loggers are quieted: its import sets their levels
        import distributed  # noqa: F401
    except ImportError as exc:  # pragma: no cover - distributed is a dependency
        raise ConfigError("running on Dask needs the 'distributed' package.") from exc
    with _quiet_distributed():
        yield from _client_for(scheduler, timeout)


def _client_for(scheduler: str | int, timeout: float | str | None) -> Iterator[Any]:
    import dask
    from distributed import Client, LocalCluster

    if isinstance(scheduler, int):
        if scheduler < 1:
            raise ConfigError(f"--workers must be at least 1, got {scheduler}.")
        before = dict(os.environ)
        nanny_keys = {*dask.config.get("distributed.nanny.pre-spawn-environ", {}), *_NANNY_EXTRA}
        try:
            with LocalCluster(
                n_workers=scheduler, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster:
                _restore_environ(before, nanny_keys)  # the workers are up with their variables
                with Client(cluster) as client:
                    yield client
        finally:  # a nanny that restarted a worker set them again
            _restore_environ(before, nanny_keys)
        return
    address = check_scheduler(scheduler)  # before a Client exists: a failed one lingers
    wait = dask.config.get("distributed.comm.timeouts.connect") if timeout is None else timeout
    try:
        client = Client(address, timeout=wait)
    except OSError as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{address!r} is not a usable Dask scheduler address ({exc}); give it as {_FORM}."
        ) from exc
    with client:
        yield client


@dataclass
class _Entry(Generic[T]):
    value: T
    users: int = 0
    released: bool = False


class WorkerCache(Generic[T]):
    """Objects built once per run in a worker process and shared by all its threads.

    Dask workers may run several tasks at once in threads (dask-jobqueue's ``SLURMCluster``,
    ``processes=False`` clusters), of one run or of several. So an object is built under a lock
    (two threads of a run starting together build it once), every task holds it while it uses
    it, and :meth:`release` (sent by the client at the end of a run) closes it at once if no task
    uses it, else when the last one is done: each object built is closed exactly once, never
    while in use, and a new run never closes another run's objects. A task of a released run
    that still starts (cancelled too late) builds its own object and closes it when done.
    """

    def __init__(self, close: Callable[[T], None]) -> None:
        self._close = close
        self._lock = threading.Lock()
        self._items: dict[str, _Entry[T]] = {}
        self._released: set[str] = set()  # a few bytes per run and worker process

    @contextlib.contextmanager
    def use(self, key: str, build: Callable[[], T]) -> Iterator[T]:
        """The object of ``key``, built by ``build()`` on first use, held while in the block."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                entry = _Entry(build())
                if key in self._released:
                    entry.released = True  # not cached: closed right after this task
                else:
                    self._items[key] = entry
            entry.users += 1
        try:
            yield entry.value
        finally:
            with self._lock:
                entry.users -= 1
                last = entry.released and entry.users == 0
            if last:
                self._close(entry.value)

    def release(self, key: str | None = None) -> None:
        """Close the object of ``key`` (of every key if None) once no task uses it."""
        with self._lock:
            if key is not None:
                self._released.add(key)
            keys = [k for k in self._items if key is None or k == key]
            idle = []
            for k in keys:
                entry = self._items.pop(k)
                entry.released = True
                if entry.users == 0:
                    idle.append(entry.value)
        for value in idle:
            self._close(value)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
