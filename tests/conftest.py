"""Shared fixtures: the embedded sample and tiny emulators trained on it (made once per test
session on the real code path), a spy on the figures ``climdl plot`` saves, hostile file systems."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from climdl.parallel.testing import NO_LOGGERS, TINY_MODEL
from tests.argv import train_argv
from tests.paths import CONFIGS


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test runs offline: sockets refuse to connect and cartopy's downloaders raise (use
    with ``pytestmark = pytest.mark.usefixtures("offline")``)."""
    import socket

    import cartopy.io

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(cartopy.io.Downloader, "acquire_resource", refuse)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests skip where there is no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ALPS embedded sample (1 year per period, seed 0): ``<tmp>/ALPS/ALPS_domain``."""
    from climdl.data.sample import write_sample

    return write_sample(tmp_path_factory.mktemp("sample"), "ALPS", years=1, seed=0).root


@pytest.fixture(scope="session")
def sample_cache(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CLIMDL_CACHE folder in which the catalog's ``sample-alps`` entry finds ``sample_root``."""
    cache = tmp_path_factory.mktemp("cache")
    target = cache / "sample" / "years1-seed0" / "ALPS"
    target.parent.mkdir(parents=True)
    target.symlink_to(sample_root.parent, target_is_directory=True)
    return cache


@pytest.fixture()
def use_sample_cache(sample_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLIMDL_CACHE", str(sample_cache))
    return sample_cache


def _train_tiny(out: Path, cache: Path, targets: str) -> Path:
    """A tiny emulator (two training batches) on the sample: the path of its last checkpoint."""
    from climdl.cli import main

    short = "--trainer.max_epochs 1 --trainer.limit_train_batches 2 --trainer.limit_val_batches 1"
    options = [*short.split(), "--quiet", *NO_LOGGERS, *TINY_MODEL, "--data.batch_size", "8"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLIMDL_CACHE", str(cache))
        rc = main(
            train_argv(
                CONFIGS / "emulator" / "sample.yaml", out, *options, "--data.targets", targets
            )
        )
    assert rc == 0
    return next(out.rglob("last.ckpt"))


@pytest.fixture(scope="session")
def tasmax_ckpt(sample_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny tasmax emulator trained on the sample (Emulator_hist_future, residual to baseline)."""
    return _train_tiny(tmp_path_factory.mktemp("tasmax-run"), sample_cache, "[tasmax]")


@pytest.fixture(scope="session")
def pr_ckpt(sample_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pr emulator trained on the sample."""
    return _train_tiny(tmp_path_factory.mktemp("pr-run"), sample_cache, "[pr]")


TINY_GENERATIVE = [
    *["--model.init_args.depth", "2", "--model.init_args.base_filters", "4"],
    *["--model.init_args.max_filters", "8", "--model.init_args.crop", "32"],
    *["--model.init_args.sampler_steps", "2", "--model.init_args.members", "3"],
    *["--model.init_args.val_members", "2", "--model.init_args.val_steps", "1"],
    *["--model.init_args.val_days", "2", "--trainer.max_epochs", "1"],
    *["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"],
    *["--data.batch_size", "8", "--data.test_period", "null", "--quiet", *NO_LOGGERS],
]
"""Options that shrink configs/emulator/sample_generative.yaml to seconds (2 training steps)."""


def train_generative(out: Path, cache: Path, stage1: Path, *extra: str) -> Path:
    """A tiny generative emulator on the sample over ``stage1``: the path of its last checkpoint."""
    from climdl.cli import main

    config = CONFIGS / "emulator" / "sample_generative.yaml"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLIMDL_CACHE", str(cache))
        rc = main(
            train_argv(
                config,
                out,
                *TINY_GENERATIVE,
                "--model.init_args.mean_checkpoint",
                str(stage1),
                *extra,
            )
        )
    assert rc == 0
    return next(out.rglob("last.ckpt"))


@pytest.fixture(scope="session")
def gen_pr_ckpt(
    pr_ckpt: Path, sample_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A tiny generative pr emulator (flow-matching residual over ``pr_ckpt``), 3 members of
    2 Heun steps by default; self-contained (needs no stage-1 file)."""
    return train_generative(tmp_path_factory.mktemp("gen-pr-run"), sample_cache, pr_ckpt)


@pytest.fixture()
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures ``climdl plot`` saves (still written to disk), for inspection."""
    import climdl.plot.quicklook as quicklook

    saved: list[Any] = []
    real = quicklook.save_figure

    def spy(fig: Any, path: Any, **kwargs: Any) -> Path:
        saved.append(fig)
        return real(fig, path, **kwargs)

    monkeypatch.setattr(quicklook, "save_figure", spy)
    return saved


# ----------------------------------------------------------------------------- hostile file systems
def _mount_tmpfs(path: Path, size: str, readonly: bool) -> bool:
    """Mount a small tmpfs on ``path`` (root only): the one honest way to get a full disk or a
    read-only folder that root itself cannot write (root ignores permission bits)."""
    import os
    import subprocess

    if os.geteuid() != 0:
        return False
    opts = f"size={size}" + (",ro" if readonly else "")
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


def _umount(path: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture()
def readonly_dir(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A folder nobody can write into: a read-only tmpfs as root, else a folder without write bits."""
    import os
    import stat

    folder = tmp_path / "readonly"
    folder.mkdir()
    if _mount_tmpfs(folder, "1m", readonly=True):
        yield folder
        _umount(folder)
        return
    if os.geteuid() == 0:
        pytest.skip("cannot mount a read-only tmpfs here, and root ignores permission bits")
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    yield folder
    folder.chmod(stat.S_IRWXU)


@pytest.fixture()
def full_disk_dir(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A folder on an almost full file system (8 KiB left): any real output fills it (root only;
    skipped elsewhere)."""
    import shutil

    folder = tmp_path / "full"
    folder.mkdir()
    if not _mount_tmpfs(folder, "256k", readonly=False):
        pytest.skip("needs root to mount a small tmpfs")
    # leave 8 KiB: less than any NetCDF file climdl writes, more than a folder entry
    filler = folder / ".filler"
    filler.write_bytes(b"\0" * max(shutil.disk_usage(folder).free - 8192, 0))
    yield folder
    _umount(folder)
