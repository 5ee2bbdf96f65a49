"""Distributed runs destroy their process groups when the process exits, not at its teardown.

A gloo process group left to the interpreter's teardown aborts a few percent of successful runs
("terminate called without an active exception"): once in CI, in the tensor-parallel test. The
groups are closed by an :mod:`atexit` handler, not at the end of each run, so that a script
under torchrun can run climdl twice in one process.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch.distributed as dist
import xarray as xr

import climdl.parallel.launch as launch
from climdl.parallel.launch import close_process_groups, free_port
from climdl.parallel.testing import strategy_config, train_args
from tests.paths import FIXTURES


def test_close_process_groups_destroys_the_default_group(tmp_path: Path) -> None:
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    assert dist.is_initialized()
    close_process_groups()
    assert not dist.is_initialized()
    close_process_groups()  # nothing to close: no error
    assert not dist.is_initialized()


@pytest.fixture()
def restored_environ() -> Iterator[None]:
    """Lightning's launcher sets LOCAL_RANK, WORLD_SIZE, MASTER_PORT... in this process; left
    behind, they make every later subprocess training believe it was launched externally (a
    2-process run then waits forever for its second rank)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_train_under_ddp_closes_its_group_at_exit(
    tmp_path: Path,
    use_sample_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    restored_environ: None,
) -> None:
    from climdl.cli import main

    registered: list[Callable[[], None]] = []
    real_register = atexit.register

    def spy(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[..., Any]:
        if func is close_process_groups:  # recorded, run below; other libraries' go through
            registered.append(func)
            return func
        return real_register(func, *args, **kwargs)

    monkeypatch.setattr(launch, "_closing_at_exit", False)
    monkeypatch.setattr(atexit, "register", spy)
    monkeypatch.setenv("MASTER_PORT", "0")
    args = train_args(
        tmp_path / "run",
        [strategy_config("ddp")],
        "--trainer.devices",
        "1",
        "--trainer.max_epochs",
        "1",
    )
    assert main(args) == 0
    assert (tmp_path / "run" / "summary.json").exists()
    assert registered == [close_process_groups]
    assert dist.is_initialized()  # kept for the process's life
    registered[0]()  # what the interpreter runs at exit
    assert not dist.is_initialized()


SCRIPT = """
import sys
from climdl.inference import downscale
ckpt, inputs, out = sys.argv[1:4]
for k in range(2):
    downscale(ckpt, [inputs], f"{out}-{k}.nc", chunk_days=1)
"""


@pytest.mark.distributed
def test_two_ranks_downscale_twice_in_one_process(tmp_path: Path) -> None:
    """Under torchrun, a second run in the same processes reuses the group of the first."""
    script = tmp_path / "twice.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(free_port()),
        str(script),
        str(FIXTURES / "emulator-0.1.ckpt"),
        str(FIXTURES / "predictors-0.1.nc"),
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with xr.open_dataset(f"{out}-0.nc") as a, xr.open_dataset(f"{out}-1.nc") as b:
        assert a.sizes["time"] == 2
        np.testing.assert_array_equal(a.tasmax.values, b.tasmax.values)
