"""Typed, versioned specs: validation, round trips, and checkpoints written by climdl 0.1.

``tests/fixtures`` holds a tiny emulator and a tiny cloud segmenter trained with climdl 0.1.0
(dictionary specs without a schema version) and what they gave then (see its README).
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from climdl.clouds.spec import SegmenterSpec
from climdl.data.spec import SCHEMA_VERSION, EmulatorSpec, Grid, migrate_layout
from climdl.errors import DataError
from climdl.tasks.checkpoint import load_emulator
from climdl.tasks.segmentation import load_segmenter
from tests.paths import FIXTURES

DATA = FIXTURES
EMULATOR = DATA / "emulator-0.1.ckpt"
SEGMENTER = DATA / "segmenter-0.1.ckpt"


def _raw(path: Path) -> dict[str, Any]:
    raw: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return raw


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(DATA / "expected-0.1.npz") as f:
        return {k: f[k] for k in f.files}


# ----------------------------------------------------------------------------- 0.1 checkpoints
def test_stored_checkpoints_are_the_0_1_layout() -> None:
    for path in (EMULATOR, SEGMENTER):
        meta = _raw(path)["climdl"]
        assert meta["version"] == "0.1.0" and "schema_version" not in meta["spec"]


def test_0_1_emulator_downscales_as_before(tmp_path: Path, expected: dict[str, np.ndarray]) -> None:
    from climdl.inference import downscale

    res = downscale(EMULATOR, [str(DATA / "predictors-0.1.nc")])
    got = res.dataset.load()
    np.testing.assert_allclose(got.tasmax.values, expected["tasmax"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(got.pr.values, expected["pr"], rtol=1e-5, atol=1e-6)
    task = load_emulator(EMULATOR)
    assert task.spec is not None and task.spec.tasmax_baseline is not None
    assert task.spec.stats.pr_gamma_shape is not None
    import xarray as xr

    with xr.open_dataset(DATA / "predictors-0.1.nc") as ds:
        arr = ds[list(task.spec.variables)].to_array("c").transpose("time", "c", ...).values
    assert task.baseline is not None
    with torch.no_grad():
        base = task.baseline(torch.from_numpy(arr.astype(np.float32))).numpy()
    np.testing.assert_allclose(base, expected["baseline"], rtol=0, atol=1e-4)


def test_0_1_segmenter_segments_as_before(expected: dict[str, np.ndarray]) -> None:
    task = load_segmenter(SEGMENTER)
    assert task.spec is not None and task.spec.classes[0] == "clear"
    proba = task.predict_proba(torch.from_numpy(expected["seg_input"])).numpy()
    np.testing.assert_allclose(proba, expected["seg_proba"], rtol=0, atol=1e-6)


def test_resaved_0_1_checkpoint_has_the_current_schema(tmp_path: Path) -> None:
    raw = _raw(EMULATOR)
    spec = EmulatorSpec.from_dict(raw["climdl"]["spec"])
    layout = spec.to_dict()
    assert layout["schema_version"] == SCHEMA_VERSION
    buf = io.BytesIO()
    torch.save(layout, buf)  # plain types and tensors: loadable with weights_only
    buf.seek(0)
    again = EmulatorSpec.from_dict(torch.load(buf, weights_only=True))
    assert again.variables == spec.variables and again.out_size == spec.out_size
    assert again.target_grid.same_as(spec.target_grid)
    assert again.tasmax_baseline is not None and spec.tasmax_baseline is not None
    assert torch.equal(again.tasmax_baseline.scale, spec.tasmax_baseline.scale)


@pytest.mark.parametrize("which", ["emulator", "segmenter"])
def test_future_schema_version_is_refused(which: str, tmp_path: Path) -> None:
    src = EMULATOR if which == "emulator" else SEGMENTER
    raw = _raw(src)
    raw["climdl"]["spec"]["schema_version"] = 99
    path = tmp_path / "future.ckpt"
    torch.save(raw, path)
    load = load_emulator if which == "emulator" else load_segmenter
    with pytest.raises(DataError, match=f"{which} spec has schema version 99, newer") as err:
        load(path)
    assert str(path) in str(err.value) and "upgrade climdl" in str(err.value)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- validation
@pytest.fixture(scope="module")
def emulator_spec() -> EmulatorSpec:
    return EmulatorSpec.from_dict(_raw(EMULATOR)["climdl"]["spec"])


def test_spec_is_frozen_and_typed(emulator_spec: EmulatorSpec) -> None:
    assert isinstance(emulator_spec.variables, tuple) and emulator_spec.in_size == (4, 4)
    assert isinstance(emulator_spec.target_grid, Grid)
    assert emulator_spec.target_grid.shape == emulator_spec.out_size == (32, 32)
    with pytest.raises(dataclasses.FrozenInstanceError):
        emulator_spec.targets = ("pr",)  # type: ignore[misc]


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda s: {"variables": ()}, "variables list is empty"),
        (lambda s: {"targets": ("tasmax", "tasmax")}, "distinct"),
        (lambda s: {"out_size": (32,)}, "two positive sizes"),
        (lambda s: {"variables": s.variables[:-1]}, "x_mean should have"),
        (lambda s: {"orography": torch.zeros(3, 3)}, "orography should have shape"),
        (lambda s: {"out_size": (16, 16)}, "should have shape|target grid"),
        (
            lambda s: {"stats": dataclasses.replace(s.stats, pr_gamma_scale=None)},
            "without the other",
        ),
    ],
)
def test_inconsistent_emulator_spec_is_refused(
    emulator_spec: EmulatorSpec, change: Any, match: str
) -> None:
    with pytest.raises(DataError, match=match):
        dataclasses.replace(emulator_spec, **change(emulator_spec))


def test_segmenter_spec_validation_and_round_trip() -> None:
    spec = SegmenterSpec.from_dict(_raw(SEGMENTER)["climdl"]["spec"])
    again = SegmenterSpec.from_dict(spec.to_dict())
    assert again.bands == spec.bands and torch.equal(again.mean, spec.mean)
    with pytest.raises(DataError, match="band mean should have"):
        dataclasses.replace(spec, mean=spec.mean[:-1])
    with pytest.raises(DataError, match="wavelengths"):
        dataclasses.replace(spec, wavelengths=spec.wavelengths[:-1])
    with pytest.raises(DataError, match="class counts"):
        dataclasses.replace(spec, class_counts=torch.ones(2))


def test_migration_steps_run_in_order_and_malformed_layouts_are_refused() -> None:
    seen: list[int] = []

    def step(v: int) -> Any:
        return lambda d: (seen.append(v), d)[1]

    out = migrate_layout({"a": 1}, (step(0), step(1)), 2, "test")
    assert seen == [0, 1] and out == {"a": 1, "schema_version": 2}
    with pytest.raises(DataError, match="not a dictionary"):
        migrate_layout([], (), 0, "test")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="emulator spec is malformed"):
        EmulatorSpec.from_dict({"variables": ["a"]})
