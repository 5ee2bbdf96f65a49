"""Tests of climdl.preprocess: normalisation, streaming statistics, regridding weights."""

from __future__ import annotations

import warnings
from importlib.resources import files

import numpy as np
import pyproj
import pytest
import torch
import xarray as xr
from hypothesis import example, given, settings
from hypothesis import strategies as st

from climdl.errors import ConfigError, DataError
from climdl.preprocess import (
    LatLonGrid,
    Normaliser,
    ProjectedGrid,
    RegridWeights,
    StreamingStats,
    apply_regrid,
    bilinear_weights,
    coarsen_blocks,
    compute_stats,
    conservative_weights,
    daily_spatial_moments,
    spatial_standardise,
)

FAST = settings(max_examples=25, deadline=None)


def regular(lo: float, step: float, n: int) -> np.ndarray:
    return lo + step * np.arange(n + 1)


# ---------------------------------------------------------------- normalisation


@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    kinds=st.lists(st.sampled_from(["standard", "log1p_standard", "none"]), min_size=1, max_size=4),
    per_pixel=st.booleans(),
)
def test_normalise_round_trip(seed: int, kinds: list, per_pixel: bool) -> None:
    rng = np.random.default_rng(seed)
    c = len(kinds)
    shape = (c, 5, 6) if per_pixel else (c,)
    mean, std = rng.normal(size=shape), rng.uniform(0.1, 10.0, size=shape)
    x = rng.normal(scale=20.0, size=(3, c, 5, 6))
    x[:, [k == "log1p_standard" for k in kinds]] **= 2  # precipitation is non-negative
    norm = Normaliser([f"v{i}" for i in range(c)], mean, std, kinds)
    xt = torch.from_numpy(x)
    z = norm.normalise(xt)
    assert z.dtype == torch.float64
    np.testing.assert_allclose(norm.denormalise(z).numpy(), x, rtol=1e-9, atol=1e-9)


def test_normaliser_values_kinds_and_channel_last() -> None:
    norm = Normaliser(
        ["tas", "pr", "orog"],
        [280.0, 0.5, 0.0],
        [10.0, 2.0, 1.0],
        ["standard", "log1p_standard", "none"],
    )
    x = torch.tensor([[290.0, 3.0, 1500.0], [270.0, 0.0, -2.0]])
    z = norm.normalise(x, dim=-1)
    expected = [(290 - 280) / (10 + 1e-6), (np.log1p(3.0) - 0.5) / (2 + 1e-6), 1500.0]
    np.testing.assert_allclose(z[0].numpy(), expected, rtol=1e-6)
    assert z[1, 2] == -2.0  # "none" passes through
    back = norm.denormalise(torch.tensor([[0.0, -100.0, 1.0]]), dim=-1)
    assert back[0, 1] == 0.0  # precipitation is clamped at 0
    with pytest.raises(DataError):
        norm.normalise(torch.zeros(2, 4))
    with pytest.raises(ConfigError):
        Normaliser(["a"], [0.0], [1.0], "zscore")  # type: ignore[arg-type]


def test_normaliser_checkpoint_round_trip() -> None:
    norm = Normaliser(["tas", "pr"], [1.0, 2.0], [3.0, 4.0], ["standard", "log1p_standard"])
    state = norm.state_dict()
    assert {"mean", "std", "_extra_state"} <= set(state)
    other = Normaliser(["a", "b"], [0.0, 0.0], [1.0, 1.0])
    other.load_state_dict(state)
    assert other.names == ["tas", "pr"] and other.kinds == ["standard", "log1p_standard"]
    x = torch.rand(2, 2, 3, 3)
    torch.testing.assert_close(other(x), norm(x))


# ---------------------------------------------------------------- statistics


@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    cuts=st.lists(st.integers(1, 19), max_size=5),
    per_pixel=st.booleans(),
    nan_frac=st.sampled_from([0.0, 0.1, 0.5]),
)
def test_streaming_stats_equal_numpy(
    seed: int, cuts: list, per_pixel: bool, nan_frac: float
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=rng.uniform(-1e3, 1e3, size=(1, 3, 1, 1)), size=(20, 3, 4, 5)).astype(
        np.float32
    )
    x[rng.random(x.shape) < nan_frac] = np.nan
    x[:, :, 0, 0] = 1.0  # keep every pixel with at least some valid values
    chunks = np.split(x, sorted(set(cuts)))
    stats = compute_stats(
        (torch.from_numpy(c) if i % 2 else c for i, c in enumerate(chunks)), per_pixel=per_pixel
    )
    xd = x.astype(np.float64)
    axes = 0 if per_pixel else (0, 2, 3)
    np.testing.assert_allclose(stats.mean.numpy(), np.nanmean(xd, axis=axes), rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(stats.std.numpy(), np.nanstd(xd, axis=axes), rtol=1e-8, atol=1e-9)
    assert (stats.count.numpy() == (~np.isnan(xd)).sum(axis=axes)).all()
    assert (stats.nan_count.numpy() == np.isnan(xd).sum(axis=axes)).all()


def test_stats_log1p_feed_normaliser_and_empty() -> None:
    pr = np.abs(np.random.default_rng(0).normal(size=(50, 1, 4, 4)))
    stats = compute_stats([pr[:20], pr[20:]], kind="log1p_standard")
    np.testing.assert_allclose(stats.mean.numpy(), [np.log1p(pr).mean()], rtol=1e-12)
    z = Normaliser.from_stats(["pr"], stats).normalise(torch.from_numpy(pr))
    assert abs(float(z.mean())) < 1e-6 and abs(float(z.std(unbiased=False)) - 1) < 1e-5
    with pytest.raises(DataError):
        compute_stats([])
    acc = StreamingStats()
    acc.update(np.full((2, 1, 3), np.nan))
    assert np.isnan(acc.result().mean.item()) and acc.result().nan_count.item() == 6


def test_daily_spatial_moments() -> None:
    x = np.random.default_rng(1).normal(size=(4, 3, 8, 9))
    x[0, 0, :2] = np.nan
    x[1, 2] = np.nan
    mean, std = daily_spatial_moments(torch.from_numpy(x))
    assert mean.shape == (4, 3)
    with warnings.catch_warnings():  # numpy warns about the all-NaN map
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_allclose(mean.numpy(), np.nanmean(x, axis=(2, 3)), equal_nan=True)
        np.testing.assert_allclose(std.numpy(), np.nanstd(x, axis=(2, 3)), equal_nan=True)
    z, _, _ = spatial_standardise(torch.from_numpy(x[2:]))
    np.testing.assert_allclose(z.mean((2, 3)).numpy(), 0.0, atol=1e-12)


# ---------------------------------------------------------------- conservative, lat/lon


def test_block_case_equals_cos_lat_block_mean() -> None:
    src = LatLonGrid(regular(30.0, 0.25, 64), regular(-5.0, 0.25, 48))
    dst = LatLonGrid(regular(30.0, 2.0, 8), regular(-5.0, 2.0, 6))
    x = np.random.default_rng(2).normal(size=(2, *src.shape))
    y = apply_regrid(conservative_weights(src, dst), torch.from_numpy(x)).numpy()
    w = np.cos(np.deg2rad(src.lat))[:, None] * np.ones(src.shape[1])
    blocks = (x * w).reshape(2, 8, 8, 6, 8).sum((2, 4)) / w.reshape(8, 8, 6, 8).sum((1, 3))
    np.testing.assert_allclose(y, blocks, rtol=1e-13, atol=1e-13)
    # the pure-torch block average agrees
    area = torch.from_numpy(src.cell_areas())
    np.testing.assert_allclose(
        coarsen_blocks(torch.from_numpy(x), 8, area).numpy(), blocks, rtol=1e-13, atol=1e-13
    )


@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    src_step=st.sampled_from([0.1, 0.25, 0.3, 0.5]),
    dst_step=st.floats(0.7, 3.0),
    offset=st.tuples(st.floats(-2.0, 6.0), st.floats(-2.0, 6.0)),
    flip=st.booleans(),
)
# edges that coincide up to rounding (-4.000000000000001 + 360 vs 356): no sliver of coverage
@example(seed=0, src_step=0.25, dst_step=1.0, offset=(0.0, 5.999999999999999), flip=False)
def test_conservative_keeps_area_mean(
    seed: int, src_step: float, dst_step: float, offset: tuple, flip: bool
) -> None:
    src = LatLonGrid(regular(40.0, src_step, 20), regular(350.0, src_step, 24))
    lat_b = regular(40.0 + offset[0], dst_step, 3)
    dst = LatLonGrid(lat_b[::-1] if flip else lat_b, regular(-10.0 + offset[1], dst_step, 4))
    x = np.random.default_rng(seed).normal(size=src.shape)
    w = conservative_weights(src, dst, min_coverage=None, cache=False)
    y, cov = apply_regrid(w, torch.from_numpy(x)).numpy(), w.coverage.numpy()
    # independent: area of each source cell inside the union of destination cells
    lo, hi = np.sort(lat_b[[0, -1]])
    s_lo = np.clip(src.lat_bounds[:-1], lo, hi)
    s_hi = np.clip(src.lat_bounds[1:], lo, hi)
    lon_lo, lon_hi = dst.lon_bounds[0] + 360, dst.lon_bounds[-1] + 360  # source runs 350..
    ov_lon = np.clip(
        np.minimum(src.lon_bounds[1:], lon_hi) - np.maximum(src.lon_bounds[:-1], lon_lo), 0, None
    )
    ov = (
        np.outer(np.sin(np.deg2rad(s_hi)) - np.sin(np.deg2rad(s_lo)), np.deg2rad(ov_lon))
        * src.radius**2
    )
    covered = dst.cell_areas() * cov
    if ov.sum() < 1e-6 * src.cell_areas().sum():
        assert np.isnan(y).all()
        return
    assert np.isclose(covered.sum(), ov.sum(), rtol=1e-10)
    ok = cov > 0
    np.testing.assert_allclose(
        (covered[ok] * y[ok]).sum() / covered.sum(),
        (ov * x).sum() / ov.sum(),
        rtol=1e-9,
        atol=1e-12,
    )
    rows = np.asarray(w.to_scipy().sum(1)).ravel()
    np.testing.assert_allclose(rows[ok.ravel()], 1.0, rtol=1e-12)


def test_nan_sources_are_left_out_and_uncovered_is_nan() -> None:
    src = LatLonGrid(regular(0.0, 0.5, 8), regular(0.0, 0.5, 10))
    dst = LatLonGrid(regular(0.0, 2.0, 2), regular(0.0, 2.0, 3))  # last column half covered
    with pytest.raises(DataError, match="does not cover"):
        conservative_weights(src, dst)
    w = conservative_weights(src, dst, min_coverage=0.5)
    np.testing.assert_allclose(w.coverage.numpy(), [[1, 1, 0.5], [1, 1, 0.5]], rtol=1e-12)
    x = torch.ones(8, 10, dtype=torch.float64)
    x[:4, :4] = torch.nan  # the whole first block
    x[4, 4] = 5.0
    x[5, 5] = torch.nan
    y = w(x)
    assert torch.isnan(y[0, 0]) and (y[:, 2] == 1).all()
    a = torch.from_numpy(src.cell_areas())[4:8, 4:8].clone()
    a[1, 1] = 0.0
    expect = (a * torch.nan_to_num(x[4:8, 4:8])).sum() / a.sum()
    torch.testing.assert_close(y[1, 1], expect)
    assert torch.isnan(w(x, nan_aware=False)[1, 1])
    assert torch.isnan(w(torch.ones(8, 10), min_coverage=1.0)[:, 2]).all()
    blocks = coarsen_blocks(x[:, :8], 4)
    np.testing.assert_array_equal(torch.isnan(blocks).numpy(), [[True, False], [False, False]])
    with pytest.raises(DataError):
        coarsen_blocks(x, 3)
    with pytest.raises(DataError, match="spatial shape"):
        w(torch.ones(7, 10))


# ---------------------------------------------------------------- conservative, ALPS Lambert


@pytest.fixture(scope="module")
def alps() -> ProjectedGrid:
    ds = xr.open_dataset(str(files("climdl") / "data/grids/ALPS.nc"))
    gm = ds["Lambert_Conformal"].attrs
    assert gm["grid_mapping_name"] == "lambert_conformal_conic"
    crs = pyproj.CRS.from_proj4(
        "+proj=lcc +lat_1=49.5 +lat_2=49.5 +lat_0=49.5 +lon_0=10.5 +x_0=2825000 +y_0=2825000 +R=6371229 +units=m"
    )
    grid = ProjectedGrid.from_centres(ds.x.values, ds.y.values, crs, units=ds.x.attrs["units"])
    from_cf = ProjectedGrid.from_dataset(ds)
    _, lat = pyproj.Transformer.from_crs(
        from_cf.crs, "+proj=longlat +R=6371229", always_xy=True
    ).transform(*np.meshgrid(ds.x.values * 1e3, ds.y.values * 1e3))
    np.testing.assert_allclose(
        lat, ds.lat.values, atol=1e-6
    )  # the file's own CRS reproduces lat/lon
    np.testing.assert_allclose(grid.x_bounds, from_cf.x_bounds)
    return grid


TWO_DEG = LatLonGrid(regular(30.0, 2.0, 16), regular(-10.0, 2.0, 16))


def test_alps_to_two_degrees(alps: ProjectedGrid) -> None:
    w = conservative_weights(alps, TWO_DEG, min_coverage=None)
    cov = w.coverage.numpy()
    assert w.dst_shape == (16, 16) and (cov == 1.0).sum() >= 40
    edge = (cov > 0) & (cov < 1)
    assert edge.sum() >= 20
    rows = np.asarray(w.to_scipy().sum(1)).ravel().reshape(16, 16)
    np.testing.assert_allclose(rows[cov == 1.0], 1.0, rtol=1e-12)
    y = w(torch.full((2, 128, 128), 273.15))
    torch.testing.assert_close(y[:, cov == 1.0], torch.full_like(y[:, cov == 1.0], 273.15))
    assert torch.isnan(y[:, cov == 0]).all()
    assert torch.isnan(w(torch.ones(128, 128), min_coverage=0.999)[torch.from_numpy(edge)]).all()
    with pytest.raises(DataError, match="does not cover the training domain"):
        conservative_weights(alps, TWO_DEG)
    # NaN over the western half: fully covered cells west of the domain's middle become NaN
    x = torch.ones(128, 128)
    x[:, :64] = torch.nan
    yn = w(x)
    assert torch.isnan(yn).sum() > torch.isnan(y[0]).sum() and (yn[~torch.isnan(yn)] == 1).all()


def test_alps_cell_areas_match_geodesic_polygon(alps: ProjectedGrid) -> None:
    xb, yb, n = alps.x_bounds, alps.y_bounds, 500
    xs = np.concatenate(
        [
            np.linspace(xb[0], xb[-1], n),
            np.full(n, xb[-1]),
            np.linspace(xb[-1], xb[0], n),
            np.full(n, xb[0]),
        ]
    )
    ys = np.concatenate(
        [
            np.full(n, yb[0]),
            np.linspace(yb[0], yb[-1], n),
            np.full(n, yb[-1]),
            np.linspace(yb[-1], yb[0], n),
        ]
    )
    lon, lat = pyproj.Transformer.from_crs(
        alps.crs, alps.crs.geodetic_crs, always_xy=True
    ).transform(xs, ys)
    area = abs(pyproj.Geod(a=6371229.0, b=6371229.0).polygon_area_perimeter(lon, lat)[0])
    assert abs(alps.cell_areas(k=4).sum() / area - 1) < 1e-6


# ---------------------------------------------------------------- bilinear, I/O, dtypes


def test_bilinear_exact_for_linear_fields() -> None:
    lat, lon = np.arange(60.0, 29.0, -1.5), np.arange(-20.0, 30.0, 2.0)  # descending latitudes
    field = 3.0 * lat[:, None] - 0.7 * lon[None, :] + 12.0
    rng = np.random.default_rng(3)
    plat, plon = rng.uniform(30.0, 60.0, 50), rng.uniform(-20.0, 28.0, 50)
    plat[0], plon[0] = 70.0, 0.0  # outside
    w = bilinear_weights(lat, lon, plat, plon)
    y = w(torch.from_numpy(field)).numpy()
    assert np.isnan(y[0]) and w.coverage[0] == 0
    np.testing.assert_allclose(y[1:], 3.0 * plat[1:] - 0.7 * plon[1:] + 12.0, rtol=1e-12)
    grid = bilinear_weights(lat, lon, lat[3:6, None], lon[None, 2:9])
    np.testing.assert_allclose(grid(torch.from_numpy(field)).numpy(), field[3:6, 2:9], rtol=1e-13)
    glob = bilinear_weights([0.0, 1.0], np.arange(0.0, 360.0, 90.0), [0.5], [315.0])
    np.testing.assert_allclose(glob(torch.tensor([[0.0, 1, 2, 3], [0.0, 1, 2, 3]])).numpy(), [1.5])


def test_save_load_and_dtypes(tmp_path) -> None:
    src = LatLonGrid(regular(0.0, 0.5, 8), regular(0.0, 0.5, 8))
    w = conservative_weights(src, LatLonGrid(regular(0.0, 2.0, 2), regular(0.0, 2.0, 2)))
    w.save(tmp_path / "w.npz")
    w2 = RegridWeights.load(tmp_path / "w.npz")
    assert w2.dst_shape == w.dst_shape and w2.method == "conservative"
    x = torch.rand(3, 8, 8)
    torch.testing.assert_close(w2(x), w(x))
    assert w(x).dtype == torch.float32 and w(x.to(torch.bfloat16)).dtype == torch.bfloat16


# ---------------------------------------------------------------- GPU gives the same numbers


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gpu_matches_cpu(dtype: torch.dtype, alps: ProjectedGrid) -> None:
    dev = torch.device("cuda")
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.normal(size=(4, 3, 128, 128))).to(dtype)
    x[0, 0, :10] = torch.nan
    w = conservative_weights(alps, TWO_DEG, min_coverage=None)
    torch.testing.assert_close(w(x.to(dev)).cpu(), w(x), equal_nan=True)
    lat, lon = np.linspace(30, 60, 128), np.linspace(-20, 30, 128)
    b = bilinear_weights(lat, lon, rng.uniform(31, 59, 100), rng.uniform(-19, 29, 100))
    torch.testing.assert_close(b(x.to(dev)).cpu(), b(x), equal_nan=True)
    norm = Normaliser(
        ["a", "b", "c"], [1.0, 0.5, 0.0], [2.0, 1.0, 1.0], ["standard", "log1p_standard", "none"]
    )
    xp = x.abs()
    torch.testing.assert_close(
        norm.to(dev).normalise(xp.to(dev)).cpu(), norm.cpu().normalise(xp), equal_nan=True
    )
    torch.testing.assert_close(
        coarsen_blocks(x.to(dev), 8).cpu(), coarsen_blocks(x, 8), equal_nan=True
    )
    m_gpu, s_gpu = daily_spatial_moments(x.to(dev))
    m_cpu, s_cpu = daily_spatial_moments(x)
    torch.testing.assert_close(m_gpu.cpu(), m_cpu, equal_nan=True)
    torch.testing.assert_close(s_gpu.cpu(), s_cpu, equal_nan=True)
    st_gpu, st_cpu = compute_stats([x.to(dev)[:2], x.to(dev)[2:]]), compute_stats([x[:2], x[2:]])
    torch.testing.assert_close(st_gpu.mean, st_cpu.mean)
    torch.testing.assert_close(st_gpu.std, st_cpu.std)
