"""The embedded sample: layout, format, determinism and physics."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

from climdl.data import synthetic
from climdl.data.catalog import get_entry
from climdl.data.grids import coarse_grid, target_grid
from climdl.data.sample import write_sample
from climdl.data.sample_grids import covering_coarse_grid, wide_target_grid
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


# ----------------------------------------------------------------- widened domains (size 256, 512)
WIDE_COARSE = {256: (18, 29), 512: (32, 67)}


@pytest.mark.parametrize("size", [256, 512])
def test_widened_grid_keeps_the_projection_and_covers_it_with_predictors(size: int) -> None:
    bench, wide = target_grid("ALPS"), wide_target_grid("ALPS", size)
    assert wide.lat.shape == (size, size)
    assert np.all(np.diff(wide.x.values) == 12.5) and np.all(np.diff(wide.y.values) == 12.5)
    assert wide.Lambert_Conformal.identical(bench.Lambert_Conformal)
    for name in ("x", "y", "lat", "lon"):
        assert wide[name].attrs == bench[name].attrs
    off = (size - 128) // 2  # same centre: the benchmark grid is the central block
    np.testing.assert_allclose(wide.x.values[off : off + 128], bench.x.values)
    np.testing.assert_allclose(wide.lat.values[off : off + 128, off : off + 128], bench.lat.values)
    np.testing.assert_allclose(wide.lon.values[off : off + 128, off : off + 128], bench.lon.values)
    coarse = covering_coarse_grid(wide)
    assert (coarse.sizes["lat"], coarse.sizes["lon"]) == WIDE_COARSE[size]
    assert np.all(np.diff(coarse.lat.values) == 2.0) and np.all(np.diff(coarse.lon.values) == 2.0)
    # every target point lies at least one coarse cell inside the predictor box
    assert float(coarse.lat_bnds.min()) + 2 <= float(wide.lat.min())
    assert float(coarse.lat_bnds.max()) - 2 >= float(wide.lat.max())
    assert float(coarse.lon_bnds.min()) + 2 <= float(wide.lon.min())
    assert float(coarse.lon_bnds.max()) - 2 >= float(wide.lon.max())
    # the Doury UNet trims the input to a power of two S; the output is S x 2**k
    s = 2 ** int(np.log2(min(WIDE_COARSE[size])))
    assert size % s == 0 and (size // s) & (size // s - 1) == 0


def test_size_128_is_the_benchmark_sample() -> None:
    assert wide_target_grid("ALPS", 128).identical(target_grid("ALPS"))
    climate = SyntheticClimate("ALPS", size=128)
    assert climate.name == "ALPS" and climate.coarse.identical(coarse_grid("ALPS"))
    assert SyntheticClimate("alps512").name == "ALPS512"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "300"], "--size 300 is not available; choose one of 128, 256, 512."),
        (["--domain", "SA", "--size", "256"], "--size 256 is available for ALPS only"),
    ],
)
def test_unsupported_size_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    from climdl.cli import main

    assert main(["sample", str(tmp_path), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def _first_days(n: int) -> Callable[[str, list[int]], np.ndarray]:
    """``noon_dates`` cut to the first ``n`` days of each year: the whole pipeline, fast."""
    full = synthetic.noon_dates

    def dates(calendar: str, years: list[int]) -> np.ndarray:
        return np.concatenate([full(calendar, [y])[:n] for y in years])

    return dates


@pytest.fixture(scope="module")
def wide_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CLIMDL_CACHE whose ``sample-alps-256`` entry the catalog generated (10 days a year)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synthetic, "noon_dates", _first_days(10))
        mp.setenv("CLIMDL_CACHE", str(cache))
        get_entry("sample-alps-256").root_path()  # generated on first use
    return cache


def test_widened_sample_is_generated_and_opened_by_the_catalog(
    wide_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIMDL_CACHE", str(wide_cache))
    entry = get_entry("sample-alps-256")
    root = entry.root_path(ensure=False)
    assert root == wide_cache / "sample/years1-seed0/ALPS256/ALPS256_domain"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*.nc")) == sorted(
        [
            "train/ESD_pseudo_reality/predictors/CNRM-CM5_1961-1980.nc",
            "train/ESD_pseudo_reality/predictors/Static_fields.nc",
            "train/ESD_pseudo_reality/target/pr_tasmax_CNRM-CM5_1961-1980.nc",
            "test/historical/predictors/perfect/CNRM-CM5_1981-2000.nc",
            "test/historical/predictors/imperfect/CNRM-CM5_1981-2000.nc",
            "test/historical/target/pr_tasmax_CNRM-CM5_1981-2000.nc",
        ]
    )
    y = entry.open("target", experiment="ESD_pseudo_reality").load()
    x = entry.open("predictors", period="historical", kind="imperfect")
    s = entry.open("static", experiment="ESD_pseudo_reality")
    assert y.tasmax.shape == (10, 256, 256) and y.attrs["domain"] == "ALPS256"
    assert (x.sizes["lat"], x.sizes["lon"]) == WIDE_COARSE[256]
    assert s.orog.shape == (256, 256) and float(s.orog.max()) > 2000  # the Alps are there
    assert float(y.tasmax.min()) > 230 and float(y.tasmax.max()) < 320
    assert float(y.pr.min()) == 0.0 and bool(np.isfinite(y.pr.values).all())
    assert "ALPS256" in (root / "README.txt").read_text()


def test_prepare_upscales_the_widened_targets_onto_their_predictor_grid(
    wide_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from climdl.data.prepare import prepare

    monkeypatch.setenv("CLIMDL_CACHE", str(wide_cache))
    entry = get_entry("sample-alps-256")
    grid = entry.files("predictors", experiment="ESD_pseudo_reality")[0]
    res = prepare(
        entry.files("target", experiment="ESD_pseudo_reality"),
        tmp_path / "coarse.nc",
        coarse_grid=str(grid),
        variables=["tasmax"],
        device="cpu",
        min_coverage=0.0,  # the lat/lon box holds the fan-shaped Lambert domain, and more
    )
    assert res.shape == WIDE_COARSE[256]
    inside = res.coverage == 1.0
    assert inside.sum() > 0.4 * inside.size
    assert not inside[0].any() and not inside[-1].any()  # the margin lies outside the domain
    with xr.open_dataset(res.path) as ds:
        assert bool(np.isfinite(ds.tasmax.values[:, inside]).all())


def test_widened_surface_in_blocks_of_days_equals_one_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    climate = SyntheticClimate("ALPS", size=256)
    monkeypatch.setattr(synthetic, "noon_dates", _first_days(7))
    _, whole = climate.surface(RUN, [1961])  # 7 days: one block
    monkeypatch.setattr(synthetic, "_BLOCK_VALUES", 3 * 256 * 256)  # blocks of 3 days
    _, blocked = climate.surface(RUN, [1961])
    assert whole["tasmax"].shape == whole["pr"].shape == (7, 256, 256)
    # the same days to float32 rounding (matrix products of other shapes round differently)
    np.testing.assert_allclose(blocked["tasmax"], whole["tasmax"], atol=1e-3)
    same = np.isclose(blocked["pr"], whole["pr"], rtol=1e-4, atol=1e-4)
    assert same.mean() > 0.9999  # a value at the wet-day threshold may flip


@pytest.mark.slow
def test_widened_year_trains_a_data_module_on_row_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole year at 256 x 256 through the CLI (~40 s on 2 cores), served in row blocks."""
    from climdl.cli import main
    from climdl.data.emulator_data import EmulatorDataModule

    out = tmp_path / "sample" / "years1-seed0"
    assert main(["sample", str(out), "--domain", "ALPS", "--size", "256", "--quiet"]) == 0
    monkeypatch.setenv("CLIMDL_CACHE", str(tmp_path))
    dm = EmulatorDataModule(catalog="sample-alps-256", batch_size=4)
    dm.setup("fit")
    assert dm.spec().out_size == (256, 256) and dm.spec().in_size == WIDE_COARSE[256]
    assert dm.train_idx.size + dm.val_idx.size == 365
    dm.target_rows = (128, 256)
    batch = next(iter(dm.val_dataloader()))
    assert tuple(batch["y"].shape) == (4, 1, 128, 256)
    full = dm.training_sample(4)[1]
    assert full.shape == (4, 1, 256, 256) and bool(np.isfinite(full).all())
