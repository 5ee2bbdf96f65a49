"""Rotated-pole grids: the rotation, the EUR12-ROT sample domain, exact areas, conservative
upscaling on the sphere and ``climdl prepare`` on rlat/rlon grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyproj
import pytest
import torch
import xarray as xr

from climdl.data.grids import EUR11_RLAT0, EUR11_RLON0, EUR11_STEP, coarse_grid, target_grid
from climdl.data.prepare import prepare
from climdl.data.prepare_grids import covered_coarse_grid, fine_grid
from climdl.data.sample_grids import sample_domain
from climdl.data.spec import Grid
from climdl.errors import ConfigError, DataError
from climdl.evaluation.spectra import grid_spacing_km
from climdl.inference.output import grid_coords, space_dims
from climdl.preprocess import LatLonGrid, apply_regrid, conservative_weights
from climdl.preprocess.grids import (
    EARTH_RADIUS,
    RotatedGrid,
    geographic_to_rotated,
    rotated_to_geographic,
)

POLE = (39.25, -162.0)


@pytest.fixture(scope="module")
def rot_grid() -> xr.Dataset:
    return target_grid("EUR12-ROT")


@pytest.fixture(scope="module")
def rotated(rot_grid: xr.Dataset) -> RotatedGrid:
    return RotatedGrid.from_dataset(rot_grid)


def _coarse(name: str = "EUR12-ROT") -> LatLonGrid:
    c = coarse_grid(name)
    return LatLonGrid(
        np.append(c.lat_bnds.values[:, 0], c.lat_bnds.values[-1, 1]),
        np.append(c.lon_bnds.values[:, 0], c.lon_bnds.values[-1, 1]),
    )


# ----------------------------------------------------------------------------- rotation
@pytest.mark.parametrize("offset", [0.0, 25.0])
def test_rotation_matches_cartopy_and_inverts(offset: float) -> None:
    import cartopy.crs as ccrs

    rlon, rlat = np.meshgrid(np.linspace(-30, 20, 11), np.linspace(-25, 25, 9))
    lon, lat = rotated_to_geographic(rlon, rlat, *POLE, offset)
    rp = ccrs.RotatedPole(
        pole_longitude=POLE[1], pole_latitude=POLE[0], central_rotated_longitude=offset
    )
    ref = ccrs.PlateCarree().transform_points(rp, rlon, rlat)
    np.testing.assert_allclose(lat, ref[..., 1], atol=1e-9)
    np.testing.assert_allclose(np.mod(lon - ref[..., 0] + 180, 360) - 180, 0.0, atol=1e-9)
    back = geographic_to_rotated(lon, lat, *POLE, offset)
    np.testing.assert_allclose(back[0], rlon, atol=1e-9)
    np.testing.assert_allclose(back[1], rlat, atol=1e-9)


# ----------------------------------------------------------------------------- the sample domain
def test_eur12_rot_is_a_window_of_the_eur11_grid(rot_grid: xr.Dataset) -> None:
    assert sample_domain("eur12-rot") == ("EUR12-ROT", 128)
    assert rot_grid.lat.dims == ("rlat", "rlon") and rot_grid.lat.shape == (128, 128)
    for axis, first in (("rlon", EUR11_RLON0), ("rlat", EUR11_RLAT0)):
        k = (rot_grid[axis].values - first) / EUR11_STEP
        np.testing.assert_allclose(k, np.round(k), atol=1e-6)  # on the EUR-11 lattice
        np.testing.assert_allclose(np.diff(rot_grid[axis].values), EUR11_STEP, atol=1e-9)
    assert rot_grid.rlon.min() >= -28.375 and rot_grid.rlon.max() <= 18.155
    assert rot_grid.rlat.min() >= -23.375 and rot_grid.rlat.max() <= 21.835
    assert rot_grid.rlat.attrs["standard_name"] == "grid_latitude"
    assert rot_grid.rlon.attrs["standard_name"] == "grid_longitude"
    assert rot_grid.rlon.attrs["units"] == "degrees"
    gm = rot_grid["crs"].attrs
    assert gm["grid_mapping_name"] == "rotated_latitude_longitude"
    assert (gm["grid_north_pole_latitude"], gm["grid_north_pole_longitude"]) == POLE
    assert gm["earth_radius"] == EARTH_RADIUS
    # centred on the Alps, and the 2-degree predictor box (ALPS's) covers it with room to spare
    assert abs(float(rot_grid.lon[64, 64]) - 10.0) < 0.2
    assert abs(float(rot_grid.lat[64, 64]) - 46.5) < 0.2
    c = coarse_grid("EUR12-ROT")
    assert float(c.lat_bnds.min()) + 2 < float(rot_grid.lat.min())
    assert float(rot_grid.lat.max()) < float(c.lat_bnds.max()) - 2
    assert float(c.lon_bnds.min()) + 2 < float(rot_grid.lon.min())
    assert float(rot_grid.lon.max()) < float(c.lon_bnds.max()) - 2


def test_rotated_domain_has_the_benchmark_size_only() -> None:
    with pytest.raises(ConfigError, match="ALPS only"):
        sample_domain("EUR12-ROT", 256)


def test_the_spec_grid_keeps_rlat_rlon_for_the_output(rot_grid: xr.Dataset) -> None:
    grid = Grid.from_dict(Grid.from_dataset(rot_grid).to_dict())
    assert grid.shape == (128, 128) and grid.axes == ("rlat", "rlon")
    assert space_dims(grid) == ("rlat", "rlon")
    coords = grid_coords(grid)
    assert list(coords) == ["rlat", "rlon", "lat", "lon"]
    np.testing.assert_array_equal(coords["rlon"].values, rot_grid.rlon.values)
    assert coords["rlat"].attrs["standard_name"] == "grid_latitude"
    assert grid.mapping is not None and grid.mapping.name == "crs"


def test_spectrum_spacing_is_rotated_degrees_on_the_sphere(rot_grid: xr.Dataset) -> None:
    da = xr.DataArray(
        np.zeros((1, 128, 128)), dims=("time", "rlat", "rlon"), coords=rot_grid.coords
    )
    dy, dx = grid_spacing_km(da)
    step = EARTH_RADIUS / 1000 * np.deg2rad(EUR11_STEP)  # 12.23 km
    assert dy == pytest.approx(step, rel=1e-9)
    assert dx == pytest.approx(step * np.cos(np.deg2rad(float(rot_grid.rlat.mean()))), rel=1e-9)


# ----------------------------------------------------------------------------- areas
def test_cell_areas_are_exact_on_the_sphere(rotated: RotatedGrid) -> None:
    areas = rotated.cell_areas()
    x0, x1 = rotated.rlon_bounds[[0, -1]]
    s0, s1 = np.sin(np.deg2rad(rotated.rlat_bounds[[0, -1]]))
    box = EARTH_RADIUS**2 * np.deg2rad(x1 - x0) * (s1 - s0)
    assert areas.sum() == pytest.approx(box, rel=1e-12)
    # independently: geodesic polygon areas of the true lon/lat outlines (edges densified)
    geod = pyproj.Geod(a=EARTH_RADIUS, b=EARTH_RADIUS)
    t = np.linspace(0.0, 1.0, 200)
    for j, i in ((0, 0), (64, 64), (127, 127), (0, 127)):
        (xa, xb), (ya, yb) = rotated.rlon_bounds[i : i + 2], rotated.rlat_bounds[j : j + 2]
        xs = np.concatenate(
            [xa + t * (xb - xa), np.full(200, xb), xb - t * (xb - xa), np.full(200, xa)]
        )
        ys = np.concatenate(
            [np.full(200, ya), ya + t * (yb - ya), np.full(200, yb), yb - t * (yb - ya)]
        )
        lon, lat = rotated.to_geographic(xs, ys)
        area, _ = geod.polygon_area_perimeter(lon, lat)
        assert abs(area) == pytest.approx(areas[j, i], rel=1e-9)
    # sub-cells tile their cells exactly
    sub = np.concatenate([a.sum(axis=(2, 3)) for *_, a in rotated.iter_subcells(4)])
    np.testing.assert_allclose(sub, areas, rtol=1e-12)


# ----------------------------------------------------------------------------- upscaling
def test_conservative_upscaling_conserves_the_area_integral(rotated: RotatedGrid) -> None:
    dst = _coarse()
    weights = conservative_weights(rotated, dst, k=8, min_coverage=None, cache=False)
    lon, lat = rotated.to_geographic(
        0.5 * (rotated.rlon_bounds[1:] + rotated.rlon_bounds[:-1])[None, :],
        0.5 * (rotated.rlat_bounds[1:] + rotated.rlat_bounds[:-1])[:, None],
    )
    field = 280.0 + 8.0 * np.sin(np.deg2rad(3 * lon)) * np.cos(np.deg2rad(5 * lat)) + 0.1 * lat
    area = rotated.cell_areas()
    y = apply_regrid(weights, torch.from_numpy(field), nan_aware=False).numpy()
    assert weights.overlap is not None
    overlap = weights.overlap.numpy()
    fine_integral = float((field * area).sum())
    coarse_integral = float(np.nansum(y * overlap))
    error = abs(coarse_integral - fine_integral) / abs(fine_integral)
    assert error < 1e-6, f"relative area-integral error {error:.2e}"
    # every sub-cell landed in a coarse cell: the received areas are the domain's exact area
    assert overlap.sum() == pytest.approx(area.sum(), rel=1e-12)
    # and they agree with the coarse cells' true areas times the sampled coverage, up to the
    # sub-cell strips along the coarse cells' edges (1.4 km sub-cells, ~200 km cells)
    true = dst.cell_areas() * weights.coverage.numpy()
    assert overlap.sum() == pytest.approx(true.sum(), rel=2e-3)
    inside = weights.coverage.numpy() == 1.0
    assert inside.sum() >= 20
    np.testing.assert_allclose(overlap[inside], true[inside], rtol=1e-2)
    # a constant stays constant where the domain reaches
    ones = apply_regrid(weights, torch.ones(128, 128, dtype=torch.float64), nan_aware=False)
    reached = overlap > 0
    np.testing.assert_allclose(ones.numpy()[reached], 1.0, rtol=1e-12)
    assert np.isnan(ones.numpy()[~reached]).all() and (~reached).any()


def test_fine_grid_reads_rlat_rlon_and_refuses_a_mapping_without_pole(
    rot_grid: xr.Dataset,
) -> None:
    grid, dims = fine_grid(rot_grid)
    assert isinstance(grid, RotatedGrid) and dims == ("rlat", "rlon")
    assert grid.pole == (*POLE, 0.0) and grid.radius == EARTH_RADIUS
    broken = rot_grid.copy()
    broken["crs"] = broken["crs"].copy()
    broken["crs"].attrs = {"grid_mapping_name": "rotated_latitude_longitude"}
    with pytest.raises(DataError, match="lacks a usable pole"):
        fine_grid(broken)


def test_covered_coarse_grid_lies_inside_the_rotated_domain(
    rot_grid: xr.Dataset, rotated: RotatedGrid
) -> None:
    covered = covered_coarse_grid(rot_grid, 2.0)
    assert covered.lat.size * covered.lon.size >= 30
    lat_e = np.append(covered.lat_bnds.values[:, 0], covered.lat_bnds.values[-1, 1])
    lon_e = np.append(covered.lon_bnds.values[:, 0], covered.lon_bnds.values[-1, 1])
    lon, lat = np.meshgrid(
        np.linspace(lon_e[0], lon_e[-1], 50), np.linspace(lat_e[0], lat_e[-1], 50)
    )
    assert rotated.contains(lon, lat).all()


def test_prepare_upscales_a_rotated_pole_file(rot_grid: xr.Dataset, tmp_path: Path) -> None:
    days = 3
    rng = np.random.default_rng(0)
    values = 280.0 + rng.standard_normal((days, 128, 128)).astype(np.float32)
    ds = xr.Dataset(coords=rot_grid.coords)
    ds["crs"] = rot_grid["crs"]
    ds = ds.assign_coords(
        time=(
            "time",
            np.arange(days, dtype=float),
            {"units": "days since 1961-01-01 12:00", "calendar": "standard"},
        )
    )
    ds["tasmax"] = xr.DataArray(
        values,
        dims=("time", "rlat", "rlon"),
        attrs={"standard_name": "air_temperature", "units": "K", "grid_mapping": "crs"},
    )
    fine = tmp_path / "tasmax_EUR12-ROT.nc"
    ds.to_netcdf(fine)
    out = tmp_path / "coarse.nc"
    prepare(fine, out, coarse_grid="covered", device="cpu")
    with xr.open_dataset(out) as got:
        assert got.tasmax.dims == ("time", "lat", "lon") and got.sizes["time"] == days
        covered = covered_coarse_grid(rot_grid, 2.0)
        np.testing.assert_allclose(got.lat.values, covered.lat.values)
        rotated = RotatedGrid.from_dataset(rot_grid)
        dst = LatLonGrid(
            np.append(covered.lat_bnds.values[:, 0], covered.lat_bnds.values[-1, 1]),
            np.append(covered.lon_bnds.values[:, 0], covered.lon_bnds.values[-1, 1]),
        )
        w = conservative_weights(rotated, dst, min_coverage=None)
        expected = apply_regrid(w, torch.from_numpy(values.astype(np.float64))).numpy()
        np.testing.assert_allclose(got.tasmax.values, expected, rtol=1e-6)
