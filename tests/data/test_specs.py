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

from climdl.clouds.spec import MIGRATIONS as SEG_MIGRATIONS
from climdl.clouds.spec import SCHEMA_VERSION as SEG_SCHEMA_VERSION
from climdl.clouds.spec import SegmenterSpec
from climdl.data.spec import MIGRATIONS, SCHEMA_VERSION, EmulatorSpec, Grid, migrate_layout
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
        def run(d: dict[str, Any]) -> dict[str, Any]:
            seen.append(v)
            return d

        return run

    out = migrate_layout({"a": 1}, (step(0), step(1)), 2, "test")
    assert seen == [0, 1] and out == {"a": 1, "schema_version": 2}
    with pytest.raises(DataError, match="not a dictionary"):
        migrate_layout([], (), 0, "test")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="emulator spec is malformed"):
        EmulatorSpec.from_dict({"variables": ["a"]})


# ----------------------------------------------------------------------------- malformed layouts
def _layout(which: str) -> dict[str, Any]:
    raw = _raw(EMULATOR if which == "emulator" else SEGMENTER)["climdl"]["spec"]
    spec_cls = EmulatorSpec if which == "emulator" else SegmenterSpec
    layout: dict[str, Any] = spec_cls.from_dict(raw).to_dict()
    return layout


def _emu_junk() -> list[tuple[str, Any, str]]:
    def grid_dims(d: dict[str, Any]) -> None:
        d["coarse_grid"]["lat"]["dims"] = "lat"

    return [
        ("in_size", lambda d: d.update(in_size=["a", 4]), "two positive sizes"),
        ("in_size_float", lambda d: d.update(in_size=[4.7, 4]), "two positive sizes"),
        ("in_size_bool", lambda d: d.update(in_size=[True, 4]), "two positive sizes"),
        ("variables_str", lambda d: d.update(variables="abc"), "must be a list"),
        ("targets_str", lambda d: d.update(targets="pr"), "must be a list"),
        ("variables_int", lambda d: d.update(variables=[1] * 15), "must all be strings"),
        ("grid_dims_str", grid_dims, "must be a list"),
        ("units_empty", lambda d: d.update(units={}), "unit string for every"),
        ("units_none", lambda d: d["units"].update(pr=None), "unit string for every"),
        ("attrs_keys", lambda d: d.update(target_attrs={"tasmax": {}}), "target_attrs"),
        ("attrs_junk", lambda d: d["target_attrs"].update(pr=3), "target_attrs of pr"),
        (
            "baseline_str",
            lambda d: d.update(tasmax_baseline={"scale": "x", "offset": 3}),
            "tasmax baseline scale",
        ),
        (
            "baseline_shape",
            lambda d: d.update(tasmax_baseline={"scale": torch.ones(3), "offset": torch.ones(())}),
            "tasmax baseline scale should have shape",
        ),
        (
            "forcing_lengths",
            lambda d: d.update(forcing_table={"year": [2000.0, 2001.0], "co2": [1.0]}),
            "forcing table columns",
        ),
        (
            "forcing_junk",
            lambda d: d.update(forcing_table={"year": [2000.0], "co2": ["x"]}),
            "finite numbers",
        ),
        ("forcing_no_year", lambda d: d.update(forcing_table={"co2": [1.0]}), "'year'"),
        ("schema_bool", lambda d: d.update(schema_version=True), "invalid schema version"),
        ("unknown_key", lambda d: d.update(extra=1), "unknown entries \\['extra'\\]"),
        ("unknown_stat", lambda d: d["stats"].update(x_max=1), "unknown entries \\['x_max'\\]"),
        ("stats_list", lambda d: d.update(stats=[1]), "statistics is not a dictionary"),
        ("missing_key", lambda d: d.pop("calendar"), "lacks \\['calendar'\\]"),
    ]


def _seg_junk() -> list[tuple[str, Any, str]]:
    return [
        ("wavelengths_str", lambda d: d.update(wavelengths=["x"] * 7), "finite numbers"),
        ("classes_str", lambda d: d.update(classes="clouds"), "must be a list"),
        ("bands_str", lambda d: d.update(bands="bgrnsst"), "must be a list"),
        ("scenes_str", lambda d: d.update(train_scenes="scene_000"), "must be a list"),
        ("ignore_float", lambda d: d.update(ignore_index=2.5), "ignore_index"),
        ("ignore_bool", lambda d: d.update(ignore_index=True), "ignore_index"),
        ("counts_str", lambda d: d.update(class_counts="abcde"), "class counts"),
        ("schema_bool", lambda d: d.update(schema_version=True), "invalid schema version"),
        ("unknown_key", lambda d: d.update(extra=1), "unknown entries \\['extra'\\]"),
        ("unknown_stat", lambda d: d["stats"].update(var=1), "unknown entries \\['var'\\]"),
    ]


@pytest.mark.parametrize(
    "which, change, match",
    [pytest.param("emulator", c, m, id=f"emulator-{i}") for i, c, m in _emu_junk()]
    + [pytest.param("segmenter", c, m, id=f"segmenter-{i}") for i, c, m in _seg_junk()],
)
def test_malformed_layout_is_one_data_error(which: str, change: Any, match: str) -> None:
    layout = _layout(which)
    change(layout)
    spec_cls = EmulatorSpec if which == "emulator" else SegmenterSpec
    with pytest.raises(DataError, match=match) as err:
        spec_cls.from_dict(layout)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("which", ["emulator", "segmenter"])
def test_malformed_checkpoint_names_the_file(which: str, tmp_path: Path) -> None:
    raw = _raw(EMULATOR if which == "emulator" else SEGMENTER)
    raw["climdl"]["spec"]["wavelengths" if which == "segmenter" else "in_size"] = ["x", 4]
    path = tmp_path / "junk.ckpt"
    torch.save(raw, path)
    load = load_emulator if which == "emulator" else load_segmenter
    with pytest.raises(DataError) as err:
        load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_0_1_layouts_migrate_to_exactly_the_current_keys() -> None:
    emu = migrate_layout(_raw(EMULATOR)["climdl"]["spec"], MIGRATIONS, SCHEMA_VERSION, "emulator")
    assert set(emu) == set(_layout("emulator"))
    raw = _raw(SEGMENTER)["climdl"]["spec"]
    seg = migrate_layout(raw, SEG_MIGRATIONS, SEG_SCHEMA_VERSION, "segmenter")
    assert set(seg) == set(_layout("segmenter"))


def test_direct_construction_refuses_split_names(emulator_spec: EmulatorSpec) -> None:
    with pytest.raises(DataError, match="must be a list"):
        dataclasses.replace(emulator_spec, targets="pr")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="two positive sizes"):
        dataclasses.replace(emulator_spec, in_size=(4.0, 4.0))  # type: ignore[arg-type]
