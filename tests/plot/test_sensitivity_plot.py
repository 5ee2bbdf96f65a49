"""climdl.plot.sensitivity and sensitivity_scene: the figures of both kinds of sensitivity files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from cartopy.mpl.geoaxes import GeoAxes

from climdl.plot import save_figure
from climdl.plot import sensitivity as s
from climdl.plot import sensitivity_scene as scene
from tests.sensitivity_files import (
    EMULATOR_ATTACKS,
    PREDICTORS,
    SEGMENTER_ATTACKS,
    emulator_dataset,
    segmenter_dataset,
    write,
)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    """An emulator file as written and reopened (grid mapping and strings through NetCDF)."""
    path = write(emulator_dataset(), tmp_path_factory.mktemp("sens") / "sensitivity.nc")
    with xr.open_dataset(path, decode_coords="all") as ds:
        return ds.load()


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    path = write(segmenter_dataset(), tmp_path_factory.mktemp("sens") / "sensitivity.nc")
    with xr.open_dataset(path, decode_coords="all") as ds:
        return ds.load()


def _fields(fig: object) -> list[object]:
    """The pcolormesh of every map panel of a figure."""
    return [
        c
        for ax in fig.axes
        for c in ax.collections
        if c.get_gid() == "field"  # type: ignore[attr-defined]
    ]


def test_attack_figure_has_a_panel_per_measure_and_a_box_per_attack(
    emulator: xr.Dataset, tmp_path: Path
) -> None:
    assert s.targets_of(emulator) == ["tasmax", "pr"]
    assert s.attacks_of(emulator) == ["random", "random_max", "fgsm", "pgd", "pgd_rms"]
    for target, n in (("tasmax", 3), ("pr", 4)):
        fig = s.attack_change_figure(emulator, target)
        assert len(fig.axes) == n
        for ax in fig.axes:
            labels = [t.get_text() for t in ax.get_xticklabels()]
            assert labels == [s.ATTACK_LABELS[a] for a in s.attacks_of(emulator)]
            # one dot per day and attack, drawn at the absolute values
            dots = [ln for ln in ax.lines if ln.get_marker() == "o"]
            assert len(dots) == len(EMULATOR_ATTACKS)
            assert all(len(ln.get_ydata()) == emulator.sizes["time"] for ln in dots)
            assert all(np.all(np.asarray(ln.get_ydata()) >= 0) for ln in dots)
        assert save_figure(fig, tmp_path / f"{target}.png").stat().st_size > 10_000
    # the wet fraction is drawn in percentage points
    pr_ax = s.attack_change_figure(emulator, "pr").axes[3]
    pgd = [ln for ln in pr_ax.lines if ln.get_marker() == "o"][3]
    expected = 100 * np.abs(emulator["pr_wet_fraction_change"].sel(attack="pgd").values)
    np.testing.assert_allclose(np.sort(pgd.get_ydata()), np.sort(expected))


def test_saliency_maps_one_panel_per_predictor_on_one_symmetric_scale(
    emulator: xr.Dataset,
) -> None:
    fig = s.saliency_figure(emulator, "tasmax")
    maps = [ax for ax in fig.axes if isinstance(ax, GeoAxes)]
    assert len(maps) == len(PREDICTORS)
    titles = [ax.get_title() for ax in maps]
    assert titles == [
        f"{p} (bound {s_})" for p, s_ in zip(PREDICTORS, ["0.5 K"] * 2 + ["5 %"] * 2, strict=True)
    ]
    norms = {(m.norm.vmin, m.norm.vmax) for m in _fields(fig)}
    assert len(norms) == 1  # panels compare
    lo, hi = norms.pop()
    assert lo == pytest.approx(-hi) and hi > 0
    assert all(m.get_cmap().name.startswith("RdBu") for m in _fields(fig))
    # t_500, t_850 / q_500, q_850: rows are families, columns levels
    assert maps[0].get_subplotspec().get_geometry()[:2] == (2, 2)


def test_bound_sensitivity_maps_sequential_one_scale(emulator: xr.Dataset) -> None:
    for target in s.targets_of(emulator):
        fig = s.bound_sensitivity_figure(emulator, target)
        meshes = _fields(fig)
        assert len(meshes) == len(PREDICTORS)
        assert len({(m.norm.vmin, m.norm.vmax) for m in meshes}) == 1
        assert meshes[0].norm.vmin >= 0
        assert all(m.get_cmap().name.startswith(s.MAGNITUDE_CMAP) for m in meshes)


def test_segmenter_figures(segmenter: xr.Dataset, tmp_path: Path) -> None:
    bars = scene.changed_fraction_figure(segmenter).axes[0]
    heights = [p.get_height() for p in bars.patches]
    expected = [
        100 * float(segmenter["changed_fraction"].sel(attack=a)) for a in s.attacks_of(segmenter)
    ]
    np.testing.assert_allclose(heights, expected)
    trans = scene.transitions_figure(segmenter)
    matrices = [ax for ax in trans.axes if ax.get_title()]
    assert len(matrices) == len(SEGMENTER_ATTACKS)
    # each cell is annotated with its pixel count
    pgd = matrices[s.attacks_of(segmenter).index("pgd")]
    counts = segmenter["transitions"].sel(attack="pgd").values
    assert sorted(int(t.get_text()) for t in pgd.texts) == sorted(counts.ravel().tolist())
    changed = scene.changed_map_figure(segmenter)
    (mesh,) = _fields(changed)
    assert isinstance(changed.axes[0], GeoAxes)  # placed with its UTM grid mapping
    assert np.nansum(np.asarray(mesh.get_array())) == segmenter["changed_pgd"].values.sum()
    for var in ("band_bound_sensitivity", "band_saliency"):
        fig = scene.band_maps_figure(segmenter, var)
        assert len(_fields(fig)) == segmenter.sizes["band"]
        save_figure(fig, tmp_path / f"{var}.png")


def test_scene_without_georeference_and_large_scenes(
    segmenter: xr.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scene with bare pixel indices is drawn in its own x/y; a scene larger than a figure
    shows is reduced in blocks, a block flagged when any of its pixels changed."""
    bare = segmenter.drop_vars(["crs", "x", "y"])
    for name in bare.data_vars:
        bare[name].attrs.pop("grid_mapping", None)
    assert len(scene.changed_map_figure(bare).axes) == 1
    assert len(scene.band_maps_figure(bare).axes) == 2 * bare.sizes["band"]  # maps and colour bars
    monkeypatch.setattr(s, "MAX_MAP_SIDE", 12)
    fig = scene.changed_map_figure(segmenter)
    (mesh,) = _fields(fig)
    flags = np.asarray(mesh.get_array()).reshape(12, 12)
    blocks = segmenter["changed_pgd"].values.reshape(12, 4, 12, 4).max(axis=(1, 3))
    np.testing.assert_array_equal(flags, blocks)


def test_shared_range_is_not_pulled_down_by_unused_predictors() -> None:
    """Panels of predictors a model ignores (all zero) must not saturate the one it uses."""
    rng = np.random.default_rng(0)
    used = rng.normal(0, 0.002, (16, 16))  # smaller than the range of an empty panel
    zeros = [np.zeros((16, 16))] * 14
    lo, hi = s.shared_limits([*zeros, used], "diverging")
    assert lo == -hi and hi == pytest.approx(np.percentile(np.abs(used), 98))
    lo, hi = s.shared_limits([*zeros, np.abs(used)], "sequential")
    assert lo == 0.0 and hi == pytest.approx(np.percentile(np.abs(used), 98))
    assert s.shared_limits([np.full((2, 2), np.nan)], "diverging") == (-1.0, 1.0)
