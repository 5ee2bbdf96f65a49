"""Radially averaged PSD and RALSD: known sinusoids, identical fields, grids, NumPy vs Dask."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from climdl.errors import DataError
from climdl.evaluation import spectra


def _fields(values: np.ndarray, *, dx: float = 12.5, units: str = "km") -> xr.DataArray:
    nt, ny, nx = values.shape
    time = xr.date_range("2001-01-01", periods=nt, freq="D", use_cftime=True)
    return xr.DataArray(
        values,
        dims=("time", "y", "x"),
        attrs={"units": "K"},
        coords={
            "time": time,
            "y": ("y", np.arange(ny) * dx, {"units": units}),
            "x": ("x", np.arange(nx) * dx, {"units": units}),
        },
    )


def _wave(n: int, cycles_x: int, cycles_y: int, nt: int = 4) -> np.ndarray:
    j, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    f = np.sin(2 * np.pi * (cycles_x * i + cycles_y * j) / n)
    return 280.0 + np.repeat(f[None], nt, axis=0)


@pytest.mark.parametrize(("cx", "cy"), [(5, 0), (0, 7), (6, 8)])
def test_psd_of_a_sinusoid_peaks_at_its_wavenumber(cx: int, cy: int) -> None:
    n, dx = 32, 12.5
    p = spectra.psd(_fields(_wave(n, cx, cy), dx=dx))
    k_expected = np.hypot(cx, cy) / (n * dx)  # cycles per km
    peak = float(p["wavenumber"][int(np.argmax(p.values))])
    assert peak == pytest.approx(k_expected, rel=1e-9)
    assert float(p["wavelength"][int(np.argmax(p.values))]) == pytest.approx(1 / k_expected)
    # nearly all the power sits in that bin
    assert p.values.max() > 100 * np.delete(p.values, int(np.argmax(p.values))).max()


def test_psd_spacing_from_metres_and_latlon() -> None:
    n = 32
    metres = _fields(_wave(n, 4, 0), dx=12500.0, units="m")
    p = spectra.psd(metres)
    assert float(p["wavenumber"][int(np.argmax(p.values))]) == pytest.approx(4 / (n * 12.5))
    lat = np.linspace(-30.0, -26.9, n)
    lon = np.linspace(20.0, 23.1, n)
    ll = xr.DataArray(
        _wave(n, 4, 0),
        dims=("time", "lat", "lon"),
        coords={"lat": lat, "lon": lon, "time": metres.time},
    )
    dy, dx = spectra.grid_spacing_km(ll)
    assert dy == pytest.approx(0.1 * np.pi / 180 * 6371.229, rel=1e-6)
    assert dx == pytest.approx(dy * np.cos(np.deg2rad(lat.mean())), rel=1e-6)
    p = spectra.psd(ll)
    assert float(p["wavenumber"][int(np.argmax(p.values))]) == pytest.approx(
        4 / (n * dx), rel=0.05
    )  # bins are spaced by the coarser direction


def test_ralsd_is_zero_for_identical_fields_and_10db_per_decade() -> None:
    rng = np.random.default_rng(0)
    x = _fields(rng.normal(size=(5, 32, 32)))
    p = spectra.psd(x)
    assert spectra.ralsd(p, p) == 0.0
    assert spectra.ralsd(p, spectra.psd(x + 5.0)) == pytest.approx(0.0, abs=1e-9)  # mean removed
    assert spectra.ralsd(p, spectra.psd(x * np.sqrt(10.0))) == pytest.approx(10.0)
    assert spectra.ralsd(p, spectra.psd(x * np.sqrt(10.0)), root=False) == pytest.approx(100.0)
    assert np.isnan(spectra.ralsd(np.zeros(3), np.zeros(3)))
    with pytest.raises(DataError):
        spectra.ralsd(np.ones(3), np.ones(4))


def test_smoothing_loses_small_scale_power() -> None:
    from scipy.ndimage import uniform_filter

    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 32, 32))
    smooth = uniform_filter(x, size=(1, 5, 5), mode="wrap")
    p0, p1 = spectra.psd(_fields(x)), spectra.psd(_fields(smooth))
    assert p1.values[-1] < 0.1 * p0.values[-1]
    assert spectra.ralsd(p0, p1) > 5.0


def test_nan_points_are_filled_and_dask_agrees() -> None:
    rng = np.random.default_rng(2)
    values = 280.0 + rng.normal(size=(9, 16, 16))
    values[:, 3, 4] = np.nan
    values[2] = np.nan  # a day without data is left out
    da = _fields(values)
    eager = spectra.psd(da)
    lazy = spectra.psd(da.chunk({"time": 4}))
    assert lazy.chunks is not None
    np.testing.assert_allclose(lazy.compute().values, eager.values, rtol=1e-12)
    assert np.isfinite(eager.values).all()
    # the filled point does not add a 280 K spike (the benchmark's zero fill would)
    assert eager.values.max() < 10 * np.median(eager.values)
    hann = spectra.psd(da, window="hann")
    assert np.isfinite(hann.values).all()


def test_psd_needs_a_grid() -> None:
    with pytest.raises(DataError):
        spectra.psd(xr.DataArray(np.zeros((3, 4)), dims=("time", "x")))
