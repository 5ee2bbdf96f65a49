"""The embedded sample: layout, format, determinism and physics."""

from __future__ import annotations

import hashlib
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

from climdl.data.grids import coarse_grid, target_grid
from climdl.data.sample import write_sample
from climdl.data.synthetic import FINE_FACTOR, Run, SyntheticClimate
from climdl.data.variables import ML_BENCH_PREDICTORS
from tests.paths import SHARED

TEMPLATES = SHARED / "data" / "cordex-ml-bench-templates"

EXPECTED = (
    [
        "train/ESD_pseudo_reality/predictors/CNRM-CM5_1961-1980.nc",
        "train/ESD_pseudo_reality/predictors/Static_fields.nc",
        "train/ESD_pseudo_reality/target/pr_tasmax_CNRM-CM5_1961-1980.nc",
        "train/Emulator_hist_future/predictors/CNRM-CM5_1961-1980_2080-2099.nc",
        "train/Emulator_hist_future/predictors/Static_fields.nc",
        "train/Emulator_hist_future/target/pr_tasmax_CNRM-CM5_1961-1980_2080-2099.nc",
    ]
    + [
        f"test/{p}/predictors/{k}/{g}_{lab}.nc"
        for p, lab in [
            ("historical", "1981-2000"),
            ("mid_century", "2041-2060"),
            ("end_century", "2080-2099"),
        ]
        for k in ("perfect", "imperfect")
        for g in ("CNRM-CM5", "MPI-ESM-LR")
    ]
    + [
        f"test/{p}/target/pr_tasmax_{g}_{lab}.nc"
        for p, lab in [
            ("historical", "1981-2000"),
            ("mid_century", "2041-2060"),
            ("end_century", "2080-2099"),
        ]
        for g in ("CNRM-CM5", "MPI-ESM-LR")
    ]
)


def _digest(path: Path) -> str:
    """Hash of every variable's values and attributes (file bytes hold a creation timestamp)."""
    h = hashlib.sha256()
    with netCDF4.Dataset(path) as nc:
        for name in sorted(nc.variables):
            var = nc.variables[name]
            var.set_auto_mask(False)
            h.update(name.encode())
            h.update(np.ascontiguousarray(var[...]).tobytes())
            h.update(repr({a: var.getncattr(a) for a in var.ncattrs()}).encode())
    return h.hexdigest()


def test_layout_has_every_file(sample_root: Path) -> None:
    found = sorted(str(p.relative_to(sample_root)) for p in sample_root.rglob("*.nc"))
    assert found == sorted(EXPECTED)
    assert (sample_root / "README.txt").read_text().startswith("climdl embedded sample")


def test_predictor_files_follow_the_benchmark(sample_root: Path) -> None:
    path = sample_root / "test/historical/predictors/imperfect/CNRM-CM5_1981-2000.nc"
    with xr.open_dataset(path, use_cftime=True) as ds:
        assert list(ds.data_vars) == list(ML_BENCH_PREDICTORS)
        for name in ML_BENCH_PREDICTORS:
            assert ds[name].dims == ("time", "lat", "lon")
            assert ds[name].shape[1:] == (16, 16)
            assert ds[name].dtype == np.float32
            assert {"units", "standard_name", "long_name"} <= set(ds[name].attrs)
        assert ds.sizes["time"] == 365
        assert ds.attrs["Conventions"] == "CF-1.10"
        assert np.all(np.diff(ds.lat.values) == 2.0)


def test_target_files_match_the_templates(sample_root: Path) -> None:
    path = sample_root / "train/ESD_pseudo_reality/target/pr_tasmax_CNRM-CM5_1961-1980.nc"
    with netCDF4.Dataset(path) as nc:
        assert nc.variables["tasmax"].dimensions == ("time", "y", "x")
        assert nc.variables["tasmax"].dtype == np.float32
        assert nc.variables["tasmax"].units == "K"
        assert nc.variables["tasmax"].standard_name == "air_temperature"
        assert "time: maximum" in nc.variables["tasmax"].cell_methods
        assert nc.variables["tasmax"].grid_mapping == "Lambert_Conformal"
        assert nc.variables["Lambert_Conformal"].grid_mapping_name == "lambert_conformal_conic"
        assert nc.variables["time"].units == "days since 1949-12-01"
        assert nc.variables["time"].calendar == "standard"
        assert nc.variables["time"][0] % 1 == 0.5  # daily values stamped at noon, as the templates
        assert nc.variables["lat"].dimensions == ("y", "x")
        assert nc.variables["x"].units == "km"
    if TEMPLATES.is_dir():
        with xr.open_dataset(TEMPLATES / "tasmax_ALPS.nc") as tpl, xr.open_dataset(path) as ds:
            np.testing.assert_allclose(ds.lat.values, tpl.lat.values)
            np.testing.assert_allclose(ds.lon.values, tpl.lon.values)
            np.testing.assert_allclose(ds.x.values, tpl.x.values)
            for attr in ("standard_name", "long_name", "units", "cell_methods"):
                assert ds.tasmax.attrs[attr] == tpl.tasmax.attrs[attr]


def test_transfer_gcm_uses_another_calendar(sample_root: Path) -> None:
    path = sample_root / "test/historical/predictors/imperfect/MPI-ESM-LR_1981-2000.nc"
    with netCDF4.Dataset(path) as nc:
        assert nc.variables["time"].calendar == "360_day"
        assert len(nc.variables["time"]) == 360


def test_same_seed_same_values_other_seed_differs(tmp_path: Path, sample_root: Path) -> None:
    again = write_sample(tmp_path / "a", "ALPS", years=1, seed=0).root
    other = write_sample(tmp_path / "b", "ALPS", years=1, seed=1).root
    rel = "train/ESD_pseudo_reality/target/pr_tasmax_CNRM-CM5_1961-1980.nc"
    assert _digest(again / rel) == _digest(sample_root / rel)
    rel_p = "test/end_century/predictors/imperfect/MPI-ESM-LR_2080-2099.nc"
    assert _digest(again / rel_p) == _digest(sample_root / rel_p)
    assert _digest(other / rel) != _digest(sample_root / rel)


def test_overlapping_files_hold_identical_days(sample_root: Path) -> None:
    """One RCM run: ESD 1961 == hist+future 1961; end-century test 2080 == hist+future 2080."""
    with (
        xr.open_dataset(
            sample_root
            / "train/Emulator_hist_future/target/pr_tasmax_CNRM-CM5_1961-1980_2080-2099.nc",
            use_cftime=True,
        ) as ehf,
        xr.open_dataset(
            sample_root / "train/ESD_pseudo_reality/target/pr_tasmax_CNRM-CM5_1961-1980.nc",
            use_cftime=True,
        ) as esd,
        xr.open_dataset(
            sample_root / "test/end_century/target/pr_tasmax_CNRM-CM5_2080-2099.nc", use_cftime=True
        ) as end,
    ):
        np.testing.assert_array_equal(ehf.tasmax.sel(time=esd.time).values, esd.tasmax.values)
        np.testing.assert_array_equal(ehf.pr.sel(time=end.time).values, end.pr.values)


@pytest.fixture(scope="module")
def climate() -> SyntheticClimate:
    return SyntheticClimate("ALPS", seed=0)


RUN = Run("CNRM-CM5", "standard", stream=0)


def test_coarse_predictors_are_conservative_means_of_the_fine_state(
    climate: SyntheticClimate,
) -> None:
    _, fine = climate.fine_state(RUN, [1961])
    _, coarse = climate.coarse_predictors(RUN, [1961])
    grid = coarse_grid("ALPS")
    # area of each fine cell on the sphere: proportional to the difference of sin(lat) of its edges
    step = 2.0 / FINE_FACTOR
    edges = np.deg2rad(grid.lat_bnds.values[0, 0] + step * np.arange(16 * FINE_FACTOR + 1))
    area = np.diff(np.sin(edges))[:, None] * np.ones((1, 16 * FINE_FACTOR))
    for name in ("t_850", "q_700", "u_500", "z_500"):
        f = fine[name].astype(np.float64).reshape(-1, 16, FINE_FACTOR, 16, FINE_FACTOR)
        a = area.reshape(16, FINE_FACTOR, 16, FINE_FACTOR)
        expected = (f * a).sum(axis=(2, 4)) / a.sum(axis=(1, 3))
        np.testing.assert_allclose(coarse[name], expected, rtol=2e-5)


def test_tasmax_falls_with_altitude(climate: SyntheticClimate) -> None:
    _, surf = climate.surface(RUN, [1961])
    mean = surf["tasmax"].mean(axis=0)
    h = climate.orography
    slope = np.polyfit(h.ravel(), mean.ravel(), 1)[0]
    assert -0.0085 < slope < -0.004  # K per m: a lapse rate near 6.5 K/km


def test_windward_slopes_are_wetter(climate: SyntheticClimate) -> None:
    """Under westerlies, slopes rising eastward (windward) get more rain than lee slopes."""
    _, surf = climate.surface(RUN, [1961])
    pr = surf["pr"].mean(axis=0)
    _, dh_de = climate._terrain_gradient(
        climate._tlat, climate._tlon, climate.orography.astype(float)
    )
    h = climate.orography
    band = (h > 500) & (h < 2000)
    windward = pr[band & (dh_de > 10)].mean()
    leeward = pr[band & (dh_de < -10)].mean()
    assert windward > 1.3 * leeward


def test_precipitation_has_dry_days_and_a_heavy_tail(climate: SyntheticClimate) -> None:
    _, surf = climate.surface(RUN, [1961])
    pr = surf["pr"]
    assert pr.min() == 0.0
    wet = pr[pr > 0]
    assert 0.2 < wet.size / pr.size < 0.7
    assert np.percentile(wet, 99) > 4 * np.median(wet)


def test_future_is_warmer_and_seasons_cycle(climate: SyntheticClimate) -> None:
    dates, hist = climate.surface(RUN, [1981])
    _, fut = climate.surface(RUN, [2080])
    assert fut["tasmax"].mean() - hist["tasmax"].mean() > 2.0
    months = np.array([d.month for d in dates])
    summer = hist["tasmax"][np.isin(months, [6, 7, 8])].mean()
    winter = hist["tasmax"][np.isin(months, [12, 1, 2])].mean()
    assert summer - winter > 10.0


def test_weather_evolves_day_to_day(climate: SyntheticClimate) -> None:
    _, coarse = climate.coarse_predictors(RUN, [1961])
    t = coarse["t_850"].mean(axis=(1, 2))
    anom = t - np.convolve(t, np.ones(31) / 31, mode="same")
    lag1 = np.corrcoef(anom[15:-16], anom[16:-15])[0, 1]
    assert 0.3 < lag1 < 0.98  # persistent but not frozen


def test_imperfect_predictors_are_biased_but_close(sample_root: Path) -> None:
    base = sample_root / "test/historical/predictors"
    with (
        xr.open_dataset(base / "perfect/CNRM-CM5_1981-2000.nc") as p,
        xr.open_dataset(base / "imperfect/CNRM-CM5_1981-2000.nc") as i,
    ):
        bias = float((i.t_850 - p.t_850).mean())
        corr = float(xr.corr(i.t_850, p.t_850))
    assert bias != 0.0 and abs(bias) < 3.0
    assert corr > 0.95


def test_target_grid_is_the_real_benchmark_grid() -> None:
    grid = target_grid("ALPS")
    assert grid.lat.shape == (128, 128)
    assert float(grid.x[1] - grid.x[0]) == 12.5
    sa = target_grid("SA")
    assert sa.lat.shape == (128,) and float(sa.lat[0]) == pytest.approx(-34.7)
