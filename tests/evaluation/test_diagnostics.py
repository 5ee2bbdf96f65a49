"""Diagnostics truth vs prediction (incl. the Wasserstein distances of distributions): analytic
cases, NaN handling, NumPy vs Dask."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import xarray as xr

from climdl.errors import DataError
from climdl.evaluation import diagnostics as D
from climdl.evaluation import distributions as W
from climdl.evaluation import indices, signal
from climdl.evaluation.summary import Row


def _field(
    values: np.ndarray, *, name: str = "tasmax", units: str = "K", calendar: str = "noleap"
) -> xr.DataArray:
    time = xr.date_range(
        "2001-01-01", periods=values.shape[0], freq="D", calendar=calendar, use_cftime=True
    )
    return xr.DataArray(
        values,
        dims=("time", "y", "x"),
        name=name,
        attrs={"units": units},
        coords={
            "time": time,
            "y": np.arange(values.shape[1]) * 12.5,
            "x": np.arange(values.shape[2]) * 12.5,
        },
    )


@pytest.fixture(scope="module")
def pair() -> tuple[xr.DataArray, xr.DataArray]:
    rng = np.random.default_rng(0)
    n = 730
    cycle = 8 * np.sin(2 * np.pi * np.arange(n) / 365)[:, None, None]
    truth = 285 + cycle + rng.normal(0, 2, (n, 6, 5))
    pred = truth + 0.5 + rng.normal(0, 1, (n, 6, 5))
    truth[:, 0, 0] = np.nan
    pred[10:20, 1, 1] = np.nan
    return _field(truth), _field(pred)


def test_wasserstein_of_shifted_normals_equals_the_shift() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(280.0, 3.0, (500, 4, 4))
    shift = 1.7
    t, p = _field(a), _field(a + shift)
    assert float(W.wasserstein_distance(t, p)) == pytest.approx(shift, abs=0.006)  # bin width
    w = W.wasserstein_distance(t, p, spatial=True)
    np.testing.assert_allclose(w.values, shift, rtol=1e-9)
    # two independent samples of N(0, 1) and N(shift, 1): W1 tends to the shift
    b = rng.normal(280.0 + shift, 3.0, (500, 4, 4))
    assert float(W.wasserstein_distance(t, _field(b))) == pytest.approx(shift, abs=0.1)


def test_wasserstein_matches_scipy(pair: tuple[xr.DataArray, xr.DataArray]) -> None:
    t, p = pair
    t, p = t.isel(y=slice(1, None)), p.isel(y=slice(1, None))  # no all-NaN point
    tv, pv = t.values, p.values
    ok = np.isfinite(tv) & np.isfinite(pv)
    w = W.wasserstein_distance(t, p.where(t.notnull()), spatial=True)
    for j, i in [(0, 1), (2, 3), (4, 4)]:
        m = ok[:, j, i]
        expected = scipy.stats.wasserstein_distance(tv[m, j, i], pv[m, j, i])
        assert float(w[j, i]) == pytest.approx(expected, rel=1e-9)
    both = t.where(p.notnull()), p.where(t.notnull())
    expected = scipy.stats.wasserstein_distance(both[0].values[ok], both[1].values[ok])
    assert float(W.wasserstein_distance(*both)) == pytest.approx(expected, abs=0.005)


def test_rmse_and_bias_analytic() -> None:
    truth = _field(np.zeros((365, 3, 3)))
    pred = _field(np.full((365, 3, 3), 2.0))
    pred[:, 0, 0] = -1.0
    assert float(D.rmse(truth, pred)) == pytest.approx(np.sqrt((8 * 4 + 1) / 9))
    np.testing.assert_allclose(D.rmse(truth, pred, dim="time").values[1:, 1:], 2.0)
    assert float(D.bias(truth, pred)[0, 0]) == -1.0
    assert float(D.rmse(truth, pred, season="JJA")) == pytest.approx(np.sqrt(33 / 9))
    assert D.rmse(truth, pred, season="DJF").ndim == 0


def test_correlations_and_std_ratio() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 4, 4))
    t = _field(x, units="1")
    assert np.allclose(D.temporal_correlation(t, _field(3 * x + 1, units="1")).values, 1.0)
    assert np.allclose(D.temporal_correlation(t, _field(-x, units="1")).values, -1.0)
    assert np.allclose(D.std_ratio(t, _field(3 * x + 1, units="1")).values, 3.0)
    assert np.allclose(D.spatial_correlation(t, _field(2 * x, units="1")).values, 1.0)
    const = _field(np.ones((400, 4, 4)), units="1")
    assert np.isnan(D.temporal_correlation(const, t).values).all()
    assert np.isnan(D.std_ratio(const, t).values).all()


def test_bias_and_ratio_of_any_index(pair: tuple[xr.DataArray, xr.DataArray]) -> None:
    t, p = pair
    b = D.bias_index(t, p, indices.mean)
    assert float(np.nanmean(b.values)) == pytest.approx(0.5, abs=0.05)
    r = D.ratio_index(t, t + 0.0, indices.quantile, q=0.99)
    np.testing.assert_allclose(r.values[1:, 1:], 1.0)
    rel = D.bias_index(t, p, indices.txx, relative=True, season="JJA")
    assert rel.shape == (6, 5)


def test_multivariable_correlation_bias() -> None:
    rng = np.random.default_rng(4)
    tas = rng.normal(size=(300, 3, 3))
    pr = -tas + 0.1 * rng.normal(size=(300, 3, 3))
    truth = xr.Dataset({"tasmax": _field(tas), "pr": _field(pr, name="pr", units="mm day-1")})
    pred = xr.Dataset(
        {
            "tasmax": _field(tas),
            "pr": _field(rng.normal(size=(300, 3, 3)), name="pr", units="mm day-1"),
        }
    )
    out = D.bias_multivariable_correlation(truth, pred)
    assert float(out.correlation_truth.mean()) < -0.99
    assert float(abs(out.correlation_pred).max()) < 0.3
    assert float(out.correlation_bias.mean()) > 0.7
    with pytest.raises(DataError):
        D.bias_multivariable_correlation(truth[["tasmax"]], pred)


def test_climate_change_signal() -> None:
    hist = _field(np.full((365, 2, 2), 280.0))
    fut = _field(np.full((365, 2, 2), 283.0))
    assert np.allclose(signal.climate_change_signal(hist, fut).values, 3.0)
    pr_h = _field(np.full((365, 2, 2), 2.0), name="pr", units="mm day-1")
    pr_f = _field(np.full((365, 2, 2), 2.5), name="pr", units="mm day-1")
    s = signal.climate_change_signal(pr_h, pr_f)
    assert s.attrs["units"] == "%" and np.allclose(s.values, 25.0)
    bias = signal.signal_bias(hist, fut, hist, hist + 1.5, index_fn=indices.txx)
    assert np.allclose(bias.values, -1.5)


def test_numpy_and_dask_agree(pair: tuple[xr.DataArray, xr.DataArray]) -> None:
    t, p = pair
    tl, pl = t.chunk({"time": 100}), p.chunk({"time": 77})
    checks = [
        lambda a, b: D.rmse(a, b),
        lambda a, b: D.rmse(a, b, dim="time", season="MAM"),
        lambda a, b: D.bias(a, b, season="SON"),
        lambda a, b: D.temporal_correlation(a, b),
        lambda a, b: D.spatial_correlation(a, b),
        lambda a, b: D.std_ratio(a, b),
        lambda a, b: W.wasserstein_distance(a, b),
        lambda a, b: W.wasserstein_distance(a, b, spatial=True, season="DJF"),
        lambda a, b: D.bias_index(a, b, indices.sdii, wet_threshold="280 K"),
    ]
    for i, fn in enumerate(checks):
        eager = fn(t, p)
        lazy = fn(tl, pl)
        np.testing.assert_allclose(
            np.asarray(lazy.values), np.asarray(eager.values), rtol=1e-9, atol=1e-9, err_msg=str(i)
        )


def test_shape_mismatch_raises() -> None:
    with pytest.raises(DataError, match="differ in shape"):
        D.rmse(_field(np.zeros((10, 2, 2))), _field(np.zeros((10, 3, 2))))


def test_summary_row_marks_best() -> None:
    row = Row(
        "pr",
        "ratio_sdii",
        "ratio of SDII",
        "1",
        "one",
        "mean",
        {"emulator": 0.9, "interpolation": 1.05, "bad": float("nan")},
    )
    assert row.best() == ["interpolation"]
    assert Row("pr", "rmse", "RMSE", "mm", "lower", "", {"a": 1.0, "b": 1.0}).best() == ["a", "b"]
    assert Row("pr", "c", "corr", "1", "higher", "", {"a": 0.5, "b": 0.7}).best() == ["b"]
    assert Row("pr", "c", "corr", "1", "zero", "", {"a": -0.1, "b": 0.2}).best() == ["a"]
    assert Row("pr", "c", "corr", "1", "lower", "", {"a": float("nan"), "b": 1.0}).best() == []
    assert Row("pr", "c", "corr", "1", "lower", "", {"a": 0.3}).best() == []  # nothing to compare


def test_wet_day_wasserstein_matches_scipy_on_the_wet_values() -> None:
    rng = np.random.default_rng(4)
    truth = np.maximum(rng.gamma(0.6, 6.0, 40_000) - 2.0, 0.0)
    pred = np.maximum(rng.gamma(0.9, 3.0, 40_000) - 1.0, 0.0)  # drizzle: more, weaker wet days
    edges = W.histogram_edges("pr")
    h0 = W.histogram(xr.DataArray(truth[:, None], dims=("time", "x")), edges)
    h1 = W.histogram(xr.DataArray(pred[:, None], dims=("time", "x")), edges)
    want = scipy.stats.wasserstein_distance(truth[truth >= 1.0], pred[pred >= 1.0])
    got = W.wasserstein_above(h0, h1, 1.0)
    assert got == pytest.approx(want, abs=0.02)  # binning error: at most a 0.01 mm/day bin
    assert W.wasserstein_above(h0, h0, 1.0) == 0.0
    assert np.isnan(W.wasserstein_above(h0, h1, 1e9))
