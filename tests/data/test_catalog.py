"""Data catalog: entries, layout resolution, lazy opening, errors."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from climdl.data.catalog import CatalogEntry, expand, get_entry, load_catalog
from climdl.errors import ConfigError, DataError


def test_builtin_entries_are_listed() -> None:
    cat = load_catalog()
    assert {"sample-alps", "sample-sa", "mlbench-alps", "mlbench-sa", "mlbench-nz"} <= set(cat)
    assert cat["mlbench-alps"].gcm_transfer == "MPI-ESM-LR"
    assert cat["mlbench-alps"].test_periods["end_century"] == "2080-2099"


def test_sample_entry_opens_lazily(use_sample_cache: Path) -> None:
    entry = get_entry("sample-alps")
    target = entry.open("target", experiment="ESD_pseudo_reality")
    assert set(target.data_vars) == {"pr", "tasmax"}
    assert isinstance(target.tasmax.data, da.Array)  # nothing read yet
    assert target.tasmax.attrs["units"] == "K" and target.pr.attrs["units"] == "mm day-1"
    pred = entry.open("predictors", period="historical", kind="imperfect", gcm="MPI-ESM-LR")
    assert pred.sizes == {"time": 360, "lat": 16, "lon": 16}
    assert pred.time.dt.calendar == "360_day"
    assert isinstance(pred.t_850.data, da.Array)
    ehf = entry.open("predictors", experiment="Emulator_hist_future", variables=["t_850", "q_700"])
    assert list(ehf.data_vars) == ["t_850", "q_700"]
    years = set(ehf.time.dt.year.values.tolist())
    assert years == {1961, 2080}
    static = entry.open("static", experiment="ESD_pseudo_reality")
    assert float(static.orog.max()) > 2000


def test_sample_entry_generates_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIMDL_CACHE", str(tmp_path))
    entry = CatalogEntry(
        name="s",
        layout="mlbench",
        domain="SA",
        root="{cache}/x",
        gcm_train="ACCESS-CM2",
        experiments={"ESD_pseudo_reality": ["1961-1980"]},
        generate={"years": 1, "seed": 3},
    )
    ds = entry.open("static", experiment="ESD_pseudo_reality")
    assert (tmp_path / "x" / "SA" / "SA_domain" / "train").is_dir()
    assert ds.orog.dims == ("lat", "lon")


def test_real_benchmark_entry_explains_missing_data(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CLIMDL_MLBENCH_ROOT", raising=False)
    with pytest.raises(ConfigError, match="CLIMDL_MLBENCH_ROOT"):
        get_entry("mlbench-alps").open("target", experiment="ESD_pseudo_reality")
    monkeypatch.setenv("CLIMDL_MLBENCH_ROOT", str(tmp_path))
    with pytest.raises(DataError, match="Zenodo"):
        get_entry("mlbench-alps").open("target", experiment="ESD_pseudo_reality")


def test_benchmark_tree_with_hyphenated_experiment(
    tmp_path: Path, sample_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The benchmark's README spells ESD_pseudo-reality; both spellings and root levels work."""
    root = tmp_path / "ALPS_domain"
    src = sample_root / "train" / "ESD_pseudo_reality"
    (root / "train").mkdir(parents=True)
    (root / "train" / "ESD_pseudo-reality").symlink_to(src, target_is_directory=True)
    monkeypatch.setenv("CLIMDL_MLBENCH_ROOT", str(tmp_path))
    ds = get_entry("mlbench-alps").open("target", experiment="ESD_pseudo_reality")
    assert ds.sizes["time"] == 365


def test_own_dataset_with_variable_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = np.arange(4.0)
    for year in (2000, 2001):
        ds = xr.Dataset(
            {"TMAX_2M": (("time", "lat", "lon"), np.full((4, 3, 3), 20.0), {"units": "degC"})},
            coords={
                "time": (
                    "time",
                    t + 365 * (year - 2000),
                    {"units": "days since 2000-01-01", "calendar": "noleap"},
                ),
                "lat": ("lat", [50.0, 49.0, 48.0], {"units": "degrees_north"}),
                "lon": ("lon", [1.0, 2.0, 3.0], {"units": "degrees_east"}),
            },
        )
        (tmp_path / "rcm").mkdir(exist_ok=True)
        ds.to_netcdf(tmp_path / "rcm" / f"tx_{year}.nc")
    cat_file = tmp_path / "mine.yaml"
    cat_file.write_text(f"""
my-rcm:
  description: test
  layout: files
  root: "{tmp_path}"
  paths: {{target: "rcm/tx_*.nc"}}
  variables: {{tasmax: TMAX_2M}}
""")
    monkeypatch.setenv("CLIMDL_CATALOG", str(cat_file))
    out = get_entry("my-rcm").open("target")
    assert out.sizes["time"] == 8
    assert out.tasmax.attrs["units"] == "K"
    assert float(out.tasmax.max()) == pytest.approx(293.15)
    assert list(out.lat.values) == [48.0, 49.0, 50.0]  # ascending
    # bbox: the regional fields cut to a sub-domain (lon 1.5..3, lat 48.5..50)
    text = cat_file.read_text().replace(
        "  layout: files", "  layout: files\n  bbox: [1.5, 3, 48.5, 50]"
    )
    cat_file.write_text(text)
    cut = get_entry("my-rcm").open("target")
    assert list(cut.lat.values) == [49.0, 50.0] and list(cut.lon.values) == [2.0, 3.0]
    cat_file.write_text(text.replace("[1.5, 3, 48.5, 50]", "[1.5, 3, 50, 48.5]"))
    with pytest.raises(ConfigError, match=r"my-rcm.*lat_min < lat_max"):
        get_entry("my-rcm")
    assert out.time.dt.calendar == "noleap"


def test_bad_catalog_files_give_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("x:\n  layout: files\n  colour: blue\n")
    with pytest.raises(ConfigError, match="unknown keys colour"):
        load_catalog([bad])
    bad.write_text("x: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_catalog([bad])
    # a safe loader: no object construction from tags
    bad.write_text("x: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError):
        load_catalog([bad])
    with pytest.raises(ConfigError, match="known entries"):
        get_entry("no-such-entry")


def test_path_expansion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIMDL_CACHE", "/c")
    monkeypatch.setenv("FOO", "/f")
    assert expand("{cache}/s") == "/c/s"
    assert expand("${FOO}/x") == "/f/x"
    assert expand("${NOPE_NOT_SET:-/d}/x") == "/d/x"


def test_packaged_catalog_is_found_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.resources

    from climdl.data.catalog import catalog_paths

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLIMDL_CATALOG", raising=False)
    packaged = Path(str(importlib.resources.files("climdl.data_catalog")))
    assert (packaged / "sample.yaml") in catalog_paths()
    assert "sample-alps" in load_catalog()
