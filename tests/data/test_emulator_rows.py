"""EmulatorDataModule.target_rows: loaders serve one row block of the targets (domain parallelism)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from climdl.data.emulator_data import EmulatorDataModule
from climdl.errors import ConfigError

ROWS = (40, 72)


def _module(lazy: bool) -> EmulatorDataModule:
    dm = EmulatorDataModule(
        catalog="sample-alps",
        orography=False,
        batch_size=16,
        test_period="historical",
        memory_budget_gb=0.0 if lazy else 4.0,  # a zero budget forces lazy reading
    )
    dm.setup("fit")
    assert dm.source.in_memory is not lazy
    return dm


@pytest.mark.parametrize("lazy", [False, True], ids=["in_memory", "lazy"])
def test_loaders_serve_exactly_the_rows_of_the_full_batch(
    use_sample_cache: Path, lazy: bool
) -> None:
    full = _module(lazy=False)
    dm = _module(lazy)
    dm.target_rows = ROWS  # as the domain-parallel task does in configure_model, after setup
    a, b = ROWS
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        batch = next(iter(loader))
        x, y = full.source.read(batch["index"].numpy())
        assert tuple(batch["y"].shape) == (16, 1, b - a, 128)
        np.testing.assert_array_equal(batch["y"].numpy(), y[:, :, a:b])
        np.testing.assert_array_equal(batch["x"].numpy(), x)  # predictors stay whole
    test = next(iter(dm.test_dataloader()))
    test_full = next(iter(full.test_dataloader()))
    np.testing.assert_array_equal(test["y"].numpy(), test_full["y"].numpy()[:, :, a:b])
    np.testing.assert_array_equal(test["x"].numpy(), test_full["x"].numpy())
    # what the task fits and builds from keeps the whole grid
    _, y_sample = dm.training_sample(8)
    assert y_sample.shape[-2:] == (128, 128)
    np.testing.assert_array_equal(y_sample, full.training_sample(8)[1])
    assert dm.spec().out_size == (128, 128)


def test_in_memory_source_keeps_only_the_block(use_sample_cache: Path) -> None:
    dm = _module(lazy=False)
    full_y = dm.source.read(np.arange(3))[1]
    dm.target_rows = ROWS
    dm.val_dataloader()
    assert dm.source.y_np is None  # the full array is dropped
    assert dm.source.y_rows is not None and dm.source.y_rows.shape[-2:] == (ROWS[1] - ROWS[0], 128)
    dm.target_rows = (50, 60)  # a narrower block comes from the kept one
    batch = next(iter(dm.val_dataloader()))
    expected = dm.source.read(batch["index"].numpy())[1][:, :, 50:60]
    np.testing.assert_array_equal(batch["y"].numpy(), expected)
    np.testing.assert_array_equal(dm.source.read(np.arange(3))[1], full_y)  # full reads: lazily
    dm.target_rows = None
    assert next(iter(dm.val_dataloader()))["y"].shape[-2:] == (128, 128)


@pytest.mark.parametrize("rows", [(5, 5), (10, 3), (-1, 4), (0, 129), (120, 200)])
def test_a_bad_row_range_is_a_config_error(use_sample_cache: Path, rows: tuple[int, int]) -> None:
    dm = _module(lazy=False)
    with pytest.raises(ConfigError, match="target_rows"):
        dm.target_rows = rows


def test_a_range_beyond_the_grid_set_before_setup_fails_at_the_loader(
    use_sample_cache: Path,
) -> None:
    dm = EmulatorDataModule(catalog="sample-alps", orography=False)
    dm.target_rows = (0, 500)  # the grid is not known yet
    dm.setup("fit")
    with pytest.raises(ConfigError, match="128 rows"):
        dm.train_dataloader()
