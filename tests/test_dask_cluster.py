"""climdl.dask_cluster: local clusters leave the host process's environment as it was."""

from __future__ import annotations

import logging
import os

import pytest

from climdl.dask_cluster import client_for


def _worker_threads_env() -> tuple[str | None, str | None]:
    return os.environ.get("OMP_NUM_THREADS"), os.environ.get("MKL_NUM_THREADS")


def test_local_workers_get_one_thread_and_the_host_keeps_its_environment(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # Dask's nanny writes OMP_NUM_THREADS=1 etc. into the spawning process and never takes them
    # back: a later subprocess (torchrun, a resumed climdl run) then summed floats differently
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    before = dict(os.environ)
    import distributed  # noqa: F401  (its import sets its logger's level)

    level = logging.getLogger("distributed").level
    with client_for(1) as client:
        (on_worker,) = client.run(_worker_threads_env).values()
        during = dict(os.environ)
    # Dask's default where the host had none; the user's own setting is passed on
    assert on_worker == ("1", "3")
    assert during == before
    assert dict(os.environ) == before
    # the scheduler's and nannies' INFO lines (~40 a run) are not a user's business
    assert "INFO" not in capfd.readouterr().err
    assert logging.getLogger("distributed").level == level  # restored afterwards
