"""Distributed runs end by destroying their process groups, not by leaving them to exit.

A gloo process group left to the interpreter's shutdown aborts a few percent of successful runs
("terminate called without an active exception"): once in CI, in the tensor-parallel test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch.distributed as dist

from climdl.parallel.launch import close_process_groups
from climdl.parallel.testing import strategy_config, train_args


def test_close_process_groups_destroys_the_default_group(tmp_path: Path) -> None:
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    assert dist.is_initialized()
    close_process_groups()
    assert not dist.is_initialized()
    close_process_groups()  # nothing to close: no error
    assert not dist.is_initialized()


def test_train_under_ddp_leaves_no_process_group(
    tmp_path: Path, use_sample_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from climdl.cli import main

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
    assert not dist.is_initialized()
