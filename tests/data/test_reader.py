"""Tests of the CF-aware reader on tiny synthetic NetCDF files, one per real-world quirk."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array
import numpy as np
import pytest
import xarray as xr

from climdl.data import units as cunits
from climdl.data.reader import open_dataset
from climdl.data.variables import (
    G0,
    ML_BENCH_PREDICTORS,
    canonical_attrs,
    canonical_units,
    identify,
)
from climdl.errors import DataError

TEMPLATES = Path("/work/shared/data/cordex-ml-bench-templates")
LAT = np.array([44.0, 45.0, 46.0, 47.0])
LON = np.array([5.0, 6.0, 7.0, 8.0, 9.0])


def write(
    path: Path,
    data_vars: Mapping[str, tuple[Sequence[str], Any, Mapping[str, Any]]],
    *,
    time: Sequence[float] | None = tuple(range(6)),
    calendar: str = "standard",
    time_units: str = "days since 2000-01-01",
    lat: np.ndarray = LAT,
    lon: np.ndarray = LON,
    coords: Mapping[str, Any] | None = None,
    encoding: Mapping[str, Any] | None = None,
    fmt: str = "NETCDF4",
) -> Path:
    """Write a small NetCDF file; ``data`` may be a fill value (broadcast to the dims' shape)."""
    all_coords: dict[str, Any] = {
        "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
        "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"}),
    }
    if time is not None:
        all_coords["time"] = (
            "time",
            np.asarray(time, dtype="f8"),
            {"units": time_units, "calendar": calendar, "standard_name": "time"},
        )
    all_coords.update(coords or {})
    ds = xr.Dataset(coords=all_coords)
    for name, (dims, data, attrs) in data_vars.items():
        shape = tuple(ds.sizes[d] for d in dims)
        arr = np.broadcast_to(np.asarray(data), shape).copy()
        ds[name] = (tuple(dims), arr, dict(attrs))
    ds.to_netcdf(path, format=fmt, encoding=dict(encoding or {}))
    return path


TLL = ("time", "lat", "lon")


def field(seed: int = 0, base: float = 0.0) -> np.ndarray:
    """Deterministic (time, lat, lon) values, distinct per cell so reordering is visible."""
    return base + np.arange(6 * 4 * 5, dtype="f8").reshape(6, 4, 5) * 0.1 + seed


# --- recognition and units -----------------------------------------------------------------


def test_standard_name_with_odd_name_and_degc(tmp_path: Path) -> None:
    attrs = {"standard_name": "air_temperature", "cell_methods": "time: maximum", "units": "degC"}
    p = write(tmp_path / "a.nc", {"my_weird_T": (TLL, field(), attrs)})
    ds = open_dataset(p)
    assert list(ds.data_vars) == ["tasmax"]
    assert ds.tasmax.dtype == np.float32
    np.testing.assert_allclose(ds.tasmax.values, field() + 273.15, rtol=1e-6)
    assert ds.tasmax.attrs["units"] == "K"
    assert ds.tasmax.attrs["climdl_source_name"] == "my_weird_T"
    assert ds.tasmax.attrs["standard_name"] == "air_temperature"


def test_cell_methods_distinguish_tas_tasmin_tasmax(tmp_path: Path) -> None:
    sn = {"standard_name": "air_temperature", "units": "K"}
    p = write(
        tmp_path / "a.nc",
        {
            "a": (TLL, 280.0, {**sn, "cell_methods": "time: minimum"}),
            "b": (TLL, 290.0, {**sn, "cell_methods": "time: mean"}),
            "TMAX": (TLL, 300.0, {"units": "K"}),
        },
    )
    ds = open_dataset(p)
    assert ds.tasmin.attrs["climdl_source_name"] == "a"
    assert ds.tas.attrs["climdl_source_name"] == "b"
    assert float(ds.tasmax[0, 0, 0]) == 300.0


@pytest.mark.parametrize(
    ("units", "value", "expected"),
    [("K", 300.0, 300.0), ("degC", 26.85, 300.0), ("degF", 80.33, 300.0), ("Kelvin", 300, 300)],
)
def test_temperature_units(tmp_path: Path, units: str, value: float, expected: float) -> None:
    p = write(tmp_path / "t.nc", {"tas": (TLL, value, {"units": units})})
    np.testing.assert_allclose(open_dataset(p).tas.values, expected, atol=1e-3)


@pytest.mark.parametrize(
    ("name", "attrs", "value", "expected"),
    [
        ("pr", {"units": "kg m-2 s-1"}, 1e-4, 8.64),
        ("rain", {"standard_name": "precipitation_flux", "units": "kg m-2 s-1"}, 1e-4, 8.64),
        ("RR", {"units": "mm/day"}, 3.0, 3.0),
        ("tp", {"units": "m"}, 0.002, 2.0),  # daily amount in m of water
        ("prcp", {"standard_name": "precipitation_amount", "units": "kg m-2"}, 4.0, 4.0),
        ("precip", {"units": "mm s-1"}, 1e-4, 8.64),
    ],
)
def test_precipitation_units(
    tmp_path: Path, name: str, attrs: dict[str, str], value: float, expected: float
) -> None:
    p = write(tmp_path / "p.nc", {name: (TLL, value, attrs)})
    ds = open_dataset(p, "pr")
    np.testing.assert_allclose(ds.pr.values, expected, rtol=1e-5)
    assert ds.pr.attrs["units"] == "mm day-1"


def test_precipitation_amount_per_6h_step(tmp_path: Path) -> None:
    p = write(tmp_path / "p.nc", {"tp": (TLL, 0.001, {"units": "m"})}, time=[0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(open_dataset(p).pr.values, 4.0, rtol=1e-5)


def test_geopotential_height_and_level_names(tmp_path: Path) -> None:
    p = write(
        tmp_path / "p.nc",
        {
            "zg500": (TLL, 5500.0, {"units": "m"}),
            "t850": (TLL, 280.0, {"units": "K"}),
            "ua_700": (TLL, 10.0, {"units": "m/s"}),
            "hus850": (TLL, 5.0, {"units": "g kg-1"}),
            "z_700": (TLL, 30000.0, {"units": "m2 s-2"}),
        },
    )
    ds = open_dataset(p)
    assert list(ds.data_vars) == ["z_500", "z_700", "t_850", "u_700", "q_850"]
    np.testing.assert_allclose(ds.z_500.values, 5500.0 * G0, rtol=1e-6)
    np.testing.assert_allclose(ds.q_850.values, 0.005, rtol=1e-6)
    assert ds.z_500.attrs["units"] == "m2 s-2"
    assert ds.z_500.attrs["long_name"] == "Geopotential at 500 hPa"


def test_4d_cmip_variable_split_by_level(tmp_path: Path) -> None:
    plev = np.array([85000.0, 70000.0, 50000.0])
    ta = np.broadcast_to(np.array([280.0, 270.0, 250.0])[None, :, None, None], (6, 3, 4, 5))
    p = write(
        tmp_path / "ta.nc",
        {
            "ta": (("time", "plev", "lat", "lon"), ta, {"units": "K"}),
            "hus": (("time", "plev", "lat", "lon"), 4.0, {"standard_name": "specific_humidity"}),
        },
        coords={"plev": ("plev", plev, {"units": "Pa", "axis": "Z"})},
    )
    ds = open_dataset(p, assume_units={"hus": "g/kg"})
    assert set(ds.data_vars) == {"t_500", "t_700", "t_850", "q_500", "q_700", "q_850"}
    assert float(ds.t_850[0, 0, 0]) == 280.0 and float(ds.t_500[0, 0, 0]) == 250.0
    np.testing.assert_allclose(ds.q_700.values, 0.004, rtol=1e-6)
    assert "plev" not in ds.coords and ds.t_850.dims == TLL
    sub = open_dataset(p, ["t_700"])
    assert list(sub.data_vars) == ["t_700"]
    sub = open_dataset(p, ["q_850", "tasmax", "t_500"], strict=False)  # tasmax absent: warned
    assert list(sub.data_vars) == ["q_850", "t_500"]
    with pytest.raises(DataError, match=r"t_925 not found.*no 925 hPa level.*850, 700, 500"):
        open_dataset(p, ["t_925"])


def test_4d_by_standard_name_in_hpa(tmp_path: Path) -> None:
    p = write(
        tmp_path / "g.nc",
        {
            "gph": (
                ("time", "level", "lat", "lon"),
                1500.0,
                {"standard_name": "geopotential_height", "units": "m"},
            )
        },
        coords={"level": ("level", np.array([500, 850]), {"units": "hPa"})},
    )
    ds = open_dataset(p, ["z_850"])
    np.testing.assert_allclose(ds.z_850.values, 1500.0 * G0, rtol=1e-6)
    with pytest.raises(DataError, match="700 hPa"):
        open_dataset(p)  # default levels 500, 700, 850
    ds = open_dataset(p, strict=False)
    assert set(ds.data_vars) == {"z_500", "z_850"}


def test_static_fields_orography_and_land_fraction_percent(tmp_path: Path) -> None:
    p = write(
        tmp_path / "s.nc",
        {
            "HSURF": (("lat", "lon"), 1200.0, {"units": "m"}),
            "mask": (("lat", "lon"), 50.0, {"standard_name": "land_area_fraction", "units": "%"}),
        },
        time=None,
    )
    ds = open_dataset(p)
    assert "time" not in ds.dims
    np.testing.assert_allclose(ds.sftlf.values, 0.5)
    assert ds.orog.attrs["standard_name"] == "surface_altitude"


def test_missing_units_assumed_or_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = write(tmp_path / "p.nc", {"pr": (TLL, 1e-4, {})})
    np.testing.assert_allclose(
        open_dataset(p, assume_units={"pr": "kg m-2 s-1"}).pr, 8.64, rtol=1e-5
    )
    with caplog.at_level(logging.WARNING):
        np.testing.assert_allclose(open_dataset(p).pr.values, 1e-4, rtol=1e-5)
    assert "no units" in caplog.text


def test_unit_conversion_stays_lazy_and_float32() -> None:
    da = xr.DataArray(dask.array.ones((4, 3), chunks=2, dtype="f4"), dims=("time", "x"))
    da.attrs["units"] = "degC"
    out = cunits.to_canonical(da, "tas", source="t")
    assert isinstance(out.data, dask.array.Array) and out.dtype == np.float32
    assert out.attrs["climdl_source_units"] == "degC"
    np.testing.assert_allclose(out.values, 274.15)


def test_variable_table() -> None:
    assert len(ML_BENCH_PREDICTORS) == 15
    assert ML_BENCH_PREDICTORS[:4] == ("z_500", "z_700", "z_850", "t_500")
    assert ML_BENCH_PREDICTORS[-1] == "q_850"
    assert canonical_units("pr") == "mm day-1" and canonical_units("z_500") == "m2 s-2"
    assert canonical_attrs("tasmax")["cell_methods"] == "time: maximum"
    assert identify("ta", {}, vertical=True) is not None
    assert identify("t2m", {}, vertical=False).name == "tas"  # type: ignore[union-attr]
    with pytest.raises(KeyError):
        canonical_attrs("nonsense")


# --- times and calendars ---------------------------------------------------------------------


@pytest.mark.parametrize("calendar", ["noleap", "365_day", "360_day", "all_leap", "standard"])
def test_calendars_preserved(tmp_path: Path, calendar: str) -> None:
    p = write(tmp_path / "c.nc", {"tas": (TLL, 280.0, {"units": "K"})}, calendar=calendar)
    ds = open_dataset(p)
    assert ds.time.dt.calendar == {"365_day": "noleap"}.get(calendar, calendar)
    assert ds.time.encoding["calendar"] == calendar


def test_time_range_in_360_day_calendar(tmp_path: Path) -> None:
    p = write(
        tmp_path / "c.nc",
        {"tas": (TLL, 280.0, {"units": "K"})},
        time=[57, 58, 59, 60, 61, 62],  # 2000-02-28 .. 2000-03-03 in 360_day
        calendar="360_day",
    )
    ds = open_dataset(p, time_range=("2000-02-29", "2000-03-01"))
    assert [str(t)[:10] for t in ds.time.values] == ["2000-02-29", "2000-02-30", "2000-03-01"]
    with pytest.raises(DataError, match="selects no time steps"):
        open_dataset(p, time_range=("2001-01-01", "2001-12-30"))


def test_duplicate_times_rejected(tmp_path: Path) -> None:
    p = write(tmp_path / "d.nc", {"tas": (TLL, 280.0, {"units": "K"})}, time=[0, 1, 2, 2, 3, 4])
    with pytest.raises(DataError, match=r"d\.nc.*not strictly increasing.*2000-01-03"):
        open_dataset(p)


def test_non_monotonic_times_rejected(tmp_path: Path) -> None:
    p = write(tmp_path / "d.nc", {"tas": (TLL, 280.0, {"units": "K"})}, time=[0, 1, 3, 2, 4, 5])
    with pytest.raises(DataError, match="not strictly increasing"):
        open_dataset(p)


def test_overlapping_files_rejected(tmp_path: Path) -> None:
    a = write(tmp_path / "a.nc", {"tas": (TLL, 280.0, {"units": "K"})}, time=range(6))
    b = write(tmp_path / "b.nc", {"tas": (TLL, 280.0, {"units": "K"})}, time=range(5, 11))
    with pytest.raises(DataError, match=r"a\.nc and .*b\.nc overlap in time"):
        open_dataset([a, b])


# --- multi-file, laziness ----------------------------------------------------------------------


def test_multi_file_glob_is_lazy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for year in (2001, 2000):  # written out of order: combining sorts by time
        write(
            tmp_path / f"tasmax_{year}.nc",
            {"tasmax": (TLL, field(year - 2000, 280.0), {"units": "K"})},
            time_units=f"days since {year}-01-01",
            calendar="noleap",
        )
    write(tmp_path / "static.nc", {"orog": (("lat", "lon"), 100.0, {"units": "m"})}, time=None)
    from xarray.backends import netCDF4_

    reads: list[str] = []
    original = netCDF4_.NetCDF4ArrayWrapper._getitem

    def spy(self: Any, key: Any) -> Any:
        reads.append(self.variable_name)
        return original(self, key)

    monkeypatch.setattr(netCDF4_.NetCDF4ArrayWrapper, "_getitem", spy)
    ds = open_dataset(str(tmp_path / "*.nc"), chunks={"time": 4})
    assert "tasmax" not in reads and "orog" not in reads  # nothing but coordinates read
    assert isinstance(ds.tasmax.data, dask.array.Array)
    assert ds.tasmax.chunks == ((4, 2, 4, 2), (4,), (5,))
    assert ds.sizes["time"] == 12 and ds.time.dt.calendar == "noleap"
    assert str(ds.time.values[6])[:10] == "2001-01-01"
    np.testing.assert_allclose(ds.tasmax[7].values, field(1, 280.0)[1], rtol=1e-6)
    assert set(ds.data_vars) == {"tasmax", "orog"}


# --- horizontal grids -------------------------------------------------------------------------


def test_descending_latitude_sorted(tmp_path: Path) -> None:
    p = write(tmp_path / "l.nc", {"tas": (TLL, field(), {"units": "K"})}, lat=LAT[::-1])
    ds = open_dataset(p)
    np.testing.assert_array_equal(ds.lat.values, LAT)
    np.testing.assert_allclose(ds.tas.values, field()[:, ::-1, :], rtol=1e-6)


def test_longitudes_0_360_normalised(tmp_path: Path) -> None:
    lon = np.array([0.0, 10.0, 20.0, 340.0, 350.0])
    p = write(tmp_path / "l.nc", {"tas": (TLL, field(), {"units": "K"})}, lon=lon)
    ds = open_dataset(p)
    np.testing.assert_array_equal(ds.lon.values, [-20.0, -10.0, 0.0, 10.0, 20.0])
    np.testing.assert_allclose(ds.tas.values, field()[:, :, [3, 4, 0, 1, 2]], rtol=1e-6)


def test_global_0_360_grid_becomes_minus180_180(tmp_path: Path) -> None:
    lon = np.arange(0.0, 360.0, 72.0)  # 5 points, global
    p = write(tmp_path / "g.nc", {"tas": (TLL, field(), {"units": "K"})}, lon=lon)
    np.testing.assert_array_equal(open_dataset(p).lon.values, [-144.0, -72.0, 0.0, 72.0, 144.0])


@pytest.mark.parametrize(
    "lon", [[170.0, 175.0, 180.0, 185.0, 190.0], [170.0, 175.0, 180.0, -175.0, -170.0]]
)
def test_antimeridian_domain_kept_contiguous(tmp_path: Path, lon: list[float]) -> None:
    p = write(tmp_path / "a.nc", {"tas": (TLL, field(), {"units": "K"})}, lon=np.array(lon))
    whole = open_dataset(p)
    np.testing.assert_array_equal(whole.lon.values, [170.0, 175.0, 180.0, 185.0, 190.0])
    np.testing.assert_allclose(whole.tas.values, field(), rtol=1e-6)
    # the bbox crosses the antimeridian: the cells whose centres lie in it, west to east
    ds = open_dataset(p, bbox=(172.0, -172.0, 44.5, 46.5))
    np.testing.assert_array_equal(ds.lon.values, [175.0, 180.0, 185.0])
    np.testing.assert_array_equal(ds.lat.values, [45.0, 46.0])
    np.testing.assert_allclose(ds.tas.values, field()[:, 1:3, 1:4], rtol=1e-6)
    with pytest.raises(DataError, match=r"covers lon 167\.50\.\.192\.50"):
        open_dataset(p, bbox=(160.0, 175.0, 44.5, 46.5))


def test_alternative_coordinate_names(tmp_path: Path) -> None:
    ds = xr.Dataset(
        {"tas": (("t", "latitude", "longitude"), np.full((2, 4, 5), 280.0), {"units": "K"})},
        coords={
            "t": ("t", [0.0, 1.0], {"units": "days since 2000-01-01", "axis": "T"}),
            "latitude": ("latitude", LAT[::-1], {"units": "degrees_north"}),
            "longitude": ("longitude", LON, {"units": "degrees_east"}),
        },
    )
    ds.to_netcdf(tmp_path / "n.nc")
    out = open_dataset(tmp_path / "n.nc")
    assert out.tas.dims == TLL and out.lat.values[0] == 44.0


def test_curvilinear_lambert_grid_kept(tmp_path: Path) -> None:
    y, x = np.arange(4) * 12.5 + 1000.0, np.arange(5) * 12.5 + 2000.0
    lat2d = 44.0 + y[:, None] / 1000.0 + 0.1 * x[None, :] / 1000.0
    lon2d = 350.0 + x[None, :] / 200.0 + 0 * y[:, None]  # 0..360 values across Greenwich
    ds = xr.Dataset(
        {
            "tasmax": (
                ("time", "y", "x"),
                np.full((2, 4, 5), 290.0),
                {"units": "K", "grid_mapping": "Lambert_Conformal"},
            ),
            "nav_lat": (("y", "x"), lat2d, {"standard_name": "latitude", "units": "degrees_north"}),
            "nav_lon": (("y", "x"), lon2d, {"standard_name": "longitude", "units": "degrees_east"}),
        },
        coords={
            "time": ("time", [0.0, 1.0], {"units": "days since 1961-01-01"}),
            "y": ("y", y, {"units": "km", "standard_name": "projection_y_coordinate"}),
            "x": ("x", x, {"units": "km", "standard_name": "projection_x_coordinate"}),
        },
    )
    ds.to_netcdf(tmp_path / "lcc.nc")  # nav_lat/nav_lon are data variables: no coordinates attr
    out = open_dataset(tmp_path / "lcc.nc")
    assert out.tasmax.dims == ("time", "y", "x")
    assert out.lat.dims == ("y", "x") and out.lon.dims == ("y", "x")
    assert out.x.attrs["units"] == "km" and out.y.attrs["units"] == "km"
    np.testing.assert_allclose(out.lon.values, lon2d - 360.0)
    assert "grid_mapping" not in out.tasmax.attrs  # dangling: ignored


def test_existing_grid_mapping_kept(tmp_path: Path) -> None:
    p = write(
        tmp_path / "g.nc",
        {
            "tas": (TLL, 280.0, {"units": "K", "grid_mapping": "crs"}),
            "crs": ((), 0, {"grid_mapping_name": "latitude_longitude"}),
        },
    )
    ds = open_dataset(p)
    assert ds.tas.attrs["grid_mapping"] == "crs"
    assert ds["crs"].attrs["grid_mapping_name"] == "latitude_longitude"


def test_packed_int16_with_fill_value(tmp_path: Path) -> None:
    raw = np.arange(6 * 4 * 5, dtype="i2").reshape(6, 4, 5)
    raw[0, 0, 0] = -32767
    p = tmp_path / "packed.nc"
    ds = xr.Dataset(
        {
            "t2m": (
                TLL,
                raw,
                {
                    "units": "K",
                    "scale_factor": 0.01,
                    "add_offset": 270.0,
                    "_FillValue": np.int16(-32767),
                },
            )
        },
        coords={
            "time": ("time", np.arange(6.0), {"units": "days since 2000-01-01"}),
            "lat": LAT,
            "lon": LON,
        },
    )
    xr.conventions.encode_dataset_coordinates(ds)
    import netCDF4

    with netCDF4.Dataset(p, "w") as nc:
        for dim, n in ds.sizes.items():
            nc.createDimension(str(dim), n)
        for name in ("time", "lat", "lon"):
            var = nc.createVariable(name, "f8", (name,))
            var[:] = ds[name].values
            var.setncatts(ds[name].attrs)
        var = nc.createVariable("t2m", "i2", TLL, fill_value=np.int16(-32767))
        var.set_auto_maskandscale(False)
        var.setncatts(
            {"units": "K", "scale_factor": np.float32(0.01), "add_offset": np.float32(270.0)}
        )
        var[:] = raw
    out = open_dataset(p)
    assert np.isnan(out.tas.values[0, 0, 0])
    np.testing.assert_allclose(out.tas.values[0, 0, 1], 270.01, rtol=1e-6)
    np.testing.assert_allclose(out.tas.values[-1, -1, -1], 270.0 + 119 * 0.01, rtol=1e-6)
    assert out.tas.dtype == np.float32


def test_bbox_cuts_before_reading(tmp_path: Path) -> None:
    p = write(tmp_path / "c.nc", {"tas": (TLL, field(), {"units": "K"})})
    ds = open_dataset(p, bbox=(5.5, 7.0, 44.0, 45.2))
    assert ds.tas.chunks is not None  # still lazy
    np.testing.assert_array_equal(ds.lon.values, [6.0, 7.0])
    np.testing.assert_array_equal(ds.lat.values, [44.0, 45.0])
    np.testing.assert_allclose(ds.tas.values, field()[:, 0:2, 1:3], rtol=1e-6)
    with pytest.raises(DataError, match="smaller than one cell"):
        open_dataset(p, bbox=(6.2, 6.4, 45.2, 45.4))
    for bad, words in (
        ((5.0, 9.0, 47.0, 44.0), "lat_min < lat_max"),
        ((5.0, 9.0, 44.0), "four numbers"),
        ((5.0, float("nan"), 44.0, 47.0), "finite"),
    ):
        with pytest.raises(DataError, match=words):
            open_dataset(tmp_path / "not_opened.nc", bbox=bad)  # refused before any file


def test_bbox_across_the_seam_of_a_global_grid(tmp_path: Path) -> None:
    """A global grid is kept on -180..180; a bbox across 180 gives continuous longitudes."""
    lon = np.arange(-179.5, 180.0, 1.0)
    lat = np.array([-1.5, -0.5, 0.5, 1.5])
    values = np.broadcast_to(lon, (6, 4, lon.size)).astype("f8")  # each cell holds its longitude
    p = write(
        tmp_path / "g.nc",
        {"tas": (TLL, 250.0 + np.mod(values, 360.0) / 10, {"units": "K"})},
        lat=lat,
        lon=lon,
    )
    ds = open_dataset(p, bbox=(170.0, -170.0, -1.0, 1.0))
    np.testing.assert_allclose(ds.lon.values, np.arange(170.5, 190.0, 1.0))
    np.testing.assert_array_equal(ds.lat.values, [-0.5, 0.5])
    np.testing.assert_allclose(  # the values followed their longitudes across the seam
        ds.tas.values[0, 0], 250.0 + np.mod(np.arange(170.5, 190.0, 1.0), 360.0) / 10, rtol=1e-6
    )


def test_bbox_not_covered(tmp_path: Path) -> None:
    p = write(tmp_path / "b.nc", {"tas": (TLL, 280.0, {"units": "K"})})
    open_dataset(p, bbox=(5.0, 9.0, 44.0, 47.0))
    with pytest.raises(
        DataError, match=r"covers lon 4.50..9.50, lat 43.50..47.50 but the domain needs"
    ):
        open_dataset(p, bbox=(0.0, 9.0, 44.0, 47.0))


# --- errors ------------------------------------------------------------------------------------


def test_missing_variable_lists_found(tmp_path: Path) -> None:
    p = write(tmp_path / "m.nc", {"tas": (TLL, 280.0, {"units": "K"}), "foo": (TLL, 1.0, {})})
    with pytest.raises(DataError, match=r"pr not found in .*m\.nc \(variables there: tas, foo"):
        open_dataset(p, ["tas", "pr"])
    assert list(open_dataset(p, ["tas", "pr"], strict=False).data_vars) == ["tas"]
    with pytest.raises(DataError, match="unknown variable"):
        open_dataset(p, ["temperature"])


@pytest.mark.parametrize(
    ("units", "match"), [("m", "cannot be converted"), ("bogons !!", "cannot parse")]
)
def test_bad_units(tmp_path: Path, units: str, match: str) -> None:
    p = write(tmp_path / "u.nc", {"tasmax": (TLL, 1.0, {"units": units})})
    expected = re.escape(f"variable 'tasmax' has units '{units}'") + f".*{match}.*'K'"
    with pytest.raises(DataError, match=expected):
        open_dataset(p)


@pytest.mark.parametrize("fmt", ["NETCDF4", "NETCDF3_64BIT", "NETCDF3_CLASSIC"])
def test_truncated_file(tmp_path: Path, fmt: str) -> None:
    p = write(tmp_path / "full.nc", {"tas": (TLL, field(), {"units": "K"})}, fmt=fmt)
    cut = tmp_path / "cut.nc"
    data = p.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        DataError, match=r"cut\.nc is not a readable NetCDF file \(truncated or corrupt\?\)"
    ):
        open_dataset(cut)


def test_random_bytes_file(tmp_path: Path) -> None:
    p = tmp_path / "noise.nc"
    p.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(DataError, match="not a readable NetCDF file"):
        open_dataset(p)


def test_missing_file_and_empty_glob(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "nope.nc")
    with pytest.raises(DataError, match="no files match"):
        open_dataset(os.fspath(tmp_path / "*.nc"))
    if hasattr(os, "mkfifo"):  # a named pipe exists, but is no file to read
        os.mkfifo(tmp_path / "pipe.nc")
        with pytest.raises(DataError, match="is not a regular file"):
            open_dataset(tmp_path / "pipe.nc")


def test_no_recognised_variable(tmp_path: Path) -> None:
    p = write(tmp_path / "x.nc", {"foo": (TLL, 1.0, {"units": "1"})})
    with pytest.raises(DataError, match=r"no variable climdl recognises \(found: foo\)"):
        open_dataset(p)


# --- the real ML-Bench templates ----------------------------------------------------------------


@pytest.mark.skipif(not TEMPLATES.is_dir(), reason="ML-Bench templates not available")
def test_ml_bench_templates() -> None:
    alps = open_dataset(TEMPLATES / "tasmax_ALPS.nc")  # dangling grid_mapping Lambert_Conformal
    assert alps.tasmax.dims == ("time", "y", "x") and alps.lat.shape == (128, 128)
    assert alps.x.attrs["units"] == "km" and alps.tasmax.attrs["units"] == "K"
    assert alps.time.encoding["calendar"] == "gregorian"
    alps_pr = open_dataset(TEMPLATES / "pr_ALPS.nc", assume_units={"pr": "mm day-1"})
    assert alps_pr.pr.attrs["units"] == "mm day-1"
    sa = open_dataset(TEMPLATES / "pr_SA.nc", "pr", bbox=(21.0, 33.0, -34.0, -23.0))
    assert sa.pr.dtype == np.float32 and sa.pr.dims == TLL
    assert sa.lat.values[0] < sa.lat.values[-1]
    values = sa.pr.values
    assert np.all(np.isfinite(values) & (values >= 0.0))  # mm/day already: unchanged


def test_variables_from_separate_files_merged(tmp_path: Path) -> None:
    write(tmp_path / "tasmax.nc", {"tasmax": (TLL, 300.0, {"units": "K"})})
    write(tmp_path / "pr.nc", {"pr": (TLL, 2.0, {"units": "mm/day"})}, time=range(10))
    with pytest.raises(DataError, match=r"cover different periods .*time_range"):
        open_dataset(str(tmp_path / "*.nc"))
    ds = open_dataset(str(tmp_path / "*.nc"), time_range=("2000-01-02", "2000-01-04"))
    assert list(ds.data_vars) == ["tasmax", "pr"] and ds.sizes["time"] == 3


def test_height_coordinate_and_model_levels(tmp_path: Path) -> None:
    p = write(
        tmp_path / "cmip.nc",
        {
            "tas": (TLL, 280.0, {"units": "K", "coordinates": "height"}),
            "ta": (("time", "lev", "lat", "lon"), 250.0, {"units": "K"}),
        },
        coords={
            "height": ((), 2.0, {"units": "m", "axis": "Z", "positive": "up"}),
            "lev": ("lev", np.array([0.2, 0.9]), {"units": "1", "positive": "down"}),
        },
    )
    ds = open_dataset(p)  # ta on model (sigma) levels is not a pressure-level predictor
    assert list(ds.data_vars) == ["tas"] and "height" not in ds.coords
