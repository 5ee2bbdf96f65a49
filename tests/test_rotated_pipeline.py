"""End to end on a rotated-pole domain: the EUR12-ROT sample (a EURO-CORDEX EUR-11 window),
a tiny emulator trained on it through ``climdl train``, ``climdl downscale`` writing the output
on the rotated grid, ``climdl evaluate`` and ``climdl plot`` on that output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cartopy.crs as ccrs
import numpy as np
import pytest
import xarray as xr

from climdl.cli import main
from climdl.data.sample import SampleWriter
from climdl.parallel.testing import NO_LOGGERS, TINY_MODEL
from tests.argv import downscale_argv, train_argv
from tests.cfcheck import cf_errors
from tests.paths import CONFIGS

pytestmark = pytest.mark.usefixtures("offline")  # sockets and cartopy downloads refuse


@pytest.fixture(scope="module")
def rot_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The files of the EUR12-ROT sample the flow needs (one year of training, one of test),
    made by the sample generator's own datasets."""
    root = tmp_path_factory.mktemp("eur12-rot")
    writer = SampleWriter("EUR12-ROT", root, years=1, seed=0, overwrite=False)
    run = writer.runs["train"]
    made = {
        "predictors": writer.predictor_dataset(run, [1961], "perfect"),
        "target": writer.target_dataset(run, [1961]),
        "static": writer.static_dataset(),
        "test_predictors": writer.predictor_dataset(run, [1981], "perfect"),
        "test_target": writer.target_dataset(run, [1981]),
    }
    files = {}
    for name, ds in made.items():
        files[name] = root / f"{name}.nc"
        ds.to_netcdf(files[name])
    return files


@pytest.fixture(scope="module")
def rot_ckpt(rot_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny tasmax emulator (two training batches) on the rotated grid."""
    out = tmp_path_factory.mktemp("rot-run")
    short = "--trainer.max_epochs 1 --trainer.limit_train_batches 2 --trainer.limit_val_batches 1"
    rc = main(
        train_argv(
            CONFIGS / "emulator" / "sample.yaml",
            out,
            *short.split(),
            "--quiet",
            *NO_LOGGERS,
            *TINY_MODEL,
            *["--data.batch_size", "8", "--data.catalog", "null", "--data.test_period", "null"],
            *["--data.experiment", "ESD_pseudo_reality", "--data.targets", "[tasmax]"],
            *["--data.predictors", f"[{rot_files['predictors']}]"],
            *["--data.target", f"[{rot_files['target']}]"],
            *["--data.static", str(rot_files["static"])],
        )
    )
    assert rc == 0
    return next(out.rglob("last.ckpt"))


def test_downscale_evaluate_and_plot_on_the_rotated_grid(
    rot_files: dict[str, Path], rot_ckpt: Path, tmp_path: Path, figures: list[Any]
) -> None:
    out = tmp_path / "tasmax_rot.nc"
    assert main(downscale_argv(rot_ckpt, rot_files["test_predictors"], out, "-q")) == 0
    assert cf_errors(out) == []
    truth = xr.open_dataset(rot_files["test_target"], decode_coords="all")
    with xr.open_dataset(out, decode_coords="all") as ds:
        assert ds.tasmax.dims == ("time", "rlat", "rlon") and ds.sizes["time"] == 365
        np.testing.assert_array_equal(ds.rlat.values, truth.rlat.values)
        np.testing.assert_array_equal(ds.rlon.values, truth.rlon.values)
        assert ds.rlat.attrs["standard_name"] == "grid_latitude" and ds.rlat.attrs["axis"] == "Y"
        assert (
            ds.rlon.attrs["standard_name"] == "grid_longitude"
            and ds.rlon.attrs["units"] == "degrees"
        )
        assert ds.lat.dims == ("rlat", "rlon") and ds.lon.dims == ("rlat", "rlon")
        np.testing.assert_allclose(ds.lat.values, truth.lat.values, atol=1e-9)
        np.testing.assert_allclose(ds.lon.values, truth.lon.values, atol=1e-9)
        assert ds.tasmax.encoding["grid_mapping"] == "crs"
        gm = ds["crs"].attrs
        assert gm["grid_mapping_name"] == "rotated_latitude_longitude"
        assert (gm["grid_north_pole_latitude"], gm["grid_north_pole_longitude"]) == (39.25, -162.0)
        v = ds.tasmax.values
        assert np.isfinite(v).all() and 250 < v.mean() < 310

    # the same output published as a CORDEX-CMIP6 archive on its rotated grid (cc6 "Required")
    from climdl.data.cordex import load_run, shipped_tables_dir
    from climdl.inference.cordex_archive import plan, publish
    from tests.cfcheck import cc6_required
    from tests.inference.test_cordex import _run_yaml

    run = load_run(_run_yaml(tmp_path))
    with xr.open_dataset(out, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)) as ds:
        files = plan(run, tmp_path / "archive", ["tasmax"], ds.time)
    (published,) = publish(out, files, run)
    assert cc6_required(published, shipped_tables_dir()) == []
    with xr.open_dataset(published, decode_coords="all") as arch:
        assert (
            arch.tasmax.dims == ("time", "rlat", "rlon") and "rotated" in arch.attrs["grid"].lower()
        )
        centre = arch.vertices_lat.mean("vertices")  # the cell corners surround the centres
        assert float(np.abs(centre - arch.lat).max()) < 1e-3

    report = tmp_path / "eval"
    argv = ["evaluate", "--truth", str(rot_files["test_target"]), "--pred", str(out)]
    assert main([*argv, "--variables", "tasmax", "--out", str(report), "--no-report", "-q"]) == 0
    summary = json.loads((report / "summary.json").read_text())
    assert "tasmax" in json.dumps(summary) and "RALSD" in json.dumps(summary)
    with xr.open_dataset(report / "fields_tasmax.nc", decode_coords="all") as fields:
        maps = [v for v in fields.data_vars.values() if v.dims[-2:] == ("rlat", "rlon")]
        assert maps and all(m.encoding.get("grid_mapping") == "crs" for m in maps)

    fig_path = tmp_path / "tasmax.png"
    assert main(["plot", str(out), "--var", "tasmax", "--mean", "--out", str(fig_path), "-q"]) == 0
    assert fig_path.stat().st_size > 0
    (ax,) = [a for a in figures[-1].axes if hasattr(a, "projection")]
    assert isinstance(ax.projection, ccrs.RotatedPole)
    proj = ax.projection.proj4_params
    assert proj["o_lat_p"] == pytest.approx(39.25) and proj["lon_0"] == pytest.approx(18.0)
    # the map is the model's rectangle: the rotated cell edges, half a step beyond the centres
    rlon, rlat = truth.rlon.values, truth.rlat.values
    np.testing.assert_allclose(
        ax.get_extent(),
        [rlon[0] - 0.055, rlon[-1] + 0.055, rlat[0] - 0.055, rlat[-1] + 0.055],
        atol=1e-6,
    )
    truth.close()
