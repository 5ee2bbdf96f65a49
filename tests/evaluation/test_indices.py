"""Indices of one simulation: hand-made series, units of thresholds, seasons, NumPy vs Dask."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

from climdl.errors import ConfigError, DataError
from climdl.evaluation import _time, indices
from climdl.evaluation.thresholds import to_data_units


def _series(
    values: np.ndarray,
    *,
    start: str = "2001-01-01",
    calendar: str = "standard",
    units: str = "mm day-1",
    name: str = "pr",
) -> xr.DataArray:
    """A (time, y, x) DataArray; 1-D input becomes a 1 x 1 grid."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 1:
        values = values[:, None, None]
    time = xr.date_range(
        start, periods=values.shape[0], freq="D", calendar=calendar, use_cftime=True
    )
    return xr.DataArray(
        values, dims=("time", "y", "x"), coords={"time": time}, name=name, attrs={"units": units}
    )


def _climate(
    years: int = 3, calendar: str = "noleap", seed: int = 0
) -> tuple[xr.DataArray, xr.DataArray]:
    """Synthetic tasmax (K) and pr (mm/day) on an 8 x 6 grid with a seasonal cycle and NaNs."""
    rng = np.random.default_rng(seed)
    n = 365 * years if calendar == "noleap" else 360 * years
    day = np.arange(n)
    cycle = 10 * np.sin(2 * np.pi * (day - 100) / (n / years))
    tas = 288 + cycle[:, None, None] + rng.normal(0, 3, (n, 8, 6))
    pr = np.maximum(rng.gamma(0.6, 5.0, (n, 8, 6)) - 1.5, 0.0)
    tas[:, 0, 0] = np.nan  # a masked point
    pr[5:9, 2, 3] = np.nan  # a few missing days
    return (
        _series(tas, calendar=calendar, units="K", name="tasmax"),
        _series(pr, calendar=calendar, units="mm day-1", name="pr"),
    )


def _f(da: xr.DataArray) -> float:
    """The single value of a 1 x 1 field."""
    return float(da.squeeze())


# ----------------------------------------------------------------------------- spells
def test_cdd_and_cwd_on_hand_made_series() -> None:
    # 365 days of 2001: wet (>= 1 mm) pattern with known longest runs
    pr = np.zeros(365)
    pr[10:14] = 5.0  # wet run of 4
    pr[100:107] = 1.0  # wet run of 7 (exactly the threshold counts as wet)
    pr[200:202] = 0.99  # below the threshold: dry
    pr[300] = 3.0
    da = _series(pr)
    # dry runs: 0-9 (10), 14-99 (86), 107-299 (193), 301-364 (64)
    assert _f(indices.cdd(da)) == 193
    assert _f(indices.cwd(da)) == 7


def test_spells_are_cut_at_year_ends_and_averaged_over_years() -> None:
    pr = np.zeros(730)
    pr[355:375] = 2.0  # a 20-day wet spell across the new year: 10 days in each year
    pr[400:406] = 2.0  # 6 days in year 2
    da = _series(pr, calendar="noleap")
    assert _f(indices.cwd(da)) == pytest.approx((10 + 10) / 2)
    # dry: year 1 longest = 355 (days 0-354); year 2: days 41-364 after the spell at 35-40
    assert _f(indices.cdd(da)) == pytest.approx((355 + 324) / 2)


def test_missing_day_cuts_a_spell() -> None:
    pr = np.full(365, 3.0)
    pr[100] = np.nan
    da = _series(pr)
    assert _f(indices.cwd(da)) == 264  # days 101-364


def test_spells_in_a_season_only_count_season_days() -> None:
    pr = np.full(365 * 2, 5.0, dtype=np.float64)  # wet every day
    da = _series(pr, calendar="noleap")
    # JJA has 92 days: the longest wet spell inside it is the whole summer
    assert _f(indices.cwd(da, season="JJA")) == 92
    # DJF: the only complete winter is Dec 2001 - Feb 2002 (90 days)
    assert _f(indices.cwd(da, season="DJF")) == 90


# ----------------------------------------------------------------------------- thresholds
def test_summer_day_threshold_is_converted_from_degc_and_degf() -> None:
    tas = np.full(365, 290.0)
    tas[:40] = 300.0  # 40 days at 26.85 degC
    tas[40:50] = 298.15  # exactly 25 degC: not above
    da = _series(tas, units="K", name="tasmax")
    assert _f(indices.summer_days(da)) == 40
    assert _f(indices.summer_days(da, threshold="77 degF")) == 40
    assert _f(indices.summer_days(da, threshold="298.0 K")) == 50
    celsius = (da - 273.15).assign_attrs(units="degC")
    assert _f(indices.summer_days(celsius)) == 40


def test_wet_threshold_in_other_units() -> None:
    pr = np.zeros(365)
    pr[:30] = 2.0
    pr[30:60] = 0.5
    da = _series(pr)
    flux = (da / 86400.0).assign_attrs(units="kg m-2 s-1")
    assert _f(indices.sdii(da)) == pytest.approx(2.0)
    assert _f(indices.sdii(flux)) == pytest.approx(2.0 / 86400.0, rel=1e-5)
    assert _f(indices.sdii(da, wet_threshold="0.1 mm/day")) == pytest.approx(1.25)
    assert _f(indices.cwd(da, wet_threshold="0.4 mm d-1")) == 60
    assert to_data_units("1 mm/day", "kg m-2 s-1") == pytest.approx(1 / 86400)


@pytest.mark.parametrize(
    ("threshold", "units", "error"),
    [
        ("25 mm/day", "K", ConfigError),  # wrong dimension
        ("25", "K", ConfigError),  # no units
        ("warm", "K", ConfigError),  # not a quantity
        ("25 degC", None, DataError),  # data without units
        ("25 furlongs_per_fortnight_x", "K", ConfigError),  # unknown unit
    ],
)
def test_bad_thresholds_raise(threshold: str, units: str | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        to_data_units(threshold, units)


def test_bad_threshold_through_an_index() -> None:
    da = _series(np.full(365, 290.0), units="K", name="tasmax")
    with pytest.raises(ConfigError, match="cannot be converted"):
        indices.summer_days(da, threshold="1 mm/day")


# ----------------------------------------------------------------------------- seasons
def test_season_selection_and_words() -> None:
    da = _series(np.arange(360.0), calendar="360_day")
    for word, code in [("winter", "DJF"), ("summer", "JJA"), ("spring", "MAM"), ("autumn", "SON")]:
        sel = _time.select_season(da, word)
        assert sel.sizes["time"] == 90
        assert set(sel.time.dt.season.values) == {code}
    assert _time.select_season(da, None) is da
    with pytest.raises(ConfigError):
        _time.normalise_season("monsoon")


def test_seasonal_mean_and_djf_season_years() -> None:
    values = np.zeros(365 * 2)
    da = _series(values, calendar="noleap")
    months = da.time.dt.month.values
    da = da.copy(data=np.asarray(months, dtype=np.float32)[:, None, None])
    assert _f(indices.mean(da, season="JJA")) == pytest.approx((6 * 30 + 7 * 31 + 8 * 31) / 92)
    years = _time.season_years(da.time, "DJF")
    assert years[0] == 2001 and years[-1] == 2003  # December 2002 counts for the 2003 winter
    # TXx in DJF: only the complete winter (Dec 2001-Feb 2002) counts -> max month number 12
    assert _f(indices.txx(da, season="DJF")) == 12
    assert _f(indices.txn(da, season="DJF")) == 1


def test_incomplete_years_are_left_out() -> None:
    values = np.r_[np.full(365, 10.0), np.full(40, 100.0)]  # 1 year + 40 days
    da = _series(values, calendar="noleap", units="K", name="tasmax")
    assert _f(indices.txx(da)) == 10.0


# ----------------------------------------------------------------------------- other indices
def test_lag1_autocorrelation_known_values() -> None:
    alternating = np.tile([1.0, -1.0], 200)
    assert _f(indices.lag1_autocorrelation(_series(alternating))) == pytest.approx(-1.0)
    rng = np.random.default_rng(3)
    phi, n = 0.7, 20000
    x = np.zeros(n)
    eps = rng.normal(size=n)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + eps[i]
    assert _f(indices.lag1_autocorrelation(_series(x))) == pytest.approx(phi, abs=0.02)


def test_lag1_skips_pairs_across_a_gap() -> None:
    x = np.tile([1.0, -1.0], 100)
    da = _series(x)
    gap = xr.concat([da.isel(time=slice(0, 50)), da.isel(time=slice(51, 200))], dim="time")
    # the pair across the missing day would be (+1, +1); it must not enter
    assert _f(indices.lag1_autocorrelation(gap)) == pytest.approx(-1.0)


def test_interannual_variability_and_quantiles() -> None:
    values = np.r_[np.full(365, 1.0), np.full(365, 3.0), np.full(365, 5.0)]
    da = _series(values, calendar="noleap", units="K", name="tasmax")
    assert _f(indices.interannual_variability(da)) == pytest.approx(np.std([1.0, 3.0, 5.0]))
    one_year = _series(np.ones(365), units="K", name="tasmax")
    assert np.isnan(_f(indices.interannual_variability(one_year)))
    ramp = _series(np.arange(1000.0))
    assert _f(indices.quantile(ramp, 0.99)) == pytest.approx(np.quantile(np.arange(1000.0), 0.99))


def test_rx1day_and_sdii() -> None:
    pr = np.zeros(730)
    pr[10] = 40.0
    pr[400] = 20.0
    pr[401] = 0.5
    da = _series(pr, calendar="noleap")
    assert _f(indices.rx1day(da)) == pytest.approx(30.0)
    assert _f(indices.sdii(da)) == pytest.approx(30.0)


def test_all_nan_point_gives_nan() -> None:
    tas, pr = _climate(years=2)
    for spec in indices.default_indices("tasmax"):
        assert np.isnan(float(spec(tas)[0, 0])), spec.name
    assert np.isfinite(float(indices.cdd(pr)[2, 3]))


@pytest.mark.parametrize("calendar", ["noleap", "360_day"])
def test_numpy_and_dask_agree(calendar: str) -> None:
    tas, pr = _climate(years=3, calendar=calendar)
    for da in (tas, pr):
        lazy = da.chunk({"time": 97})
        for spec in indices.default_indices(str(da.name)):
            for season in (None, "DJF", "JJA"):
                eager = spec(da, season=season)
                result = spec(lazy, season=season)
                assert result.chunks is not None, spec.name  # stays lazy
                np.testing.assert_allclose(
                    result.compute().values,
                    eager.values,
                    rtol=1e-6,
                    atol=1e-6,
                    err_msg=f"{da.name} {spec.name} {season}",
                )


def test_tail_quantile_of_dask_matches_numpy_with_nans() -> None:
    tas, _ = _climate(years=2)
    tas = tas.where(tas > 280)  # many missing values, differing per point
    for q in (0.01, 0.05, 0.5, 0.95, 0.99):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN point
            expected = np.nanquantile(tas.values.astype(np.float64), q, axis=0)
        got = indices.quantile(tas.chunk({"time": 50}), q).compute().values
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4, err_msg=str(q))


def test_index_without_time_raises() -> None:
    with pytest.raises(DataError):
        indices.txx(xr.DataArray(np.zeros((3, 3)), dims=("y", "x")))
