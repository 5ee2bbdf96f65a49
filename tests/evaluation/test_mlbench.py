"""The benchmark's own RMSE, RALSD and Wasserstein distance, computed by hand on small cases."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from climdl.errors import DataError
from climdl.evaluation import evaluate, mlbench


def _series(values: np.ndarray, start: str = "2001-01-01") -> xr.DataArray:
    time = xr.date_range(
        start, periods=values.shape[0], freq="D", calendar="noleap", use_cftime=True
    )
    ny, nx = values.shape[1:]
    return xr.DataArray(
        values.astype("f4"),
        dims=("time", "lat", "lon"),
        coords={
            "time": time,
            "lat": (
                "lat",
                np.linspace(40.0, 40.0 + 0.1 * (ny - 1), ny),
                {"units": "degrees_north"},
            ),
            "lon": ("lon", np.linspace(5.0, 5.0 + 0.1 * (nx - 1), nx), {"units": "degrees_east"}),
        },
        name="tasmax",
        attrs={"units": "K"},
    )


def _hand_profile(day: np.ndarray) -> np.ndarray:
    """One day's profile the slow way: the DFT by its sum, the shifted grid, floor(r) annuli."""
    ny, nx = day.shape
    f = np.nan_to_num(day.astype(np.float64))
    power = np.zeros((ny, nx))
    for ky in range(ny):
        for kx in range(nx):
            total = 0j
            for y in range(ny):
                for x in range(nx):
                    total += f[y, x] * np.exp(-2j * np.pi * (ky * y / ny + kx * x / nx))
            # shifted position: frequency k sits at (k + n // 2) mod n
            power[(ky + ny // 2) % ny, (kx + nx // 2) % nx] = abs(total) ** 2
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    for i in range(ny):
        for j in range(nx):
            r = int(np.hypot(i - (ny - 1) / 2, j - (nx - 1) / 2))
            sums[r] = sums.get(r, 0.0) + power[i, j]
            counts[r] = counts.get(r, 0) + 1
    return np.array([sums[r] / counts[r] for r in range(max(sums) + 1)])


@pytest.mark.parametrize("shape", [(4, 4), (3, 5)])
def test_spectrum_is_the_benchmarks_by_hand(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(280.0, 3.0, (3, *shape))
    values[1, 0, 0] = np.nan  # a gap: the benchmark counts it as 0
    da = _series(values)
    want = np.mean([_hand_profile(values[d]) for d in range(3)], axis=0)
    got = mlbench.psd(da)
    np.testing.assert_allclose(got.values, want, rtol=1e-6)
    lazy = mlbench.psd(da.chunk({"time": 2}))
    np.testing.assert_allclose(lazy.values, want, rtol=1e-6)


def test_ralsd_is_the_mean_square_of_the_db_ratio() -> None:
    truth = np.array([100.0, 10.0, 1.0, 0.0])
    pred = np.array([10.0, 10.0, 10.0, 0.0])
    # bins: +10 dB, 0 dB, -10 dB, and 0 / max(0, 1e-30) = 0 -> floored at 1e-30: -300 dB
    want = (10.0**2 + 0.0 + 10.0**2 + 300.0**2) / 4
    assert mlbench.ralsd(truth, pred) == pytest.approx(want, rel=1e-12)
    assert mlbench.ralsd(truth[:3], truth[:3]) == 0.0
    with pytest.raises(DataError, match="different lengths"):
        mlbench.ralsd(truth, pred[:3])


def test_wasserstein_is_exact_with_gaps_as_zero() -> None:
    truth = _series(np.array([[[0.0, 1.0]], [[2.0, 3.0]]]))
    pred = _series(np.array([[[1.0, 2.0]], [[3.0, 4.0]]]))
    assert mlbench.wasserstein(truth, pred) == pytest.approx(1.0)  # every value moves by 1
    gappy = _series(np.array([[[np.nan, 1.0]], [[2.0, 3.0]]]))
    # sorted truth 0 (the gap), 1, 2, 3 against 1, 2, 3, 4: still 1; the gap is not dropped
    assert mlbench.wasserstein(gappy, pred) == pytest.approx(1.0)
    shifted = _series(np.array([[[np.nan, 1.0]], [[2.0, 3.0]]]) + 10.0)
    # 0, 11, 12, 13 against 1, 2, 3, 4: (1 + 9 + 9 + 9) / 4
    assert float(mlbench.wasserstein(shifted, pred)) == pytest.approx(7.0)
    rng = np.random.default_rng(2)
    a, b = rng.gamma(0.5, 5.0, (50, 3, 4)), rng.gamma(0.6, 4.0, (50, 3, 4))
    from scipy.stats import wasserstein_distance

    lazy = mlbench.wasserstein(_series(a).chunk({"time": 7}), _series(b).chunk({"time": 7}))
    assert float(lazy.compute()) == pytest.approx(  # type: ignore[union-attr]
        wasserstein_distance(a.astype("f4").ravel(), b.astype("f4").ravel()), rel=1e-9
    )


def test_evaluate_reports_the_benchmarks_figures_beside_climdls() -> None:
    n = 40
    truth = np.full((n, 2, 2), 280.0)
    truth += np.arange(n)[:, None, None] % 7  # some variability
    pred = truth.copy()
    pred[:, 0, 0] += 1.0  # error 1 K at one point, 3 K at another, none elsewhere
    pred[:, 1, 1] += 3.0
    t, p = _series(truth).to_dataset(), _series(pred).to_dataset()
    res = evaluate(t, {"emulator": p}, seasons=[])
    rows = {r.key: r.values["emulator"] for r in res.rows if r.variable == "tasmax"}
    assert rows["rmse_mlbench"] == pytest.approx((1.0 + 3.0 + 0 + 0) / 4)  # mean of point RMSEs
    assert rows["rmse"] == pytest.approx(np.sqrt((1.0 + 9.0) / 4))  # climdl's: root of the mean
    assert rows["wasserstein_mlbench"] == pytest.approx(
        np.abs(np.sort(truth.ravel()) - np.sort(pred.ravel())).mean()
    )
    spectra = [mlbench.psd(_series(v)).values for v in (truth, pred)]
    assert rows["ralsd_mlbench"] == pytest.approx(mlbench.ralsd(*spectra))
    assert rows["ralsd_mlbench"] > 0
