"""climdl.plot: maps on native grids with shipped coastlines, colours, panels, spectra, masks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cartopy.crs as ccrs
import numpy as np
import pytest
import xarray as xr

from climdl.data.grids import coarse_grid, target_grid
from climdl.errors import ConfigError, DataError, OutputError
from climdl.plot import (
    mask_panels,
    panel_figure,
    plot_field,
    plot_mask_over_rgb,
    plot_psd,
    rgb_composite,
    save_figure,
    select_lines,
)
from climdl.plot.colours import DRY_COLOUR, infer_kind
from climdl.plot.projection import crs_from_cf, grid_of, map_frame

ALPS_GM = dict(target_grid("ALPS")["Lambert_Conformal"].attrs)


@pytest.fixture(autouse=True)
def no_network(
    offline: None, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """Every test runs offline (the ``offline`` fixture: sockets and cartopy's downloaders
    refuse), cartopy cannot even name a download, and its data folders point to an empty
    directory that must stay empty."""
    import cartopy
    import cartopy.io
    from cartopy.mpl.geoaxes import GeoAxes

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(cartopy.io.Downloader, "path", refuse)
    monkeypatch.setattr(GeoAxes, "coastlines", refuse)  # it would download Natural Earth
    empty = tmp_path_factory.mktemp("cartopy_data")
    monkeypatch.setitem(cartopy.config, "data_dir", empty)
    monkeypatch.setitem(cartopy.config, "pre_existing_data_dir", empty)
    yield empty
    assert not any(empty.iterdir()), "cartopy wrote to its data folder"


def alps_field(
    name: str = "tasmax", values: np.ndarray | None = None, **attrs: Any
) -> xr.DataArray:
    """A field on the real ALPS Lambert grid, grid mapping as a coordinate (decode_coords='all')."""
    g = target_grid("ALPS")
    yy, xx = np.meshgrid(np.linspace(0, 1, 128), np.linspace(0, 1, 128), indexing="ij")
    data = 280 + 20 * yy + 5 * xx if values is None else values
    base = {
        "units": "K",
        "standard_name": "air_temperature",
        "long_name": "Daily Maximum Near-Surface Air Temperature",
    }
    da = xr.DataArray(
        data.astype("f4"),
        dims=("y", "x"),
        name=name,
        attrs={**base, **attrs},
        coords={
            "x": g.x,
            "y": g.y,
            "lat": g.lat,
            "lon": g.lon,
            "Lambert_Conformal": g.Lambert_Conformal,
        },
    )
    da.encoding["grid_mapping"] = "Lambert_Conformal"
    return da


def draw(ax: Any) -> np.ndarray:
    fig = ax.get_figure()
    fig.set_dpi(50)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)


def geoms(ax: Any, gid: str) -> list[Any]:
    arts = [a for a in ax.artists + ax.collections if a.get_gid() == gid]
    assert len(arts) == 1, f"expected one {gid} artist"
    return list(arts[0]._feature.geometries())


# ----------------------------------------------------------------------------- ALPS Lambert map
def test_alps_map_has_lambert_projection_and_grid_extent() -> None:
    ax = plot_field(alps_field())
    proj = ax.projection
    assert isinstance(proj, ccrs.LambertConformal)
    p = proj.proj4_params
    assert p["lon_0"] == 10.5 and p["lat_0"] == 49.5 and p["lat_1"] == p["lat_2"] == 49.5
    assert p["x_0"] == 2825000.0 and p["y_0"] == 2825000.0 and p["a"] == p["b"] == 6371229.0
    g = target_grid("ALPS")
    dx = float(g.x[1] - g.x[0])
    want = [
        (g.x[0] - dx / 2) * 1e3,
        (g.x[-1] + dx / 2) * 1e3,
        (g.y[0] - dx / 2) * 1e3,
        (g.y[-1] + dx / 2) * 1e3,
    ]
    np.testing.assert_allclose(ax.get_extent(), want, rtol=1e-9)
    # the field's cell centres are where the grid's own 2-D lat/lon say they are
    mesh = next(c for c in ax.collections if c.get_gid() == "field")
    assert mesh.get_array().shape == (128, 128)
    xy = proj.transform_points(ccrs.PlateCarree(), g.lon.values, g.lat.values)
    np.testing.assert_allclose(xy[..., 0] / 1e3, np.broadcast_to(g.x.values, (128, 128)), atol=1e-3)


def test_alps_map_draws_shipped_coastlines_lakes_and_borders() -> None:
    from shapely.geometry import Point

    ax = plot_field(alps_field())
    coast, lakes, borders = geoms(ax, "coastlines"), geoms(ax, "lakes"), geoms(ax, "borders")
    assert len(coast) > 20 and len(lakes) > 10 and len(borders) > 10

    def near(lines: list[Any], lon: float, lat: float, tol: float = 0.05) -> bool:
        return min(line.distance(Point(lon, lat)) for line in lines) < tol

    assert near(coast, 8.93, 44.41)  # Genoa harbour
    assert near(coast, 12.33, 45.43, 0.1)  # Venice lagoon
    assert near(lakes, 6.60, 46.51)  # Lake Geneva at Lausanne
    assert near(lakes, 10.70, 45.60, 0.12)  # Lake Garda
    assert near(borders, 7.59, 47.59, 0.1)  # the Basel tripoint
    assert not near(coast + lakes + borders, 9.7, 45.05, 0.25)  # Po plain near Piacenza


def test_alps_coastlines_are_in_the_pixels_where_they_belong() -> None:
    """Rendered figure: the coast at Genoa changes pixels, the Po plain does not."""
    flat = alps_field(values=np.full((128, 128), 290.0))
    with_lines = plot_field(
        flat, kind="sequential", vmin=280, vmax=300, gridlines=False, cbar=False
    )
    bare = plot_field(
        flat,
        kind="sequential",
        vmin=280,
        vmax=300,
        gridlines=False,
        cbar=False,
        coastlines=False,
        borders=False,
    )
    a, b = draw(with_lines), draw(bare)
    assert a.shape == b.shape
    height = a.shape[0]

    def window(ax: Any, img: np.ndarray, lon: float, lat: float, r: int = 3) -> np.ndarray:
        x, y = ax.projection.transform_point(lon, lat, ccrs.PlateCarree())
        px, py = ax.transData.transform((x, y))
        row, col = round(float(height - py)), round(float(px))
        return img[row - r : row + r + 1, col - r : col + r + 1]

    changed = np.abs(a - b).sum(axis=-1) > 60
    assert changed.any()
    genoa = window(with_lines, changed, 8.93, 44.41)
    po = window(with_lines, changed, 9.7, 45.05)
    assert genoa.any() and not po.any()
    # the lines are dark on the uniform field
    assert (a[changed].mean(axis=-1) < b[changed].mean(axis=-1)).mean() > 0.9


def test_nothing_downloads_when_saving(tmp_path: Path) -> None:
    ax = plot_field(
        alps_field(
            "pr",
            np.random.default_rng(0).gamma(0.5, 4, (128, 128)),
            units="mm day-1",
            standard_name="lwe_precipitation_rate",
        )
    )
    for suffix in ("png", "pdf"):
        out = save_figure(ax.get_figure(), tmp_path / f"map.{suffix}")
        assert out.stat().st_size > 5000
    assert not list(tmp_path.glob(".*.tmp"))


def test_grid_mapping_from_file_km_or_metres_and_explicit_crs(tmp_path: Path) -> None:
    da = alps_field()
    ds = da.to_dataset().reset_coords("Lambert_Conformal")
    ds["tasmax"].encoding.clear()
    ds["tasmax"].attrs["grid_mapping"] = "Lambert_Conformal"
    path = tmp_path / "f.nc"
    ds.to_netcdf(path)
    with xr.open_dataset(path, decode_coords="all") as opened:
        ax = plot_field(opened["tasmax"], cbar=False)
    assert isinstance(ax.projection, ccrs.LambertConformal)
    ref = ax.get_extent()
    metres = da.drop_vars("Lambert_Conformal").assign_coords(
        x=("x", da.x.values * 1e3, {"units": "m"}), y=("y", da.y.values * 1e3, {"units": "m"})
    )
    metres.encoding.clear()
    for crs in (ALPS_GM, crs_from_cf(ALPS_GM)):
        ax = plot_field(metres, crs=crs, cbar=False, coastlines=False, borders=False)
        assert isinstance(ax.projection, ccrs.LambertConformal)
        np.testing.assert_allclose(ax.get_extent(), ref, rtol=1e-9)


def test_colour_bar_has_long_name_and_units() -> None:
    ax = plot_field(alps_field())
    fig = ax.get_figure()
    cbar_ax = [a for a in fig.axes if a is not ax]
    assert len(cbar_ax) == 1
    assert cbar_ax[0].get_ylabel() == "Daily Maximum Near-Surface Air Temperature [K]"
    assert ax.get_title() == "Daily Maximum Near-Surface Air Temperature"
    ax = plot_field(alps_field(), cbar=False, title="x")
    assert len(ax.get_figure().axes) == 1 and ax.get_title() == "x"


# ----------------------------------------------------------------------------- other grids
def test_regular_latlon_grid_uses_plate_carree_centred_on_domain() -> None:
    g = target_grid("SA")
    da = xr.DataArray(
        np.random.default_rng(0).normal(300, 3, (128, 128)),
        dims=("lat", "lon"),
        coords={"lat": g.lat, "lon": g.lon},
        name="tasmax",
        attrs={"units": "K"},
    )
    ax = plot_field(da)
    assert isinstance(ax.projection, ccrs.PlateCarree)
    centre = ax.projection.proj4_params["pm"]
    assert 26 < centre < 27.5
    x0, x1, y0, y1 = ax.get_extent()
    np.testing.assert_allclose(
        [x0 + centre, x1 + centre, y0, y1], [20.45, 33.25, -34.75, -21.95], atol=1e-6
    )
    assert len(geoms(ax, "coastlines")) > 0 and len(geoms(ax, "borders")) > 0


def test_global_grid_uses_robinson() -> None:
    lat = np.arange(-89.0, 90.0, 2.0)
    lon = np.arange(0.0, 360.0, 2.0)
    da = xr.DataArray(
        np.cos(np.deg2rad(lat))[:, None] * np.ones(lon.size),
        name="x",
        dims=("lat", "lon"),
        coords={"lat": lat, "lon": lon},
    )
    ax = plot_field(da, coastlines=False, borders=False)
    assert isinstance(ax.projection, ccrs.Robinson)


def test_rotated_pole_grid_is_drawn_in_rotated_coordinates() -> None:
    rlon = np.linspace(-10, 10, 21)
    rlat = np.linspace(-8, 8, 17)
    gm = xr.DataArray(
        0,
        attrs={
            "grid_mapping_name": "rotated_latitude_longitude",
            "grid_north_pole_latitude": 39.25,
            "grid_north_pole_longitude": -162.0,
        },
    )
    da = xr.DataArray(
        np.zeros((17, 21)) + 1.0,
        dims=("rlat", "rlon"),
        name="orog",
        coords={
            "rlat": ("rlat", rlat, {"standard_name": "grid_latitude"}),
            "rlon": ("rlon", rlon, {"standard_name": "grid_longitude"}),
            "rotated_pole": gm,
        },
        attrs={"units": "m"},
    )
    ax = plot_field(da, coastlines=False)
    assert isinstance(ax.projection, ccrs.RotatedPole)
    np.testing.assert_allclose(ax.get_extent(), [-10.5, 10.5, -8.5, 8.5], atol=1e-6)


def test_other_grid_mappings_go_through_pyproj() -> None:
    gm = {
        "grid_mapping_name": "polar_stereographic",
        "straight_vertical_longitude_from_pole": -45.0,
        "latitude_of_projection_origin": 90.0,
        "standard_parallel": 70.0,
        "false_easting": 0.0,
        "false_northing": 0.0,
    }
    x = np.linspace(-500, 500, 11)
    da = xr.DataArray(
        np.ones((11, 11)),
        dims=("y", "x"),
        name="sic",
        coords={"x": ("x", x, {"units": "km"}), "y": ("y", x, {"units": "km"})},
    )
    frame = map_frame(grid_of(da, gm))
    assert frame.extent is not None
    np.testing.assert_allclose(frame.extent, [-550e3, 550e3, -550e3, 550e3])
    assert frame.lonlat_extent[3] == 90.0  # the pole is inside
    with pytest.raises(ConfigError, match="grid mapping"):
        crs_from_cf({"grid_mapping_name": "no_such_projection"})


def test_unplaceable_or_non_2d_fields_are_data_errors() -> None:
    with pytest.raises(DataError, match="2-D"):
        plot_field(xr.DataArray(np.zeros((2, 3, 4)), dims=("time", "y", "x"), name="tasmax"))
    with pytest.raises(DataError, match="no lat/lon"):
        plot_field(xr.DataArray(np.zeros((3, 4)), dims=("a", "b"), name="v"))
    with pytest.raises(ConfigError, match="kind"):
        plot_field(alps_field(), kind="rainbow")  # type: ignore[arg-type]


def test_plain_axes_get_native_km_coordinates() -> None:
    from climdl.plot import new_figure

    ax = new_figure((3, 3)).add_subplot(1, 1, 1)
    out = plot_field(alps_field(), ax=ax, cbar=False)
    assert out is ax and ax.get_xlabel() == "x [km]"
    assert 2000 < ax.get_xlim()[0] < 2100


# ----------------------------------------------------------------------------- colours
@pytest.mark.parametrize(
    ("name", "attrs", "values", "kind"),
    [
        ("tasmax", {"units": "K"}, np.linspace(270, 300, 50), "temperature"),
        ("tas", {"units": "degC"}, np.linspace(-10, 20, 50), "temperature"),
        ("pr", {"units": "mm day-1"}, np.linspace(0, 20, 50), "precip"),
        ("precip", {"units": "kg m-2 s-1"}, np.linspace(0, 1e-4, 50), "precip"),
        ("pr", {"units": "mm day-1"}, np.linspace(-3, 3, 50), "diverging"),
        ("tasmax_bias", {"units": "K"}, np.linspace(0.1, 2, 50), "diverging"),
        ("anomaly", {"units": "1"}, np.linspace(-1, 2, 50), "diverging"),
        ("orog", {"units": "m"}, np.linspace(0, 3000, 50), "sequential"),
        ("x", {"climdl_kind": "diverging"}, np.linspace(0, 1, 50), "diverging"),
    ],
)
def test_infer_kind(name: str, attrs: dict[str, str], values: np.ndarray, kind: str) -> None:
    assert infer_kind(xr.DataArray(values, dims="i", name=name, attrs=attrs)) == kind


def _mesh(ax: Any) -> Any:
    return next(c for c in ax.collections if c.get_gid() == "field")


def test_bias_is_diverging_and_symmetric_precip_has_dry_colour() -> None:
    rng = np.random.default_rng(1)
    bias = alps_field("bias", rng.normal(0.5, 1, (128, 128)), long_name="tasmax bias")
    mesh = _mesh(plot_field(bias, cbar=False, coastlines=False))
    assert mesh.norm.vmin == -mesh.norm.vmax and mesh.cmap.name.startswith("RdBu_r")
    pr_attrs = {
        "units": "mm day-1",
        "standard_name": "lwe_precipitation_rate",
        "long_name": "Precipitation",
    }
    daily = alps_field("pr", rng.gamma(0.4, 8, (128, 128)), **pr_attrs)
    mesh = _mesh(plot_field(daily, cbar=False, coastlines=False))
    assert mesh.norm.vmin == 1.0 and mesh.cmap.name.startswith("YlGnBu")
    np.testing.assert_allclose(
        mesh.cmap.get_under()[:3], [int(DRY_COLOUR[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    )
    clim = alps_field("pr", rng.gamma(4, 1, (128, 128)), cell_methods="time: mean", **pr_attrs)
    assert _mesh(plot_field(clim, cbar=False, coastlines=False)).norm.vmin == 0.0
    diff = alps_field("pr", rng.normal(0, 1, (128, 128)), **pr_attrs)
    assert _mesh(plot_field(diff, cbar=False, coastlines=False)).cmap.name.startswith("BrBG")
    mesh = _mesh(plot_field(bias, cbar=False, coastlines=False, vmax=3.0))
    assert (mesh.norm.vmin, mesh.norm.vmax) == (-3.0, 3.0)


# ----------------------------------------------------------------------------- panels
def test_panel_figure_draws_coarse_input_in_the_target_frame_with_shared_scales() -> None:
    cg = coarse_grid("ALPS")
    coarse = xr.DataArray(
        np.full((16, 16), 285.0),
        dims=("lat", "lon"),
        name="tasmax",
        coords={"lat": cg.lat, "lon": cg.lon},
        attrs={"units": "K", "standard_name": "air_temperature"},
    )
    truth = alps_field()
    emul = truth + 3.0
    emul.attrs = dict(truth.attrs)
    bias = (emul - truth).rename("bias").assign_attrs(units="K", long_name="bias")
    fig = panel_figure(
        [("coarse", coarse), ("truth", truth), ("emulator", emul), ("bias", bias)], suptitle="ALPS"
    )
    maps = [a for a in fig.axes if hasattr(a, "projection")]
    assert [a.get_title() for a in maps] == ["coarse", "truth", "emulator", "bias"]
    assert all(isinstance(a.projection, ccrs.LambertConformal) for a in maps)
    for a in maps[1:]:
        np.testing.assert_allclose(a.get_extent(), maps[0].get_extent())
    norms = [_mesh(a).norm for a in maps]
    assert (norms[1].vmin, norms[1].vmax) == (norms[2].vmin, norms[2].vmax)
    assert norms[1].vmin < 283 and norms[2].vmax > 303  # limits over truth and emulator
    assert norms[3].vmin == -norms[3].vmax
    assert fig.get_suptitle() == "ALPS"
    assert len(fig.axes) == 8  # one colour bar per panel

    fig = panel_figure({"a": truth, "b": emul}, shared=False, ncols=1)
    n_a, n_b = (_mesh(a).norm for a in fig.axes if hasattr(a, "projection"))
    assert n_a.vmax < n_b.vmax
    fig = panel_figure(
        [("a", truth), ("b", emul)],
        shared=["g", "g"],
        kinds=["sequential"] * 2,
        limits=[(200.0, None), None],
    )
    n_a, n_b = (_mesh(a).norm for a in fig.axes if hasattr(a, "projection"))
    assert n_a.vmin == 200.0 and n_a.vmax == n_b.vmax and _mesh(fig.axes[0]).cmap.name == "viridis"
    with pytest.raises(ConfigError):
        panel_figure([("a", truth)], kinds=["auto", "auto"])
    with pytest.raises(ConfigError):
        panel_figure([])


# ----------------------------------------------------------------------------- spectra, masks
def test_plot_psd_log_axes_wavelength_and_units() -> None:
    k = np.linspace(0, 0.04, 41)
    ax = plot_psd(
        {"truth": (k, 1e3 * (k + 1e-9) ** -2.0), "emulator": (k, 1e3 * (k + 1e-9) ** -3)},
        units="K",
        title="PSD",
    )
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    lines = ax.get_lines()
    assert len(lines) == 2 and all(len(line.get_xdata()) == 40 for line in lines)  # k=0 dropped
    assert "K" in ax.get_ylabel() and "km" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["truth", "emulator"]
    secondary = [c for c in ax.get_children() if type(c).__name__ == "SecondaryAxis"]
    assert len(secondary) == 1 and secondary[0].get_xlabel() == "wavelength (km)"
    with pytest.raises(DataError):
        plot_psd({"bad": (np.zeros(3), np.ones(3))})


def test_mask_over_rgb_colours_classes_and_leaves_no_data_transparent() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.random((20, 30, 3))
    mask = np.zeros((20, 30), int)
    mask[:5] = 1
    mask[5:8] = 2
    mask[-2:] = 255  # no data
    ax = plot_mask_over_rgb(
        rgb, mask, flag_meanings=["clear", "cloud", "cloud_shadow"], title="scene"
    )
    overlay = next(im for im in ax.get_images() if im.get_gid() == "mask").get_array()
    assert np.all(overlay[-2:, :, 3] == 0) and np.all(overlay[mask == 0][:, 3] == 0)
    np.testing.assert_allclose(overlay[mask == 1][:, 3], 0.45)
    assert not np.allclose(overlay[0, 0, :3], overlay[6, 0, :3])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["clear", "cloud", "cloud_shadow"]
    assert ax.get_title() == "scene"
    with pytest.raises(DataError):
        plot_mask_over_rgb(rgb, mask[:10], flag_meanings=["clear"])


def _scene(names: list[str], wavelengths: list[float]) -> xr.Dataset:
    """A 3-band (+ thermal) scene: a grey ramp, a pure red block, a white cloud, a NaN row."""
    h, w = 12, 16
    img = np.zeros((len(names), h, w), "f4")
    ramp = np.linspace(0.05, 0.3, w, dtype="f4")
    for i, n in enumerate(names):
        img[i] = 240.0 if n == "tir" else ramp
    red = int(np.argmin([abs(x - 0.655) for x in wavelengths]))
    img[red, :4, :4] = 0.6  # a red patch
    img[[i for i, n in enumerate(names) if n != "tir"], 6:9, 6:9] = 0.9  # white cloud
    img[:, -1] = np.nan  # no data
    units = ["K" if n == "tir" else "1" for n in names]
    return xr.Dataset(
        {"image": (("band", "y", "x"), img)},
        coords={"band": names, "wavelength": ("band", wavelengths), "band_units": ("band", units)},
    )


def test_rgb_composite_by_name_or_wavelength_keeps_white_white_and_nan() -> None:
    by_name = rgb_composite(_scene(["blue", "green", "red", "tir"], [0.48, 0.56, 0.66, 10.9]))
    assert by_name.shape == (12, 16, 3)
    assert np.isnan(by_name[-1]).all() and np.isfinite(by_name[:-1]).all()
    cloud = by_name[7, 7]
    np.testing.assert_allclose(cloud, cloud[0])  # one stretch for all bands: white stays white
    assert cloud[0] > 0.95
    patch = by_name[1, 1]
    assert patch[0] > patch[1] and patch[0] > patch[2]  # red is red
    # other names: the bands nearest to red/green/blue wavelengths (B4 is red)
    other = rgb_composite(_scene(["B2", "B3", "B4", "B8"], [0.49, 0.56, 0.665, 0.842]))
    np.testing.assert_allclose(other[:-1], by_name[:-1], atol=1e-6)
    with pytest.raises(DataError, match="RGB composite"):
        rgb_composite(_scene(["nir", "swir16", "swir22", "tir"], [0.86, 1.61, 2.2, 10.9]))


def test_mask_panels_put_the_rgb_beside_each_mask_with_one_legend() -> None:
    rgb = np.random.default_rng(1).random((10, 20, 3))
    a, b = np.zeros((10, 20), int), np.ones((10, 20), int)
    fig = mask_panels(
        rgb, [("truth", a), ("prediction", b)], flag_meanings=["clear", "cloud"], suptitle="scene 1"
    )
    assert [ax.get_title() for ax in fig.axes] == ["RGB composite", "truth", "prediction"]
    assert [ax.get_legend() is not None for ax in fig.axes] == [False, False, True]
    overlay = next(im for im in fig.axes[2].get_images() if im.get_gid() == "mask").get_array()
    assert np.all(overlay[..., 3] > 0)  # every pixel is "cloud" in the prediction
    assert fig.get_suptitle() == "scene 1"


# ----------------------------------------------------------------------------- shapes, saving
def test_select_lines_scales_detail_clips_and_wraps_the_antimeridian() -> None:
    import shapely

    alps = select_lines((2, 22, 36, 51))
    world = select_lines((-180, 180, -90, 90))
    pts = shapely.get_coordinates(alps["coast"])
    assert pts[:, 0].min() >= 2 and pts[:, 0].max() <= 22 and pts[:, 1].max() <= 51  # clipped
    assert len(pts) > 2000 and len(alps["lakes"]) > 10
    assert len(shapely.get_coordinates(world["coast"])) < 60000 and len(world["coast"]) < 3000
    fiji = select_lines((170, 190, -22, -12), ["coast"])["coast"]  # 0..360 longitudes
    assert fiji and shapely.get_coordinates(fiji)[:, 0].max() > 180
    assert select_lines((2, 22, 36, 51))["coast"][0] is alps["coast"][0]  # cached geometries
    with pytest.raises(ValueError, match="layer"):
        select_lines((0, 1, 0, 1), ["rivers"])  # type: ignore[list-item]


def test_save_figure_formats_and_refusals(tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    ax = plot_psd({"a": (np.arange(1, 5.0), np.arange(1, 5.0))})
    fig = ax.get_figure()
    for suffix in ("png", "pdf", "svg"):
        assert save_figure(fig, tmp_path / f"f.{suffix}").exists()
    assert mpimg.imread(tmp_path / "f.png").ndim == 3
    assert (tmp_path / "f.pdf").read_bytes().startswith(b"%PDF")
    assert b"<svg" in (tmp_path / "f.svg").read_bytes()[:500]
    with pytest.raises(ConfigError, match=r"\.png"):
        save_figure(fig, tmp_path / "f.gif")
    with pytest.raises(OutputError, match="overwrite"):
        save_figure(fig, tmp_path / "f.png", overwrite=False)
    assert not list(tmp_path.glob(".*.tmp"))


def test_open_field_reads_a_zarr_store_like_netcdf(tmp_path: Path) -> None:
    from climdl.plot.quicklook import open_field

    da = alps_field()
    ds = da.to_dataset()
    ds.to_netcdf(tmp_path / "f.nc")
    ds.to_zarr(tmp_path / "f.zarr", consolidated=True, zarr_format=2)
    nc, zr = open_field(tmp_path / "f.nc", "tasmax"), open_field(tmp_path / "f.zarr", "tasmax")
    np.testing.assert_array_equal(nc.values, zr.values)
    assert "Lambert_Conformal" in zr.coords and zr.attrs["units"] == "K"
    (tmp_path / "junk.zarr").mkdir()
    with pytest.raises(DataError, match="not a readable Zarr store"):
        open_field(tmp_path / "junk.zarr", "tasmax")
