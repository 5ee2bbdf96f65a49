"""Shared fixtures: the embedded sample, made once per test session on the real code path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


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
