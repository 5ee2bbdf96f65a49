"""climdl on real model output it did not write: the Met Office files of ``iris-sample-data``.

The files are read where the package installed them, as they are (never rewritten):

- ``A1B_north_america.nc`` / ``E1_north_america.nc``: HadCM3 1.5 m air temperature, yearly
  means stamped mid-year, 360_day calendar, two scenarios on one grid;
- ``rotated_pole.nc``: UM sea-level pressure on a rotated-pole grid with no 2-D lat/lon;
- ``ostia_monthly.nc``: OSTIA sea surface temperature (``surface_temperature``, not a climdl
  variable), land masked with ``_FillValue``;
- the ``cdo -f nc topo`` orography when CDO is installed.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import subprocess
from pathlib import Path

import cftime
import numpy as np
import pytest
import xarray as xr

from climdl.cli import main
from climdl.data import _coords
from climdl.data.reader import open_dataset
from climdl.errors import DataError

iris_sample_data = pytest.importorskip("iris_sample_data")  # the dev extra installs it
SAMPLE = Path(iris_sample_data.path)
A1B = SAMPLE / "A1B_north_america.nc"
E1 = SAMPLE / "E1_north_america.nc"
ROTATED = SAMPLE / "rotated_pole.nc"
OSTIA = SAMPLE / "ostia_monthly.nc"
PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("offline")  # the sample files are local, nothing is fetched


def _raw(path: Path) -> xr.Dataset:
    return xr.open_dataset(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))


def _cli(argv: list[str]) -> tuple[int, str]:
    """Run ``climdl ARGV`` in-process; its exit code and stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    return rc, out.getvalue()


def _plot(path: Path, out: Path, *extra: str) -> None:
    rc, stdout = _cli(["plot", str(path), "--out", str(out), *extra])
    assert rc == 0
    assert stdout.strip() == str(out)
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 10_000


# --------------------------------------------------------------------- HadCM3, 360_day calendar
@pytest.mark.parametrize("path", [A1B, E1], ids=["A1B", "E1"])
def test_hadcm3_air_temperature_read_as_tas(path: Path) -> None:
    ds = open_dataset(path)
    assert list(ds.data_vars) == ["tas"]  # air_temperature at height 1.5 m, time: mean
    tas = ds["tas"]
    assert tas.dims == ("time", "lat", "lon")
    assert tas.attrs["units"] == "K" and tas.attrs["standard_name"] == "air_temperature"
    assert tas.attrs["climdl_source_name"] == "air_temperature"
    assert tas.dtype == np.float32 and tas.chunks is not None  # lazy, like any input
    # the 360_day calendar is kept as cftime dates: 240 yearly means 1860..2099 stamped 1 June
    time = ds["time"].values
    assert all(isinstance(t, cftime.Datetime360Day) for t in time)
    assert ds["time"].encoding["calendar"] == "360_day"
    assert (time[0].year, time[-1].year, time.size) == (1860, 2099, 240)
    assert time[0] == cftime.Datetime360Day(1860, 6, 1)
    # the grid: 1-D lat ascending, lon in -180..180 (the file stores -135..-45)
    lat, lon = ds["lat"].values, ds["lon"].values
    assert lat.size == 37 and np.all(np.diff(lat) > 0) and lat[0] == 15.0 and lat[-1] == 60.0
    assert lon.size == 49 and np.all(np.diff(lon) > 0) and lon[0] >= -180 and lon[-1] <= 180
    assert (lon[0], lon[-1]) == (-135.0, -45.0)
    # the grid mapping stays, without the scalar coordinates (height, forecast_reference_time)
    assert tas.attrs["grid_mapping"] == "latitude_longitude"
    assert ds["latitude_longitude"].attrs["grid_mapping_name"] == "latitude_longitude"
    assert "height" not in ds.coords and "forecast_reference_time" not in ds.coords
    # the values are the file's, in K, and plausible for North America
    raw = _raw(path)["air_temperature"]
    values = tas.values
    np.testing.assert_array_equal(values, raw.values)
    assert np.isfinite(values).all()
    assert values.min() > 250.0 and values.max() < 310.0
    south, north = values[:, 0].mean(), values[:, -1].mean()
    assert south - north > 15.0  # the tropics are warmer than 60 N


def test_hadcm3_plot_writes_a_map(tmp_path: Path) -> None:
    _plot(A1B, tmp_path / "a1b.png", "--time", "2000-06-01")
    _plot(A1B, tmp_path / "a1b_mean.png", "--mean", "--kind", "temperature")


def test_hadcm3_plot_without_time_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _ = _cli(["plot", str(A1B), "--out", str(tmp_path / "x.png")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "240 time steps" in err and "--time" in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_evaluate_two_scenarios_as_truth_and_prediction(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "eval"
    rc, stdout = _cli(["evaluate", "--truth", str(A1B), "--pred", str(E1), "--out", str(out), "-q"])
    assert rc == 0
    assert stdout.strip() == str(out / "report.html")
    for name in ("summary.json", "summary.csv", "report.html", "fields_tas.nc"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "summary.json").read_text())
    meta, tas = doc["meta"], doc["summary"]["tas"]
    assert meta["variables"] == ["tas"] and meta["models"] == ["emulator"]
    assert meta["calendar"] == "360_day" and meta["time_step"] == "yearly"
    assert meta["n_days"] == 240 and meta["period"] == ["1860-06-01", "2099-06-01"]
    assert meta["grid"] == {"lat": 37, "lon": 49}
    # yearly means stamped in June are not JJA values: no per-season rows, and it is said
    assert meta["seasons"] == [] and meta["skipped_seasons"] == ["DJF", "MAM", "JJA", "SON"]
    assert not any("(" in k for k in tas) and not any("season" in k for k in tas)
    assert meta["skipped_indices"] == {"tas": ["lag-1 autocorrelation"]}
    assert "per-season rows" in caplog.text
    expected = {
        "rmse",
        "bias",
        "bias_abs",
        "corr_time",
        "corr_space",
        "std_ratio",
        "wasserstein",
        "ralsd",
        "bias_p01",
        "bias_p99",
        "bias_iav",
        "ratio_iav",
    }
    assert expected <= set(tas)
    values = {k: row["values"]["emulator"] for k, row in tas.items()}
    assert all(math.isfinite(v) for v in values.values()), values
    assert all(row["units"] == "K" for k, row in tas.items() if k in {"rmse", "bias"})
    # the numbers agree with a direct computation on the raw files
    diff = _raw(E1)["air_temperature"].values - _raw(A1B)["air_temperature"].values
    assert values["rmse"] == pytest.approx(np.sqrt(np.mean(diff.astype("f8") ** 2)), rel=1e-4)
    assert values["bias"] == pytest.approx(diff.astype("f8").mean(), abs=1e-4)
    assert values["bias"] < 0  # the mitigation scenario E1 ends cooler than A1B
    # the scenarios are identical until they part (2000s): strongly correlated, RMSE ~1 K
    assert values["corr_space"] > 0.99 and 0.5 < values["rmse"] < 2.0
    assert "seasons left out" in (out / "report.md").read_text()


# --------------------------------------------------------------------- rotated pole
def test_rotated_pole_latlon_computed_from_the_grid_mapping() -> None:
    """The file has grid_latitude/grid_longitude and the mapping, no 2-D lat/lon: the
    reader's grid normalisation computes them, and they agree with cartopy."""
    import cartopy.crs as ccrs

    raw = _raw(ROTATED)
    assert "lat" not in raw.variables and "latitude" not in raw.variables
    ds = _coords.normalise_horizontal(raw)
    assert ds["lat"].dims == ds["lon"].dims == ("grid_latitude", "grid_longitude")
    assert ds["lat"].attrs["units"] == "degrees_north"
    gm = ds["rotated_latitude_longitude"].attrs
    assert gm["grid_mapping_name"] == "rotated_latitude_longitude"
    assert ds["air_pressure_at_sea_level"].attrs["grid_mapping"] == "rotated_latitude_longitude"
    rp = ccrs.RotatedPole(
        pole_longitude=gm["grid_north_pole_longitude"],
        pole_latitude=gm["grid_north_pole_latitude"],
        central_rotated_longitude=gm["north_pole_grid_longitude"],
    )
    x, y = np.meshgrid(raw["grid_longitude"].values, raw["grid_latitude"].values)
    ref = ccrs.PlateCarree().transform_points(rp, x.astype("f8"), y.astype("f8"))
    np.testing.assert_allclose(ds["lat"].values, ref[..., 1], atol=1e-6)
    np.testing.assert_allclose(ds["lon"].values, ref[..., 0], atol=1e-6)
    lon = ds["lon"].values
    assert lon.min() >= -180 and lon.max() <= 180
    # the domain is the North Atlantic and Europe
    assert 10 < ds["lat"].values.min() < 30 and 70 < ds["lat"].values.max() < 90
    # a bbox over the British Isles is now possible on this grid (it needs lat/lon)
    cut = _coords.cut_bbox(ds, (-10.0, 2.0, 50.0, 59.0), where="rotated_pole.nc")
    assert 0 < cut.sizes["grid_latitude"] < ds.sizes["grid_latitude"]
    assert 0 < cut.sizes["grid_longitude"] < ds.sizes["grid_longitude"]


def test_rotated_pole_reader_names_the_unknown_variable() -> None:
    """Sea-level pressure is no climdl variable: one sentence, with what climdl reads."""
    with pytest.raises(DataError) as err:
        open_dataset(ROTATED)
    message = str(err.value)
    assert "found: air_pressure_at_sea_level)" in message  # not the grid mapping
    assert "tasmax" in message and "standard_name" in message and "\n" not in message


def test_rotated_pole_plot(tmp_path: Path) -> None:
    _plot(ROTATED, tmp_path / "rotated.png")


# --------------------------------------------------------------------- OSTIA SST
def test_ostia_sst_is_a_clear_error_in_the_reader_and_evaluate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(DataError, match=r"found: surface_temperature\);"):
        open_dataset(OSTIA)  # the bounds and the grid mapping are not listed as variables
    rc, _ = _cli(
        ["evaluate", "--truth", str(OSTIA), "--pred", str(OSTIA), "--out", str(tmp_path / "e")]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "surface_temperature" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_ostia_sst_plot_masks_land(tmp_path: Path) -> None:
    _plot(OSTIA, tmp_path / "ostia.png", "--time", "-1")
    sst = _raw(OSTIA)["surface_temperature"]
    assert np.isnan(sst.values).any()  # land: the _FillValue is masked, not drawn as 1e20
    assert float(sst.min()) > 270.0 and float(sst.max()) < 310.0


# --------------------------------------------------------------------- CDO orography
@pytest.mark.skipif(shutil.which("cdo") is None, reason="the cdo binary is not installed")
def test_cdo_topo_orography(tmp_path: Path) -> None:
    path = tmp_path / "topo.nc"
    subprocess.run(["cdo", "-s", "-f", "nc", "topo", str(path)], check=True, timeout=60)
    ds = open_dataset(path)
    assert "orog" in ds.data_vars
    orog = ds["orog"].squeeze(drop=True)
    assert orog.attrs["units"] == "m" and orog.dims == ("lat", "lon")
    assert np.all(np.diff(ds["lat"].values) > 0)
    lon = ds["lon"].values
    assert lon.min() >= -180 and lon.max() <= 180 and np.all(np.diff(lon) > 0)
    assert -11_000 < float(orog.min()) < -5_000 and 5_000 < float(orog.max()) < 9_000
    _plot(path, tmp_path / "topo.png", *(["--time", "0"] if "time" in ds.dims else []))
