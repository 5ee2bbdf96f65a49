"""``climdl plot``: every option, the figures it makes, and one-line errors for predictable mistakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cartopy.crs as ccrs
import numpy as np
import pytest

from climdl.cli import main
from climdl.data.grids import target_grid

pytestmark = pytest.mark.usefixtures("offline")  # sockets and cartopy downloads refuse


def _write(
    path: Path,
    *,
    offset: float = 0.0,
    units: str = "K",
    calendar: str = "360_day",
    start: str = "2001-02-25",
    n: int = 8,
) -> Path:
    """A small CF file on the ALPS Lambert grid: tasmax and pr over n days."""
    g = target_grid("ALPS")
    rng = np.random.default_rng(int(offset * 10) % 7)
    base = 280.0 + np.arange(n)[:, None, None] + np.linspace(0, 10, 128)[None, :, None]
    tas = np.broadcast_to(base, (n, 128, 128)) + offset
    if units == "degC":
        tas = tas - 273.15
    ds = g.copy()
    ds["tasmax"] = (
        ("time", "y", "x"),
        tas.astype("f4"),
        {
            "units": units,
            "standard_name": "air_temperature",
            "long_name": "Daily Maximum Near-Surface Air Temperature",
            "grid_mapping": "Lambert_Conformal",
        },
    )
    ds["pr"] = (
        ("time", "y", "x"),
        rng.gamma(0.5, 6, (n, 128, 128)).astype("f4"),
        {
            "units": "mm day-1",
            "standard_name": "lwe_precipitation_rate",
            "grid_mapping": "Lambert_Conformal",
        },
    )
    ds = ds.assign_coords(
        time=(
            "time",
            np.arange(n, dtype=float),
            {"units": f"days since {start}", "calendar": calendar},
        )
    )
    ds.to_netcdf(path)
    return path


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    a = _write(tmp_path / "pred.nc", offset=1.0)
    b = _write(tmp_path / "truth.nc", units="degC")
    return a, b


def _maps(fig: Any) -> list[Any]:
    return [ax for ax in fig.axes if hasattr(ax, "projection")]


def _mesh(ax: Any) -> Any:
    return next(c for c in ax.collections if c.get_gid() == "field")


def test_plot_one_day_by_date_in_a_360_day_calendar(
    pair: tuple[Path, Path], tmp_path: Path, figures: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "day.png"
    rc = main(["plot", str(pair[0]), "--var", "tasmax", "--time", "2001-02-30", "--out", str(out)])
    assert rc == 0 and out.stat().st_size > 5000
    assert capsys.readouterr().out.strip() == str(out)
    (ax,) = _maps(figures[0])
    assert isinstance(ax.projection, ccrs.LambertConformal)
    assert ax.get_title().endswith("2001-02-30")
    mesh = _mesh(ax)
    assert np.isclose(float(mesh.get_array().min()), 286.0)  # 280 + day index 5 + offset 1
    assert any(a.get_gid() == "coastlines" for a in ax.artists + ax.collections)


def test_plot_by_index_mean_kind_limits_title_dpi_quiet_overwrite(
    pair: tuple[Path, Path],
    tmp_path: Path,
    figures: list[Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import matplotlib.image as mpimg

    out = tmp_path / "fig.png"
    assert (
        main(
            [
                "plot",
                str(pair[0]),
                "-v",
                "tasmax",
                "-t",
                "-1",
                "-o",
                str(out),
                "--quiet",
                "--dpi",
                "40",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == ""
    small = mpimg.imread(out).shape
    assert _maps(figures[-1])[0].get_title().endswith("2001-03-02")  # last of 8 days from 02-25
    assert main(["plot", str(pair[0]), "-v", "tasmax", "-t", "0", "-o", str(out), "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(
            [
                "plot",
                str(pair[0]),
                "--var",
                "pr",
                "--mean",
                "--out",
                str(out),
                "--overwrite",
                "--kind",
                "sequential",
                "--vmin",
                "0.5",
                "--vmax",
                "4",
                "--title",
                "Mean pr",
                "--dpi",
                "80",
                "-q",
            ]
        )
        == 0
    )
    (ax,) = _maps(figures[-1])
    assert ax.get_title() == "Mean pr"
    mesh = _mesh(ax)
    assert (mesh.norm.vmin, mesh.norm.vmax) == (0.5, 4.0) and mesh.cmap.name.startswith("viridis")
    assert mpimg.imread(out).shape[1] > 1.5 * small[1]  # --dpi 80 vs 40
    assert (
        main(
            ["plot", str(pair[0]), "--var", "pr", "--mean", "--out", str(out), "--overwrite", "-q"]
        )
        == 0
    )
    assert "mean 2001-02-25 to 2001-03-02" in _maps(figures[-1])[0].get_title()


def test_plot_vs_other_file_draws_both_and_their_difference(
    pair: tuple[Path, Path],
    tmp_path: Path,
    figures: list[Any],
) -> None:
    out = tmp_path / "vs.pdf"
    assert (
        main(
            [
                "plot",
                str(pair[0]),
                "--var",
                "tasmax",
                "--time",
                "2001-02-26",
                "--vs",
                str(pair[1]),
                "--out",
                str(out),
                "-q",
                "--vmin",
                "270",
            ]
        )
        == 0
    )
    assert out.read_bytes().startswith(b"%PDF")
    maps = _maps(figures[-1])
    assert len(maps) == 3
    assert maps[0].get_title().startswith("pred") and maps[1].get_title().startswith("truth")
    assert "difference" in maps[2].get_title()
    diff = _mesh(maps[2])
    # truth was written in degC and is converted to K before the difference: +1 K everywhere
    np.testing.assert_allclose(np.asarray(diff.get_array()), 1.0, atol=1e-3)
    assert diff.norm.vmin == -diff.norm.vmax and diff.cmap.name.startswith("RdBu_r")
    n0, n1 = _mesh(maps[0]).norm, _mesh(maps[1]).norm
    assert n0.vmin == n1.vmin == 270 and n0.vmax == n1.vmax
    assert figures[-1].get_suptitle() == "Daily Maximum Near-Surface Air Temperature"
    svg = tmp_path / "vs.svg"
    assert (
        main(
            [
                "plot",
                str(pair[0]),
                "--var",
                "pr",
                "--mean",
                "--vs",
                str(pair[1]),
                "--out",
                str(svg),
                "-q",
            ]
        )
        == 0
    )
    assert b"<svg" in svg.read_bytes()[:500]
    assert _mesh(_maps(figures[-1])[2]).cmap.name.startswith("BrBG")


def test_plot_real_sample_target_file(
    sample_root: Path, tmp_path: Path, figures: list[Any]
) -> None:
    src = next((sample_root / "train/ESD_pseudo_reality/target").glob("*.nc"))
    out = tmp_path / "sample.png"
    assert (
        main(["plot", str(src), "--var", "pr", "--time", "1961-07-01", "--out", str(out), "-q"])
        == 0
    )
    (ax,) = _maps(figures[-1])
    assert isinstance(ax.projection, ccrs.LambertConformal)
    assert _mesh(ax).norm.vmin == 1.0  # daily precipitation: dry days get the dry colour
    assert "[mm day-1]" in next(a for a in figures[-1].axes if a is not ax).get_ylabel()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}", "--var", "tasmax", "-t", "0"], "does not exist"),
        (["{a}", "--var", "nope", "-t", "0"], "variable 'nope' is not in"),
        (["{a}", "-t", "0"], "choose one with --var"),
        (["{a}", "--var", "tasmax"], "--time DATE|INDEX"),
        (["{a}", "--var", "tasmax", "--time", "yesterday"], "neither a date"),
        (["{a}", "--var", "tasmax", "--time", "2001-02-31"], "360_day"),
        (["{a}", "--var", "tasmax", "--time", "2010-01-01"], "outside the period"),
        (["{a}", "--var", "tasmax", "--time", "8"], "out of range"),
        (["{a}", "--var", "tasmax", "--time", "0", "--vs", "{sa}"], "same grid"),
        (
            ["{a}", "--var", "tasmax", "--time", "0", "--vs", "{broken}"],
            "broken.nc is not a readable NetCDF file (truncated or corrupt?); download or write",
        ),
        (["{garbage}", "--var", "tasmax", "-t", "0"], "garbage.nc is not a readable NetCDF file"),
        (["{a}", "--var", "tasmax", "-t", "0", "--vs", "{garbage}"], "not a readable NetCDF"),
        (["{zero}", "--var", "tasmax", "--mean"], "has a time axis with no steps"),
        (["{zero}", "--var", "tasmax", "-t", "0"], "has a time axis with no steps"),
        (["{a}", "--var", "tasmax", "-t", "0", "--dpi", "-5"], "--dpi must be a number from 1"),
        (["{a}", "--var", "tasmax", "-t", "0", "--dpi", "0"], "from 1 to 1200, got 0."),
        (["{a}", "--var", "tasmax", "-t", "0", "--dpi", "100000"], "from 1 to 1200"),
        (["{a}", "--var", "tasmax", "-t", "0", "--dpi", "nan"], "from 1 to 1200"),
        (["{a}", "--var", "tasmax", "-t", "0", "--vmin", "10", "--vmax", "0"], "must be below"),
        (["{a}", "--var", "tasmax", "-t", "0", "--vmin", "nan"], "--vmin must be a finite"),
        (["{a}", "--var", "tasmax", "-t", "0", "--vmax", "inf"], "--vmax must be a finite"),
        (["{levels}", "--var", "ta", "--time", "0"], "2-D"),
        (["{static}", "--var", "orog", "--mean"], "no time dimension"),
        (["{a}", "--var", "tasmax", "--time", "0", "--out", "{tmp}/x.jpg"], ".png, .pdf or .svg"),
    ],
)
def test_predictable_mistakes_are_one_line_errors(
    args: list[str],
    message: str,
    pair: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    g = target_grid("ALPS")
    sa = target_grid("SA")
    sa["tasmax"] = (("time", "lat", "lon"), np.zeros((1, 128, 128), "f4"), {"units": "K"})
    sa.to_netcdf(tmp_path / "sa.nc")
    (tmp_path / "broken.nc").write_bytes(b"CDF\x01 truncated")
    (tmp_path / "garbage.nc").write_bytes(b"\x89HDF\r\n\x1a\n but not really" * 20)
    _write(tmp_path / "zero.nc", n=0)
    lev = g.copy()
    lev["ta"] = (
        ("time", "plev", "y", "x"),
        np.zeros((1, 2, 128, 128), "f4"),
        {"units": "K", "grid_mapping": "Lambert_Conformal"},
    )
    lev.to_netcdf(tmp_path / "levels.nc")
    st = g.copy()
    st["orog"] = (
        ("y", "x"),
        np.zeros((128, 128), "f4"),
        {"units": "m", "grid_mapping": "Lambert_Conformal"},
    )
    st.to_netcdf(tmp_path / "static.nc")
    names = {
        "a": str(pair[0]),
        "missing": str(tmp_path / "missing.nc"),
        "sa": str(tmp_path / "sa.nc"),
        "broken": str(tmp_path / "broken.nc"),
        "garbage": str(tmp_path / "garbage.nc"),
        "zero": str(tmp_path / "zero.nc"),
        "levels": str(tmp_path / "levels.nc"),
        "static": str(tmp_path / "static.nc"),
        "tmp": str(tmp_path),
    }
    argv = ["plot", *(a.format(**names) for a in args)]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "err.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("climdl: error:")
    assert not (tmp_path / "err.png").exists() and not list(tmp_path.glob(".*.tmp"))


def test_a_title_that_is_not_valid_mathtext_is_drawn_as_typed(
    pair: tuple[Path, Path], tmp_path: Path, figures: list[Any]
) -> None:
    """Matplotlib would raise a ParseException while saving; the text is drawn literally."""
    out = tmp_path / "t.png"
    base = ["plot", str(pair[0]), "--var", "tasmax", "-t", "0", "--dpi", "20", "-q"]
    assert main([*base, "-o", str(out), "--title", r"a $x^$ b and $\foo$"]) == 0
    assert out.stat().st_size > 0
    assert _maps(figures[-1])[0].get_title() == r"a \$x^\$ b and \$\foo\$"  # drawn as typed
    assert main([*base, "-o", str(out), "--overwrite", "--title", r"$\alpha$ index"]) == 0
    assert _maps(figures[-1])[0].get_title() == r"$\alpha$ index"  # valid mathtext is kept
    three = tmp_path / "vs.png"
    assert main([*base, "-o", str(three), "--vs", str(pair[1]), "--title", "$x^$"]) == 0
    assert figures[-1].get_suptitle() == r"\$x^\$"


def test_missing_bounds_variables_raise_no_python_warning(
    pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file whose bounds variables were dropped: drawn, and -q prints nothing at all."""
    import warnings

    import xarray as xr

    src = tmp_path / "no_bounds.nc"
    with xr.open_dataset(pair[0]) as ds:
        ds = ds.load()
    ds["y"].attrs["bounds"] = "y_bnds"  # names a variable the file does not have
    ds.to_netcdf(src)
    out = tmp_path / "nb.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a raw warning would fail the run
        assert main(["plot", str(src), "--var", "tasmax", "-t", "0", "-o", str(out), "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "" and out.is_file()


def test_time_and_mean_are_exclusive_and_static_fields_plot(
    pair: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    figures: list[Any],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["plot", str(pair[0]), "--time", "0", "--mean", "--out", str(tmp_path / "x.png")])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    g = target_grid("ALPS")
    g["orog"] = (
        ("y", "x"),
        np.linspace(0, 3000, 128 * 128).reshape(128, 128).astype("f4"),
        {"units": "m", "grid_mapping": "Lambert_Conformal"},
    )
    g.to_netcdf(tmp_path / "static.nc")
    assert main(["plot", str(tmp_path / "static.nc"), "--out", str(tmp_path / "o.png"), "-q"]) == 0
    assert _mesh(_maps(figures[-1])[0]).cmap.name.startswith("viridis")


def test_select_time_handles_numpy_dates_and_size_one_series() -> None:
    import pandas as pd
    import xarray as xr

    from climdl.plot.timesel import TimeChoice, select_time

    da = xr.DataArray(
        np.arange(3.0)[:, None, None] * np.ones((3, 2, 2)),
        dims=("time", "y", "x"),
        coords={"time": pd.date_range("2000-01-01", periods=3)},
        name="tas",
    )
    one, when = select_time(da, TimeChoice.parse("2000-01-02T20:00"))
    assert when == "2000-01-03" and float(one.mean()) == 2.0
    mean, when = select_time(da, TimeChoice.parse(None, mean=True))
    assert when == "mean 2000-01-01 to 2000-01-03" and "time: mean" in mean.attrs["cell_methods"]
    single, when = select_time(da.isel(time=[1]), TimeChoice.parse(None))
    assert single.ndim == 2 and when == "2000-01-02"


# ----------------------------------------------------------------------------- scenes and masks
@pytest.fixture()
def scene_and_mask(tmp_path: Path) -> tuple[Path, Path]:
    """A small labelled sample scene and a "prediction" file laid out like climdl segment's."""
    import xarray as xr

    from climdl.clouds.sample import write_cloud_sample

    scene = write_cloud_sample(tmp_path / "scenes", n_scenes=1, size=(32, 48), seed=3).files[0]
    with xr.open_dataset(scene) as ds:
        pred = xr.Dataset({"cloud_mask": ds["mask"].load().copy()})
    pred["cloud_mask"].values[:] = 1  # "cloud" everywhere
    pred.to_netcdf(tmp_path / "pred_mask.nc")
    return scene, tmp_path / "pred_mask.nc"


def test_plot_scene_with_its_label_and_a_mask_file(
    scene_and_mask: tuple[Path, Path],
    tmp_path: Path,
    figures: list[Any],
) -> None:
    scene, mask = scene_and_mask
    out = tmp_path / "scene.png"
    assert (
        main(
            ["plot", str(scene), "--mask", str(mask), "--title", "scene 0", "--out", str(out), "-q"]
        )
        == 0
    )
    assert out.stat().st_size > 0
    fig = figures[-1]
    assert [ax.get_title() for ax in fig.axes] == ["RGB composite", "label", "pred_mask"]
    assert fig.get_suptitle() == "scene 0"
    overlay = next(im for im in fig.axes[2].get_images() if im.get_gid() == "mask").get_array()
    rgb = fig.axes[0].get_images()[0].get_array()
    assert overlay.shape[:2] == rgb.shape[:2] == (32, 48)
    legend = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert legend == ["clear", "cloud", "thin_cloud", "cloud_shadow", "snow"]
    # the scene alone: RGB and label
    assert main(["plot", str(scene), "--out", str(tmp_path / "alone.png"), "-q"]) == 0
    assert [ax.get_title() for ax in figures[-1].axes] == ["RGB composite", "label"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{pred}", "--mask", "{mask}"], "is not a scene"),
        (["{scene}", "--time", "0"], "multispectral scene"),
        (["{scene}", "--vs", "{pred}"], "multispectral scene"),
        (["{scene}", "--mask", "{small}"], "needs the mask of this scene"),
        (["{scene}", "--mask", "{missing}"], "check the --mask path"),
        (["{scene}", "--mask", "{nomask}"], "flag variables"),
        (["{scene}", "--mask", "{untagged}"], "no flag_meanings tag"),
        (["{scene}", "--mask", "{broken_tif}"], "cannot read"),
    ],
)
def test_scene_mistakes_are_one_line_errors(
    args: list[str],
    message: str,
    scene_and_mask: tuple[Path, Path],
    pair: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import xarray as xr

    scene, mask = scene_and_mask
    with xr.open_dataset(mask) as ds:
        ds.isel(x=slice(0, 10)).to_netcdf(tmp_path / "small.nc")
        xr.Dataset(
            {"v": ds["cloud_mask"].astype("f4").assign_attrs(flag_meanings=None)}
        ).drop_attrs().to_netcdf(tmp_path / "nomask.nc")
    import rasterio

    with rasterio.open(
        tmp_path / "untagged.tif", "w", driver="GTiff", height=32, width=48, count=1, dtype="uint8"
    ) as dst:  # a GeoTIFF without the classes climdl segment writes
        dst.write(np.zeros((1, 32, 48), "uint8"))
    (tmp_path / "broken.tif").write_bytes(b"II*\x00 truncated")
    names = {
        "scene": str(scene),
        "mask": str(mask),
        "pred": str(pair[0]),
        "small": str(tmp_path / "small.nc"),
        "missing": str(tmp_path / "missing.nc"),
        "nomask": str(tmp_path / "nomask.nc"),
        "untagged": str(tmp_path / "untagged.tif"),
        "broken_tif": str(tmp_path / "broken.tif"),
    }
    argv = ["plot", *(a.format(**names) for a in args), "--out", str(tmp_path / "err.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "err.png").exists()


def test_scene_plot_reads_only_rgb_and_label_every_nth_pixel(
    scene_and_mask: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    figures: list[Any],
) -> None:
    """Above MAX_SCENE_SIDE a scene is read every n-th pixel, and only its red, green and blue
    bands and its label: what reaches the composite is already small."""
    import climdl.plot.masks as masks
    import climdl.plot.quicklook as quicklook

    seen: list[Any] = []
    real = masks.rgb_composite

    def spy(scene: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(scene)
        return real(scene, *args, **kwargs)

    monkeypatch.setattr(masks, "rgb_composite", spy)
    monkeypatch.setattr(quicklook, "MAX_SCENE_SIDE", 16)  # 32 x 48 -> every 3rd pixel: 11 x 16
    scene, mask = scene_and_mask
    out = tmp_path / "small.png"
    assert main(["plot", str(scene), "--mask", str(mask), "--out", str(out), "-q"]) == 0
    (loaded,) = seen
    assert list(loaded["band"].values) == ["red", "green", "blue"]
    assert set(loaded.data_vars) == {"image", "mask"}
    assert dict(loaded["image"].sizes) == {"band": 3, "y": 11, "x": 16}
    overlays = [
        next(im for im in ax.get_images() if im.get_gid() == "mask").get_array()
        for ax in figures[-1].axes[1:]
    ]
    assert [o.shape[:2] for o in overlays] == [(11, 16), (11, 16)]
    assert "(1 pixel in 3 along each axis)" in figures[-1].get_suptitle()
