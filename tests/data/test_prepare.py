"""``climdl.data.prepare``: conservative upscaling of fine fields, streamed to CF NetCDF."""

from __future__ import annotations

import json
from pathlib import Path

import cf_xarray  # noqa: F401  (registers the .cf accessor)
import numpy as np
import pyproj
import pytest
import torch
import xarray as xr

from climdl import __version__
from climdl.data.prepare import PrepareResult, load_stats, prepare
from climdl.data.prepare_grids import covered_coarse_grid
from climdl.data.reader import open_dataset
from climdl.data.sample import SampleWriter
from climdl.data.upscale import smooth
from climdl.errors import ConfigError, DataError, OutputError
from tests.data.fine_files import cf_dates, lambert_fine, latlon_fine, write_fine

TIME_CODER = xr.coders.CFDatetimeCoder(use_cftime=True)


def _open(path: Path) -> xr.Dataset:
    return xr.open_dataset(path, decode_times=TIME_CODER).load()


# ----------------------------------------------------------------------------- conservation
def _subcell_truth(fine: xr.Dataset, out: xr.Dataset, k: int = 12) -> tuple[np.ndarray, ...]:
    """Independent per-coarse-cell area means of a Lambert field: k x k sub-cells per fine
    cell, true areas from pyproj's areal scale, assigned by centre. Returns (means, areas)."""
    gm = fine["Lambert_Conformal"].attrs
    crs = pyproj.CRS.from_cf(dict(gm))
    x, y = fine["x"].values * 1000.0, fine["y"].values * 1000.0
    dx, dy = x[1] - x[0], y[1] - y[0]
    f = (np.arange(k) + 0.5) / k - 0.5
    xs, ys = np.broadcast_arrays(
        x[None, :, None, None] + dx * f[None, None, None, :],
        y[:, None, None, None] + dy * f[None, None, :, None],
    )
    lon, lat = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(xs, ys)
    area = dx * dy / k**2 / pyproj.Proj(crs).get_factors(lon, lat).areal_scale
    lat_e = np.append(out["lat_bnds"].values[:, 0], out["lat_bnds"].values[-1, 1])
    lon_e = np.append(out["lon_bnds"].values[:, 0], out["lon_bnds"].values[-1, 1])
    j = np.searchsorted(lat_e, lat) - 1
    i = np.searchsorted(lon_e, lon) - 1
    ok = (j >= 0) & (j < lat_e.size - 1) & (i >= 0) & (i < lon_e.size - 1)
    cell = np.where(ok, j * (lon_e.size - 1) + i, -1)
    ncell = (lat_e.size - 1) * (lon_e.size - 1)
    values = fine["tasmax"].values  # [T, y, x]
    a_cell = np.bincount(cell[ok], area[ok], minlength=ncell)
    means = np.stack(
        [
            np.bincount(cell[ok], (area * v[:, :, None, None])[ok], minlength=ncell) / a_cell
            for v in values
        ]
    )
    shape = (values.shape[0], lat_e.size - 1, lon_e.size - 1)
    return means.reshape(shape), a_cell.reshape(shape[1:])


@pytest.fixture(scope="module")
def sample_prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], PrepareResult]:
    """The sample's ESD pseudo-reality target file (1 year, seed 0), prepared on the covered grid.

    Only that one file is generated, on the sample writer's own code path (the whole sample
    takes ~15 s).
    """
    root = tmp_path_factory.mktemp("sample")
    writer = SampleWriter("ALPS", root, years=1, seed=0, overwrite=False)
    target = [root / "pr_tasmax_CNRM-CM5_1961-1980.nc"]
    writer._write(
        writer.target_dataset(writer.runs["train"], [1961]), target[0], {"tasmax": 1, "pr": 1}
    )
    out = root / "coarse.nc"
    res = prepare(
        target, out, coarse_grid="covered", device="cpu", stats_out=out.with_suffix(".json")
    )
    return target, res


def test_sample_tasmax_conserves_area_means(
    sample_prepared: tuple[list[Path], PrepareResult],
) -> None:
    target, res = sample_prepared
    fine = open_dataset(target, "tasmax").isel(time=slice(0, 5)).load()
    out = _open(res.path)
    assert res.variables == ["tasmax", "pr"] and res.shape == out["tasmax"].shape[1:]
    assert np.all(res.coverage == 1.0)
    truth, a_cell = _subcell_truth(fine, out)
    coarse = out["tasmax"].values[:5]
    lat_b = np.deg2rad(out["lat_bnds"].values)
    exact = (6371229.0**2 * np.abs(np.sin(lat_b[:, 1]) - np.sin(lat_b[:, 0])))[
        :, None
    ] * np.deg2rad(np.diff(out["lon_bnds"].values, axis=1)[:, 0])[None, :]
    # the fine sub-cells tile each coarse cell: areas agree with the exact spherical ones
    np.testing.assert_allclose(a_cell, exact, rtol=3e-3)
    # the area mean over the covered domain is conserved, and each cell holds its own mean
    mean_out = (coarse * exact).sum((1, 2)) / exact.sum()
    mean_fine = (truth * a_cell).sum((1, 2)) / a_cell.sum()
    np.testing.assert_allclose(mean_out, mean_fine, atol=2e-3)
    np.testing.assert_allclose(coarse, truth, atol=0.05)
    # stats are those of the output and of the fine fields (whole series: no train period)
    full = _open(res.path)
    assert res.stats.n_times == full.sizes["time"]
    np.testing.assert_allclose(
        res.stats.coarse["tasmax"].mean, float(full["tasmax"].mean()), rtol=1e-6
    )
    assert res.stats.fine["tasmax"].count == full.sizes["time"] * 128 * 128


def test_latlon_block_nesting_gives_cos_lat_block_means(tmp_path: Path) -> None:
    src = latlon_fine(tmp_path / "fine.nc")
    grid = xr.Dataset(
        coords={"lat": ("lat", 41.0 + 2 * np.arange(4)), "lon": ("lon", -3.0 + 2 * np.arange(5))}
    )
    res = prepare(src, tmp_path / "out.nc", coarse_grid=grid, device="cpu")
    out = _open(res.path)
    fine = xr.open_dataset(src, decode_times=TIME_CODER).load()
    for name in ("tasmax", "pr"):
        v = fine[name].values.astype(np.float64).reshape(20, 4, 8, 5, 8)
        cos = np.cos(np.deg2rad(fine["lat"].values)).reshape(4, 8)
        w = cos[None, :, :, None, None]
        expected = (v * w).sum((2, 4)) / (8 * cos.sum(1))[None, :, None]
        np.testing.assert_allclose(out[name].values, expected, rtol=2e-6, atol=1e-5)
        unweighted = v.mean((2, 4))
        assert np.abs(unweighted - expected).max() > 10 * np.abs(out[name].values - expected).max()


def test_nan_sources_are_left_out(tmp_path: Path) -> None:
    ds = xr.open_dataset(latlon_fine(tmp_path / "fine.nc", n=3), decode_times=TIME_CODER).load()
    grid = covered_coarse_grid(open_dataset(tmp_path / "fine.nc"))
    ref = _open(prepare(tmp_path / "fine.nc", tmp_path / "ref.nc", coarse_grid=grid).path)
    ds["tasmax"][0, 0:4, 0:8] = np.nan  # the southern half of cell (0, 0) on day 0
    ds["tasmax"][1, 0:8, 0:8] = np.nan  # all of it on day 1
    src = write_fine(ds, tmp_path / "holes.nc", "noleap")
    out = _open(prepare(src, tmp_path / "out.nc", coarse_grid=grid).path)["tasmax"].values
    v = ds["tasmax"].values[0, 4:8, 0:8].astype(np.float64)
    w = np.cos(np.deg2rad(ds["lat"].values[4:8]))[:, None]
    assert out[0, 0, 0] == pytest.approx((v * w).sum() / (w.sum() * 8), rel=1e-6)
    assert np.isnan(out[1, 0, 0]) and np.isnan(out).sum() == 1
    keep = np.ones(out.shape, bool)
    keep[:2, 0, 0] = False
    np.testing.assert_array_equal(out[keep], ref["tasmax"].values[keep])


# ----------------------------------------------------------------------------- streaming
def test_chunked_output_equals_one_shot(tmp_path: Path) -> None:
    src = lambert_fine(tmp_path / "fine.nc", n=30)
    kw = {"coarse_grid": "covered", "device": "cpu", "train_period": ("2000-01-05", "2000-01-25")}
    a = prepare(src, tmp_path / "a.nc", chunk_days=7, smoothing=3, **kw)
    b = prepare(src, tmp_path / "b.nc", chunk_days=1000, smoothing=3, **kw)
    calls: list[tuple[int, int]] = []
    prepare(src, tmp_path / "c.nc", chunk_days=7, progress=lambda d, t: calls.append((d, t)), **kw)
    assert calls == [(7, 30), (14, 30), (21, 30), (28, 30), (30, 30)]
    oa, ob = _open(a.path), _open(b.path)
    np.testing.assert_array_equal(oa["tasmax"].values, ob["tasmax"].values)
    assert not np.isnan(oa["tasmax"].values).any()
    for which in ("coarse", "fine"):
        for stat in ("mean", "std", "count"):
            x = getattr(getattr(a.stats, which)["tasmax"], stat)
            y = getattr(getattr(b.stats, which)["tasmax"], stat)
            assert x == pytest.approx(y, rel=1e-12)


def test_stats_use_the_training_period_only(tmp_path: Path) -> None:
    a = latlon_fine(tmp_path / "a.nc", n=40, seed=0)
    ds = xr.open_dataset(a, decode_times=TIME_CODER).load()
    changed = ds.copy(deep=True)
    changed["tasmax"][20:] += 50.0
    changed["pr"][20:] *= 3.0
    b = write_fine(changed, tmp_path / "b.nc", "noleap")
    period = ("2000-01-01", "2000-01-20")
    ra = prepare(
        a,
        tmp_path / "oa.nc",
        coarse_grid="covered",
        train_period=period,
        stats_out=tmp_path / "sa.json",
    )
    rb = prepare(
        b,
        tmp_path / "ob.nc",
        coarse_grid="covered",
        train_period=period,
        stats_out=tmp_path / "sb.nc",
    )
    assert ra.stats.n_times == 20 and ra.stats.period == ("2000-01-01", "2000-01-20")
    assert ra.stats.coarse == rb.stats.coarse and ra.stats.fine == rb.stats.fine
    # ... and are the plain statistics of that period
    fine = ds["tasmax"].values[:20].astype(np.float64)
    assert ra.stats.fine["tasmax"].mean == pytest.approx(fine.mean(), rel=1e-12)
    assert ra.stats.fine["tasmax"].std == pytest.approx(fine.std(), rel=1e-9)
    coarse = _open(ra.path)["tasmax"].values[:20].astype(np.float64)
    assert ra.stats.coarse["tasmax"].mean == pytest.approx(coarse.mean(), rel=1e-6)
    assert ra.stats.coarse["pr"].count == coarse.size
    # the whole series differs
    whole = prepare(b, tmp_path / "oc.nc", coarse_grid="covered")
    assert whole.stats.fine["tasmax"].mean > rb.stats.fine["tasmax"].mean + 20
    # written stats read back (JSON and NetCDF)
    assert load_stats(tmp_path / "sa.json") == ra.stats
    back = load_stats(tmp_path / "sb.nc")
    assert back.fine == rb.stats.fine and back.coarse == rb.stats.coarse
    assert json.loads((tmp_path / "sa.json").read_text())["variables"] == ["tasmax", "pr"]
    mean, std = back.arrays("coarse", ["pr", "tasmax"])
    assert mean[1] == rb.stats.coarse["tasmax"].mean and std.shape == (2,)


def test_train_period_errors(tmp_path: Path) -> None:
    src = latlon_fine(tmp_path / "fine.nc")
    with pytest.raises(DataError, match="outside the data"):
        prepare(src, tmp_path / "o.nc", coarse_grid="covered", train_period=("1961", "1980"))
    with pytest.raises(ConfigError, match="YYYY"):
        prepare(src, tmp_path / "o.nc", coarse_grid="covered", train_period=("2000/01", "2001"))
    with pytest.raises(ConfigError, match="after it ends"):
        prepare(src, tmp_path / "o.nc", coarse_grid="covered", train_period=("2001", "2000"))
    # partly covered: the covered part is used
    res = prepare(
        src, tmp_path / "o.nc", coarse_grid="covered", train_period=("1999", "2000-01-10")
    )
    assert res.stats.n_times == 10
    assert not list(tmp_path.glob(".*.tmp"))


# ----------------------------------------------------------------------------- CF output
@pytest.mark.parametrize("calendar", ["noleap", "360_day"])
def test_calendar_and_time_encoding_preserved(tmp_path: Path, calendar: str) -> None:
    src = latlon_fine(tmp_path / "fine.nc", n=70, calendar=calendar, start=2001)
    res = prepare(src, tmp_path / "out.nc", coarse_grid="covered", chunk_days=30)
    out = _open(res.path)
    assert out["time"].encoding["calendar"] == calendar
    assert out["time"].encoding["units"] == "days since 1990-01-01"
    assert all(d.calendar == calendar for d in out["time"].values)
    np.testing.assert_array_equal(out["time"].values, cf_dates(70, calendar, 2001))


def test_output_is_cf(sample_prepared: tuple[list[Path], PrepareResult]) -> None:
    target, res = sample_prepared
    out = xr.open_dataset(res.path, decode_times=TIME_CODER)
    assert out.attrs["Conventions"] == "CF-1.10"
    assert __version__ in out.attrs["history"] and __version__ in out.attrs["source"]
    assert all(str(t) in out.attrs["source"] for t in target)
    assert "climdl_coverage" in out.attrs and "climdl_coverage" in out
    assert out.cf["latitude"].name == "lat" and out.cf["longitude"].name == "lon"
    assert out.cf["T"].name == "time"
    assert out.cf.bounds["lat"] == ["lat_bnds"] and out.cf.bounds["lon"] == ["lon_bnds"]
    lat_b = out["lat_bnds"].values
    assert np.all(np.diff(out["lat"].values) > 0)
    np.testing.assert_allclose(lat_b.mean(1), out["lat"].values)
    np.testing.assert_array_equal(lat_b[1:, 0], lat_b[:-1, 1])
    units = {"tasmax": "K", "pr": "mm day-1"}
    for name, var in out.data_vars.items():
        if name in units:
            assert var.dims == ("time", "lat", "lon")
            assert var.attrs["units"] == units[name] and var.attrs["standard_name"]
            assert var.attrs["long_name"] and "area: mean" in var.attrs["cell_methods"]
            assert var.encoding["zlib"] and var.dtype == np.float32
    assert out["tasmax"].attrs["cell_methods"] == "time: maximum area: mean"
    # the reader reads it back in canonical form
    back = open_dataset(res.path)
    assert list(back.data_vars) == ["tasmax", "pr"] and back["pr"].attrs["units"] == "mm day-1"
    stats = json.loads(res.path.with_suffix(".json").read_text())
    assert set(stats["coarse"]) == set(stats["fine"]) == {"tasmax", "pr"}


# ----------------------------------------------------------------------------- coverage
def test_coverage_check_and_nan_where_uncovered(tmp_path: Path) -> None:
    src = lambert_fine(tmp_path / "fine.nc", n=3)
    with pytest.raises(DataError, match="--min-coverage"):
        prepare(src, tmp_path / "o.nc", coarse_grid="ALPS")
    assert not list(tmp_path.glob("o.nc")) and not list(tmp_path.glob(".*.tmp"))
    res = prepare(src, tmp_path / "o.nc", coarse_grid="ALPS", min_coverage=0.0, smoothing=3)
    out = _open(res.path)
    cov = out["climdl_coverage"].values
    assert cov.shape == (16, 16) and cov.max() == 1.0 and cov.min() == 0.0
    data = out["tasmax"].values
    assert np.all(np.isnan(data[:, cov == 0])) and np.all(np.isfinite(data[:, cov > 0]))


def test_covered_grid_is_fully_covered_and_maximal(tmp_path: Path) -> None:
    ds = open_dataset(lambert_fine(tmp_path / "fine.nc", n=2))
    grid = covered_coarse_grid(ds, step=2.0)
    assert grid.sizes["lat"] * grid.sizes["lon"] >= 6 * 8
    res = prepare(tmp_path / "fine.nc", tmp_path / "o.nc", coarse_grid=grid, min_coverage=1.0)
    assert np.all(res.coverage == 1.0)
    # lat/lon fine grid: the 2-degree cells nest exactly into lat 40..48, lon -4..6
    ll = covered_coarse_grid(open_dataset(latlon_fine(tmp_path / "ll.nc")), step=2.0)
    assert (ll.sizes["lat"], ll.sizes["lon"]) == (4, 5)
    # the same grid given as a file (latitudes north to south) gives the same output
    path = tmp_path / "grid.nc"
    assert grid["lat"].attrs["bounds"] == "lat_bnds"
    grid.isel(lat=slice(None, None, -1)).to_netcdf(path)
    res2 = prepare(tmp_path / "fine.nc", tmp_path / "o2.nc", coarse_grid=str(path))
    np.testing.assert_array_equal(
        _open(res.path)["tasmax"].values, _open(res2.path)["tasmax"].values
    )


def test_smooth_edges_and_nans() -> None:
    x = torch.full((2, 1, 4, 5), 3.0, dtype=torch.float64)
    x[1, 0, 0, 0] = torch.nan
    y = smooth(x, 3)
    assert torch.isnan(y[1, 0, 0, 0]) and torch.allclose(
        y[~torch.isnan(y)], torch.tensor(3.0).double()
    )
    z = torch.arange(20, dtype=torch.float64).reshape(4, 5)
    s = smooth(z, 3)
    assert s[0, 0] == pytest.approx((0 + 1 + 5 + 6) / 4)  # truncated window at the corner
    assert s[1, 1] == pytest.approx(z[:3, :3].mean().item())
    area = torch.tensor([1.0, 1.0, 1.0, 3.0], dtype=torch.float64)[:, None].expand(4, 5)
    assert smooth(z, 3, area)[3, 0] == pytest.approx((10 + 11 + 3 * 15 + 3 * 16) / 8)
    assert torch.equal(smooth(z, 0), z)
    with pytest.raises(ConfigError, match="odd"):
        smooth(z, 2)


# ----------------------------------------------------------------------------- errors
def test_existing_output_refused_without_overwrite(tmp_path: Path) -> None:
    src = latlon_fine(tmp_path / "fine.nc")
    out = tmp_path / "out.nc"
    out.write_text("keep me")
    with pytest.raises(OutputError, match="overwrite"):
        prepare(src, out, coarse_grid="covered")
    assert out.read_text() == "keep me"
    stats = tmp_path / "stats.json"
    stats.write_text("{}")
    with pytest.raises(OutputError, match=r"stats\.json"):
        prepare(src, tmp_path / "new.nc", coarse_grid="covered", stats_out=stats)
    assert not (tmp_path / "new.nc").exists()
    prepare(src, out, coarse_grid="covered", overwrite=True, stats_out=stats)
    assert _open(out).sizes["time"] == 20 and json.loads(stats.read_text())["n_times"] == 20
    with pytest.raises(ConfigError, match="input files"):
        prepare(src, src, coarse_grid="covered", overwrite=True)


def test_no_temp_file_left_after_failure(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    src = latlon_fine(tmp_path / "in" / "fine.nc")
    out_dir = tmp_path / "out"

    def boom(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare(src, out_dir / "o.nc", coarse_grid="covered", chunk_days=5, progress=boom,
                stats_out=out_dir / "s.json")  # fmt: skip
    assert list(out_dir.iterdir()) == []


def test_clear_errors(tmp_path: Path) -> None:
    odd = xr.Dataset(
        {"foo": (("time", "lat", "lon"), np.zeros((2, 3, 4), np.float32))},
        coords={
            "time": ("time", cf_dates(2, "noleap")),
            "lat": [1.0, 2.0, 3.0],
            "lon": [0.0, 1, 2, 3],
        },
    )
    path = write_fine(odd, tmp_path / "odd.nc", "noleap")
    with pytest.raises(DataError, match="no variable climdl recognises"):
        prepare(path, tmp_path / "o.nc", coarse_grid="covered")
    src = latlon_fine(tmp_path / "fine.nc")
    with pytest.raises(DataError, match="not found"):
        prepare(src, tmp_path / "o.nc", coarse_grid="covered", variables=["tas"])
    with pytest.raises(ConfigError, match="neither a domain"):
        prepare(src, tmp_path / "o.nc", coarse_grid="nowhere")
    with pytest.raises(ConfigError, match="odd"):
        prepare(src, tmp_path / "o.nc", coarse_grid="covered", smoothing=2)
    with pytest.raises(ConfigError, match=r"\*\.json"):
        prepare(src, tmp_path / "o.nc", coarse_grid="covered", stats_out=tmp_path / "s.txt")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            prepare(src, tmp_path / "o.nc", coarse_grid="covered", device="cuda")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fine.nc", "odd.nc"]


@pytest.mark.gpu
def test_cuda_matches_cpu(tmp_path: Path) -> None:
    src = lambert_fine(tmp_path / "fine.nc", n=10)
    a = prepare(src, tmp_path / "a.nc", coarse_grid="covered", device="cpu", smoothing=3)
    b = prepare(src, tmp_path / "b.nc", coarse_grid="covered", device="cuda", smoothing=3)
    assert b.device.startswith("cuda")
    np.testing.assert_allclose(
        _open(a.path)["tasmax"].values, _open(b.path)["tasmax"].values, rtol=1e-6
    )
    assert a.stats.fine["tasmax"].mean == pytest.approx(b.stats.fine["tasmax"].mean, rel=1e-12)
