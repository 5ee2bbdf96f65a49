"""Landsat 8/9 Collection 2 Level-1 products and multi-band GeoTIFFs as scenes: the handbook's
conversions, lazy windowed reads, the grid, clear errors, and ``climdl segment`` end to end.

The products are synthetic but laid out like the real ones: uint16 DN band files
``<product>_B2.TIF`` ... ``_B10.TIF`` on a 30 m UTM 32N grid with a DN-0 no-data margin, and the
``_MTL.txt`` (ODL) / ``_MTL.json`` metadata with the keys of a real C2 L1 MTL."""

from __future__ import annotations

import copy
import json
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.crs import CRS as RioCRS
from rasterio.enums import Compression
from rasterio.transform import Affine

from climdl.cli import main
from climdl.clouds import raster
from climdl.clouds.geotiff import open_geotiff
from climdl.clouds.landsat import LANDSAT_BAND_NUMBERS, open_landsat
from climdl.clouds.mtl import read_mtl
from climdl.clouds.readers import open_scene
from climdl.clouds.scene import LANDSAT_BANDS, NODATA, validate_scene
from climdl.clouds.synthetic import make_scene
from climdl.errors import DataError
from climdl.inference import segment_geotiff, segment_netcdf
from tests.argv import segment_argv
from tests.cfcheck import cf_errors
from tests.clouds_harness import sample_clouds_argv, train_tiny_segmenter

H, W = 96, 80
X0, Y0 = 499_980.0, 5_300_040.0  # upper-left corner, EPSG:32632 (UTM 32N)
PRODUCT = "LC08_L1TP_195027_20230715_20230725_02_T1"
SUN_ELEVATION, SUN_AZIMUTH = 55.0, 140.25
REFL_MULT, REFL_ADD = 2.0e-05, -0.1
RAD_MULT, RAD_ADD = 3.342e-04, 0.1
K1, K2 = 774.8853, 1321.0789


def _mtl_groups(drop: str | None = None) -> dict[str, dict[str, Any]]:
    """The groups and keys of a real C2 L1 MTL that climdl uses (and a few it does not)."""
    files = {f"FILE_NAME_BAND_{n}": f"{PRODUCT}_B{n}.TIF" for n in (1, 2, 3, 4, 5, 6, 7, 10)}
    rescale: dict[str, Any] = {}
    for n in (2, 3, 4, 5, 6, 7):
        rescale[f"RADIANCE_MULT_BAND_{n}"] = 1.2e-02
        rescale[f"RADIANCE_ADD_BAND_{n}"] = -60.0
    rescale["RADIANCE_MULT_BAND_10"] = RAD_MULT
    rescale["RADIANCE_ADD_BAND_10"] = RAD_ADD
    for n in (2, 3, 4, 5, 6, 7):
        rescale[f"REFLECTANCE_MULT_BAND_{n}"] = REFL_MULT
        rescale[f"REFLECTANCE_ADD_BAND_{n}"] = REFL_ADD
    groups = {
        "PRODUCT_CONTENTS": {
            "ORIGIN": "Image courtesy of the U.S. Geological Survey",
            "LANDSAT_PRODUCT_ID": PRODUCT,
            "PROCESSING_LEVEL": "L1TP",
            "COLLECTION_NUMBER": "02",
            **files,
            "FILE_NAME_METADATA_ODL": f"{PRODUCT}_MTL.txt",
        },
        "IMAGE_ATTRIBUTES": {
            "SPACECRAFT_ID": "LANDSAT_8",
            "SENSOR_ID": "OLI_TIRS",
            "WRS_PATH": 195,
            "WRS_ROW": 27,
            "DATE_ACQUIRED": "2023-07-15",
            "SCENE_CENTER_TIME": "10:14:58.1234560Z",
            "CLOUD_COVER": 12.34,
            "SUN_AZIMUTH": SUN_AZIMUTH,
            "SUN_ELEVATION": SUN_ELEVATION,
            "EARTH_SUN_DISTANCE": 1.0162345,
        },
        "PROJECTION_ATTRIBUTES": {
            "MAP_PROJECTION": "UTM",
            "DATUM": "WGS84",
            "UTM_ZONE": 32,
            "GRID_CELL_SIZE_REFLECTIVE": 30.0,
            "GRID_CELL_SIZE_THERMAL": 30.0,
            "REFLECTIVE_LINES": H,
            "REFLECTIVE_SAMPLES": W,
        },
        "LEVEL1_RADIOMETRIC_RESCALING": rescale,
        "LEVEL1_THERMAL_CONSTANTS": {
            "K1_CONSTANT_BAND_10": K1,
            "K2_CONSTANT_BAND_10": K2,
            "K1_CONSTANT_BAND_11": 480.8883,
            "K2_CONSTANT_BAND_11": 1201.1442,
        },
    }
    for g in groups.values():
        g.pop(drop or "", None)
    return groups


def _odl(groups: dict[str, dict[str, Any]]) -> str:
    """The MTL text (ODL) form: quoted strings, bare numbers, two-space indents."""
    lines = ["GROUP = LANDSAT_METADATA_FILE"]
    for name, keys in groups.items():
        lines.append(f"  GROUP = {name}")
        for k, v in keys.items():
            bare = isinstance(v, int | float) or k in ("COLLECTION_NUMBER", "DATE_ACQUIRED")
            lines.append(f"    {k} = {v if bare else json.dumps(v)}")
        lines.append(f"  END_GROUP = {name}")
    lines += ["END_GROUP = LANDSAT_METADATA_FILE", "END"]
    return "\n".join(lines) + "\n"


def _to_dn(image: np.ndarray) -> np.ndarray:
    """Invert the handbook's conversions: scene values (7, H, W) -> uint16 DN, NaN -> 0."""
    sin_e = math.sin(math.radians(SUN_ELEVATION))
    dn = np.zeros(image.shape, dtype=np.float64)
    dn[:6] = (image[:6] * sin_e - REFL_ADD) / REFL_MULT
    radiance = K1 / (np.exp(K2 / image[6].astype(np.float64)) - 1.0)
    dn[6] = (radiance - RAD_ADD) / RAD_MULT
    out = np.clip(np.round(np.nan_to_num(dn, nan=0.0)), 1, 65535).astype(np.uint16)
    out[:, np.isnan(image).any(0)] = 0
    out[:, :, :6] = 0  # the no-data margin of a Landsat scene's edge
    out[:, -4:, :] = 0
    return out


def _expected(dn: np.ndarray) -> np.ndarray:
    """The handbook's TOA reflectance and brightness temperature of the DNs (float64)."""
    sin_e = math.sin(math.radians(SUN_ELEVATION))
    out = np.empty(dn.shape, dtype=np.float64)
    out[:6] = (REFL_MULT * dn[:6] + REFL_ADD) / sin_e
    out[6] = K2 / np.log(K1 / (RAD_MULT * dn[6] + RAD_ADD) + 1.0)
    out[:, (dn == 0).any(0)] = np.nan
    return out


def _profile(count: int, dtype: str) -> dict[str, Any]:
    return {
        "driver": "GTiff",
        "height": H,
        "width": W,
        "count": count,
        "dtype": dtype,
        "crs": "EPSG:32632",
        "transform": Affine(30.0, 0.0, X0, 0.0, -30.0, Y0),
        "tiled": True,
        "blockxsize": 32,
        "blockysize": 32,
        "compress": "deflate",
    }


def write_product(
    folder: Path, seed: int = 5, drop_key: str | None = None
) -> tuple[Path, np.ndarray]:
    """A synthetic C2 L1 product in ``folder``: the MTL path and the DNs (7, H, W)."""
    folder.mkdir(parents=True, exist_ok=True)
    scene = make_scene(np.random.SeedSequence([seed]), (H, W), pixel_size=30.0)
    dn = _to_dn(scene.image)
    for i, band in enumerate(LANDSAT_BANDS):
        n = LANDSAT_BAND_NUMBERS[band.name]
        with rasterio.open(folder / f"{PRODUCT}_B{n}.TIF", "w", **_profile(1, "uint16")) as f:
            f.write(dn[i], 1)
    mtl = folder / f"{PRODUCT}_MTL.txt"
    mtl.write_text(_odl(_mtl_groups(drop_key)))
    return mtl, dn


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    return write_product(tmp_path_factory.mktemp("landsat") / PRODUCT)


# ----------------------------------------------------------------------------- reading
def test_landsat_values_follow_the_handbook(product: tuple[Path, np.ndarray]) -> None:
    mtl, dn = product
    with open_scene(mtl) as ds:
        validate_scene(ds, mtl)
        assert ds["image"].dims == ("band", "y", "x") and ds["image"].shape == (7, H, W)
        assert ds["image"].dtype == np.float32
        assert list(ds["band"].values) == [b.name for b in LANDSAT_BANDS]
        np.testing.assert_allclose(ds["wavelength"].values, [b.wavelength for b in LANDSAT_BANDS])
        assert list(ds["band_units"].values) == ["1"] * 6 + ["K"]
        img = ds["image"].values
    expect = _expected(dn.astype(np.float64))
    np.testing.assert_array_equal(np.isnan(img), np.isnan(expect))
    np.testing.assert_allclose(img, expect, rtol=1e-6)
    # a few pixels by hand: DN -> reflectance / brightness temperature
    r, c = 40, 33
    sin_e = math.sin(math.radians(SUN_ELEVATION))
    assert img[2, r, c] == pytest.approx((REFL_MULT * dn[2, r, c] + REFL_ADD) / sin_e, rel=1e-6)
    bt = K2 / math.log(K1 / (RAD_MULT * float(dn[6, r, c]) + RAD_ADD) + 1.0)
    assert img[6, r, c] == pytest.approx(bt, rel=1e-6) and 180 < bt < 340
    assert np.isnan(img[:, :, :6]).all() and np.isnan(img[:, -4:]).all()  # DN 0 -> NaN
    valid = ~np.isnan(img).any(0)
    assert valid.sum() > 0.5 * H * W
    assert 0.0 < np.nanmedian(img[:6]) < 1.0


def test_landsat_grid_attrs_and_grid_mapping(product: tuple[Path, np.ndarray]) -> None:
    from pyproj import CRS, Transformer

    mtl, _ = product
    with open_scene(mtl.parent) as ds:  # the folder works as well as the MTL file
        np.testing.assert_array_equal(ds["x"].values, X0 + 15.0 + 30.0 * np.arange(W))
        np.testing.assert_array_equal(ds["y"].values, Y0 - 15.0 - 30.0 * np.arange(H))
        assert ds["x"].attrs["units"] == "m"
        assert ds["x"].attrs["standard_name"] == "projection_x_coordinate"
        assert ds["image"].attrs["grid_mapping"] == "crs"
        gm = ds["crs"].attrs
        assert CRS.from_wkt(gm["crs_wkt"]).to_epsg() == 32632
        assert gm["grid_mapping_name"] == "transverse_mercator"
        assert gm["longitude_of_central_meridian"] == pytest.approx(9.0)
        assert ds.attrs["sun_zenith_angle"] == pytest.approx(90.0 - SUN_ELEVATION)
        assert ds.attrs["sun_azimuth_angle"] == pytest.approx(SUN_AZIMUTH)
        assert ds.attrs["pixel_size_m"] == pytest.approx(30.0)
        assert ds.attrs["scene_id"] == PRODUCT and ds.attrs["spacecraft_id"] == "LANDSAT_8"
        lon, lat = Transformer.from_crs(32632, 4326, always_xy=True).transform(
            float(ds["x"][7]), float(ds["y"][50])
        )
        assert float(ds["lat"][50, 7]) == pytest.approx(lat, abs=1e-5)
        assert float(ds["lon"][50, 7]) == pytest.approx(lon, abs=1e-5)
        assert 47.0 < lat < 48.0 and 8.9 < lon < 9.1


def test_landsat_reads_only_the_window_asked_for(
    product: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is read on opening; a strip of rows reads that strip's window of each band."""
    mtl, dn = product
    windows: list[Any] = []
    real_read = rasterio.io.DatasetReader.read

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        windows.append(kwargs.get("window"))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    ds = open_landsat(mtl)
    assert windows == []
    strip = ds["image"].isel(band=[6, 0], y=slice(20, 36)).values
    assert strip.shape == (2, 16, W)
    assert len(windows) == 2
    assert all((w.row_off, w.height, w.col_off, w.width) == (20, 16, 0, W) for w in windows)
    expect = _expected(dn.astype(np.float64))[[6, 0], 20:36]
    np.testing.assert_allclose(strip, expect, rtol=1e-6)
    np.testing.assert_allclose(
        ds["image"].isel(band=3, y=41, x=slice(70, 10, -7)).values,
        _expected(dn.astype(np.float64))[3, 41, 70:10:-7],
        rtol=1e-6,
    )


def test_thinned_reads_take_every_nth_pixel_in_bounded_strips(
    product: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``isel(y=::3, x=::3)`` (as ``climdl plot`` reads a large scene) gives exactly the full
    read thinned, read in strips of at most STRIP_PIXELS pixels, never the whole span."""
    mtl, dn = product
    ds = open_landsat(mtl)
    full = ds["image"].values
    lat = ds["lat"].values
    bound = 4 * W  # four rows of the scene per read
    monkeypatch.setattr(raster, "STRIP_PIXELS", bound)
    sizes: list[int] = []
    real_read = rasterio.io.DatasetReader.read

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = real_read(self, *args, **kwargs)
        sizes.append(out.shape[-2] * out.shape[-1])
        return out

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    every3 = ds.isel(y=slice(None, None, 3), x=slice(None, None, 3))
    thin = every3["image"].values
    assert thin.shape == (7, 32, 27)
    np.testing.assert_array_equal(thin, full[:, ::3, ::3])
    np.testing.assert_allclose(thin, _expected(dn.astype(np.float64))[:, ::3, ::3], rtol=1e-6)
    assert sizes and max(sizes) <= bound, sizes
    assert len(sizes) == 7 * 16  # two thinned rows (a strip of four) per read, per band
    np.testing.assert_array_equal(every3["lat"].values, lat[::3, ::3])
    for y, x in (
        (slice(5, 90, 7), slice(3, None, 4)),
        (slice(None, None, -5), slice(70, 10, -7)),
        ([3, 50, 10], 4),
        (41, slice(None, None, 2)),
    ):
        sizes.clear()
        np.testing.assert_array_equal(ds["image"].isel(y=y, x=x).values, full[:, y, x])
        np.testing.assert_array_equal(ds["lat"].isel(y=y, x=x).values, lat[y, x])
        assert max(sizes) <= max(bound, 48 * W), (y, x, sizes)  # [3, 50, 10]: its range


def test_scenes_pickle_and_copy(product: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """Lazy Landsat and GeoTIFF scenes pickle (to Dask, say) and copy, deep or not."""
    mtl, dn = product
    ds = open_landsat(mtl)
    image, lat = ds["image"].values, ds["lat"].values  # the lat/lon cache is filled
    for again in (pickle.loads(pickle.dumps(ds)), ds.copy(deep=True), copy.deepcopy(ds)):
        np.testing.assert_array_equal(again["image"].values, image)
        np.testing.assert_array_equal(again["lat"].values, lat)
    np.testing.assert_array_equal(ds.image.copy().values, image)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(ds["image"])).values, image)
    tif = _write_geotiff(
        tmp_path / "scene.tif", _expected(dn.astype(np.float64)), [b.name for b in LANDSAT_BANDS]
    )
    with open_geotiff(tif) as g:
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(g))["image"].values, g["image"])
        np.testing.assert_array_equal(g.copy(deep=True)["image"].values, g["image"].values)


def test_level2_product_is_rejected_in_one_sentence(tmp_path: Path) -> None:
    """An L2SP MTL (surface reflectance first, band 10 as FILE_NAME_BAND_ST_B10) is named as
    Level-2, not reported as a missing band file or, worse, read as if Level-1."""
    mtl, _ = write_product(tmp_path / PRODUCT)
    groups = _mtl_groups()
    contents = groups["PRODUCT_CONTENTS"]
    contents["PROCESSING_LEVEL"] = "L2SP"
    for n in (1, 2, 3, 4, 5, 6, 7):
        contents[f"FILE_NAME_BAND_{n}"] = f"{PRODUCT}_SR_B{n}.TIF"
        if n > 1:  # the synthetic product has no band 1
            (mtl.parent / f"{PRODUCT}_B{n}.TIF").rename(mtl.parent / f"{PRODUCT}_SR_B{n}.TIF")
    del contents["FILE_NAME_BAND_10"]
    contents["FILE_NAME_BAND_ST_B10"] = f"{PRODUCT}_ST_B10.TIF"
    (mtl.parent / f"{PRODUCT}_B10.TIF").rename(mtl.parent / f"{PRODUCT}_ST_B10.TIF")
    groups["LEVEL1_PROCESSING_RECORD"] = {"PROCESSING_LEVEL": "L1TP"}  # as in a real L2 MTL
    mtl.write_text(_odl(groups))
    with pytest.raises(DataError) as info:
        open_scene(mtl)
    msg = str(info.value)
    assert f"{PRODUCT}_MTL.txt is a Level-2 product (L2SP); climdl segment needs Level-1 " in msg
    assert "top-of-atmosphere data (L1TP/L1GT/L1GS)" in msg
    assert msg.count(". ") == 0 and msg.endswith(".") and "missing" not in msg
    # the JSON form says the same
    jmtl = mtl.with_name(f"{PRODUCT}_MTL.json")
    jgroups = {g: {k: str(v) for k, v in keys.items()} for g, keys in groups.items()}
    jmtl.write_text(json.dumps({"LANDSAT_METADATA_FILE": jgroups}))
    with pytest.raises(DataError, match=r"is a Level-2 product \(L2SP\)"):
        open_landsat(jmtl)


def test_mtl_json_form_gives_the_same_scene(
    product: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """The JSON MTL (every value a string, as USGS writes it) reads like the text one."""
    mtl, _ = product
    folder = tmp_path / PRODUCT
    folder.mkdir()
    for f in mtl.parent.glob("*.TIF"):
        (folder / f.name).symlink_to(f)
    groups = {g: {k: str(v) for k, v in keys.items()} for g, keys in _mtl_groups().items()}
    jmtl = folder / f"{PRODUCT}_MTL.json"
    jmtl.write_text(json.dumps({"LANDSAT_METADATA_FILE": groups}, indent=2))
    assert read_mtl(jmtl)["SUN_ELEVATION"] == str(SUN_ELEVATION)
    assert read_mtl(mtl)["SUN_ELEVATION"] == SUN_ELEVATION
    with open_scene(jmtl) as a, open_scene(mtl) as b:
        xr.testing.assert_identical(a["image"], b["image"])
        assert a.attrs["sun_zenith_angle"] == b.attrs["sun_zenith_angle"]
    with open_scene(folder) as c:  # a folder with only the JSON form
        assert c.attrs["scene_id"] == PRODUCT


def test_missing_band_file_or_mtl_key_is_one_clear_sentence(tmp_path: Path) -> None:
    mtl, _ = write_product(tmp_path / "a")
    (mtl.parent / f"{PRODUCT}_B6.TIF").unlink()
    with pytest.raises(DataError, match=r"swir16 band file .*_B6\.TIF \(Landsat band 6\)"):
        open_scene(mtl)
    mtl, _ = write_product(tmp_path / "b", drop_key="K1_CONSTANT_BAND_10")
    with pytest.raises(DataError, match="lacks K1_CONSTANT_BAND_10"):
        open_scene(mtl)
    mtl, _ = write_product(tmp_path / "c", drop_key="SUN_ELEVATION")
    with pytest.raises(DataError, match="lacks SUN_ELEVATION"):
        open_scene(mtl)
    with pytest.raises(DataError, match="without a Landsat"):
        open_scene(tmp_path)


def _write_geotiff(path: Path, image: np.ndarray, names: list[str] | None, **tags: Any) -> Path:
    with rasterio.open(path, "w", **_profile(image.shape[0], "float32"), nodata=float("nan")) as f:
        f.write(image.astype(np.float32))
        for i in range(image.shape[0]):
            if names is not None:
                f.set_band_description(i + 1, names[i])
            if "wavelengths" in tags:
                f.update_tags(i + 1, wavelength=str(tags["wavelengths"][i]))
        f.update_tags(sun_zenith_angle="35.0", sun_azimuth_angle="140.25")
    return path


def test_geotiff_bands_are_named_by_description_or_wavelength(
    product: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    _, dn = product
    image = _expected(dn.astype(np.float64))
    names = [b.name for b in LANDSAT_BANDS]
    named = _write_geotiff(tmp_path / "scene.tif", image, names)
    with open_scene(named) as ds:
        validate_scene(ds, named)
        assert list(ds["band"].values) == names
        assert list(ds["band_units"].values) == ["1"] * 6 + ["K"]
        np.testing.assert_allclose(ds["image"].values, image.astype(np.float32))
        assert ds.attrs["sun_zenith_angle"] == 35.0 and ds.attrs["pixel_size_m"] == 30.0
        np.testing.assert_array_equal(ds["x"].values, X0 + 15.0 + 30.0 * np.arange(W))
    wl = [b.wavelength for b in LANDSAT_BANDS]
    by_wl = _write_geotiff(tmp_path / "wl.tif", image[::-1], None, wavelengths=wl[::-1])
    with open_geotiff(by_wl) as ds:
        assert list(ds["band"].values) == names[::-1]
        assert list(ds["band_units"].values) == ["K"] + ["1"] * 6
    unnamed = _write_geotiff(tmp_path / "anon.tif", image, None)
    with pytest.raises(DataError, match=r"band\(s\) 1, 2, 3, 4, 5, 6, 7 of 7 have no name"):
        open_scene(unnamed)


# ----------------------------------------------------------------------------- segment
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint trained for one short epoch on sample scenes, as in test_clouds_cli."""
    return train_tiny_segmenter(tmp_path_factory.mktemp("clouds-ckpt"))


def _segment(
    ckpt: Path, scene: Path, out: Path, *extra: str, tile: int = 64, overlap: int = 16
) -> int:
    argv = segment_argv(ckpt, scene, out, *extra)
    argv += ["--tile", str(tile), "--overlap", str(overlap)]
    return main([*argv, "--device", "cpu", "--quiet"])


def _check_mask(out: Path, scene: xr.Dataset) -> np.ndarray:
    with xr.open_dataset(out, mask_and_scale=False) as m:
        mask = m["cloud_mask"]
        assert mask.dims == ("y", "x") and mask.shape == (H, W) and mask.dtype == np.uint8
        np.testing.assert_array_equal(m["x"].values, scene["x"].values)
        np.testing.assert_array_equal(m["y"].values, scene["y"].values)
        assert m["x"].attrs["units"] == "m" and "_FillValue" not in m["x"].attrs
        assert mask.attrs["grid_mapping"] == "crs" and "crs_wkt" in m["crs"].attrs
        assert m["crs"].attrs["grid_mapping_name"] == "transverse_mercator"
        assert mask.attrs["flag_meanings"] == "clear cloud thin_cloud cloud_shadow snow"
        assert list(mask.attrs["flag_values"]) == [0, 1, 2, 3, 4]
        assert mask.attrs["_FillValue"] == NODATA
        nodata = np.isnan(scene["image"].values).any(0)
        np.testing.assert_array_equal(mask.values == NODATA, nodata)
        assert m.attrs["Conventions"] == "CF-1.10" and "climdl segment" in m.attrs["history"]
        values: np.ndarray = mask.values
    with xr.open_dataset(out, decode_coords="all") as d:  # CF decoding: grid mapping, lat/lon
        assert "crs" in d.coords and {"lat", "lon"} <= set(d.coords)
        np.testing.assert_allclose(d["lat"].values, scene["lat"].values)
        assert d["cloud_mask"].encoding["grid_mapping"] == "crs"
    assert cf_errors(out) == []
    return values


def test_segment_a_landsat_product_and_a_geotiff(
    ckpt: Path,
    product: tuple[Path, np.ndarray],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mtl, _ = product
    out = tmp_path / "mask.nc"
    assert _segment(ckpt, mtl, out) == 0
    with open_scene(mtl) as scene:
        from_landsat = _check_mask(out, scene)
        assert (from_landsat != NODATA).sum() > 0.5 * H * W
        with xr.open_dataset(out) as m:
            assert m.attrs["input_scene_id"] == PRODUCT
            assert m.attrs["input_file"] == str(mtl.resolve())
        tif = _write_geotiff(
            tmp_path / "scene.tif", scene["image"].values, [str(b) for b in scene["band"].values]
        )
    out_tif = tmp_path / "mask_tif.nc"
    assert _segment(ckpt, tif, out_tif) == 0
    with open_scene(tif) as scene:
        np.testing.assert_array_equal(_check_mask(out_tif, scene), from_landsat)
    capsys.readouterr()
    anon = _write_geotiff(tmp_path / "anon.tif", np.ones((7, H, W)), None)
    assert _segment(ckpt, anon, tmp_path / "anon.nc") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no name" in err and "--description" in err
    assert "Traceback" not in err and not (tmp_path / "anon.nc").exists()


def test_segment_a_truncated_band_file_is_one_clear_line(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A band file cut short (an interrupted download) opens but fails at pixel-read time:
    ``climdl segment`` exits 2 with one sentence naming it, and leaves no output behind."""
    mtl, _ = write_product(tmp_path / PRODUCT)
    band = mtl.parent / f"{PRODUCT}_B4.TIF"
    data = band.read_bytes()
    band.write_bytes(data[: len(data) // 2])
    ds = open_landsat(mtl)  # the header is intact
    with pytest.raises(DataError, match=r"cannot read .*_B4\.TIF: .*re-download it\)\.$"):
        ds["image"].load()
    out = tmp_path / "out"
    out.mkdir()
    capsys.readouterr()
    for name in ("mask.nc", "mask.tif"):
        assert _segment(ckpt, mtl, out / name) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert f"{PRODUCT}_B4.TIF" in err and "may be incomplete (re-download it)" in err, err
        assert list(out.iterdir()) == []


# ----------------------------------------------------------------------------- GeoTIFF output
CLASS_NAMES = ["clear", "cloud", "thin_cloud", "cloud_shadow", "snow"]


def test_a_geotiff_cut_short_by_a_full_disk_is_an_error_not_a_file(
    ckpt: Path,
    product: tuple[Path, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GDAL reports a write that fails at close only on stderr and rasterio raises nothing:
    a truncated GeoTIFF is found by its block table, and on a full disk segment exits 2 with
    one sentence and leaves no file."""
    import errno

    mtl, _ = product
    good = tmp_path / "good.tif"
    assert _segment(ckpt, mtl, good) == 0
    assert segment_geotiff._complete(good)
    data = good.read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) - 10])
    (tmp_path / "head.tif").write_bytes(data[:100])
    assert not segment_geotiff._complete(tmp_path / "cut.tif")
    assert not segment_geotiff._complete(tmp_path / "head.tif")
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(segment_geotiff, "_complete", lambda path: False)  # as on a full disk
    monkeypatch.setattr(segment_geotiff, "space_error", lambda path: errno.ENOSPC)
    capsys.readouterr()
    assert _segment(ckpt, mtl, out / "mask.tif", "--probabilities") == 2
    err = capsys.readouterr().err.strip()
    assert "no space left on the device" in err and str(out / "mask") in err, err
    assert list(out.iterdir()) == []


def test_segment_a_landsat_product_to_a_geotiff(
    ckpt: Path,
    product: tuple[Path, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``-o mask.tif``: the NetCDF mask's classes as a north-up, tiled, DEFLATE GeoTIFF on the
    product's own grid, and the probabilities in ``mask_probability.tif``."""
    mtl, _ = product
    # 32-row blocks: the 96 rows, finished 32 then 64 at a time, fill three rows of blocks
    monkeypatch.setattr(segment_geotiff, "GEOTIFF_BLOCK", 32)
    assert _segment(ckpt, mtl, tmp_path / "mask.nc") == 0
    capsys.readouterr()
    assert _segment(ckpt, mtl, tmp_path / "mask.tif", "--probabilities") == 0
    printed = capsys.readouterr().out.split()  # both outputs' paths, for scripts
    assert printed == [str(tmp_path / "mask.tif"), str(tmp_path / "mask_probability.tif")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mask.nc",
        "mask.tif",
        "mask_probability.tif",
    ]  # no temporary files left
    with rasterio.open(mtl.parent / f"{PRODUCT}_B4.TIF") as band:
        band_transform = band.transform
    with open_scene(mtl) as scene:
        nodata = np.isnan(scene["image"].values).any(0)
    with xr.open_dataset(tmp_path / "mask.nc", mask_and_scale=False) as nc:
        expect = nc["cloud_mask"].values
        nc_attrs = dict(nc.attrs)
    with rasterio.open(tmp_path / "mask.tif") as m:
        assert m.driver == "GTiff" and m.count == 1 and m.dtypes == ("uint8",)
        assert m.crs == RioCRS.from_epsg(32632) and m.crs.to_epsg() == 32632
        assert m.transform == band_transform
        assert (m.height, m.width) == (H, W) and m.nodata == NODATA
        assert m.compression == Compression.deflate and m.profile["tiled"]
        assert m.block_shapes == [(32, 32)]
        assert m.descriptions == ("cloud_mask",)
        mask = m.read(1)
        band_tags, tags = m.tags(1), m.tags()
        colours = m.colormap(1)
    np.testing.assert_array_equal(mask == NODATA, nodata)
    np.testing.assert_array_equal(mask, expect)
    assert band_tags["flag_values"] == "0 1 2 3 4"
    assert band_tags["flag_meanings"] == " ".join(CLASS_NAMES)
    assert colours[1] == (0xE7, 0x29, 0x8A, 255)  # cloud magenta, as climdl.plot draws it
    assert colours[4] == (0x00, 0xE5, 0xEE, 255)  # snow cyan
    assert colours[0] == segment_geotiff.CLEAR_GREY  # a TIFF palette has no alpha
    for key in ("climdl_version", "climdl_checkpoint_sha256", "input_file", "tiling", "classes"):
        assert tags[key] == str(nc_attrs[key]), key
    assert tags["climdl_checkpoint"] == str(ckpt.resolve()) and tags["input_scene_id"] == PRODUCT
    with rasterio.open(tmp_path / "mask_probability.tif") as pf:
        assert pf.count == len(CLASS_NAMES) and set(pf.dtypes) == {"float32"}
        assert list(pf.descriptions) == CLASS_NAMES and np.isnan(pf.nodata)
        assert pf.crs == RioCRS.from_epsg(32632) and pf.transform == band_transform
        probs = pf.read()
        assert pf.tags()["climdl_checkpoint_sha256"] == tags["climdl_checkpoint_sha256"]
    ok = ~nodata
    assert np.isnan(probs[:, nodata]).all() and np.isfinite(probs[:, ok]).all()
    np.testing.assert_allclose(probs.sum(0)[ok], 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(0)[ok], mask[ok])


def test_segment_header_projects_each_lat_lon_strip_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``climdl segment`` copies ``lat`` and ``lon`` strip by strip together, so the lazy grid
    (which computes both of a strip at once) projects a scene taller than a strip once."""
    import netCDF4
    import pyproj

    rows, cols = 1100, 6  # three 512-row strips
    profile = _profile(7, "float32") | {"height": rows, "width": cols, "blockysize": 16}
    profile["blockxsize"] = 16
    path = tmp_path / "tall.tif"
    with rasterio.open(path, "w", **profile) as f:
        f.write(np.full((7, rows, cols), 0.2, np.float32))
        for i, band in enumerate(LANDSAT_BANDS):
            f.set_band_description(i + 1, band.name)
    ds = open_geotiff(path)
    calls: list[int] = []
    real = pyproj.Transformer.from_crs

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pyproj.Transformer, "from_crs", counting)
    with netCDF4.Dataset(tmp_path / "out.nc", "w", format="NETCDF4") as dst:
        segment_netcdf._write_header(dst, ds, "image", "y", "x", rows, cols, CLASS_NAMES, False)
    assert len(calls) == 3
    monkeypatch.undo()
    with xr.open_dataset(tmp_path / "out.nc") as out:
        np.testing.assert_array_equal(out["lat"].values, ds["lat"].values)
        np.testing.assert_array_equal(out["lon"].values, ds["lon"].values)


def _sample_scene(root: Path) -> Path:
    """A 50 x 40 sample scene (north-up, y descending) with its ``crs`` grid mapping."""
    assert main(sample_clouds_argv(root, 1, (50, 40), 7)) == 0
    return root / "scene_000.nc"


def test_geotiff_of_a_scene_with_y_ascending_is_written_north_up(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows stored south to north are written reversed, block by block (blocks of 16 over 50
    rows: the last row of blocks is partial, and is finished first)."""
    monkeypatch.setattr(segment_geotiff, "GEOTIFF_BLOCK", 16)
    north_up = _sample_scene(tmp_path / "sample")
    with xr.open_dataset(north_up) as ds:
        ds.isel(y=slice(None, None, -1)).to_netcdf(tmp_path / "up.nc")
    for out in ("up_mask.nc", "up_mask.tif"):
        assert _segment(ckpt, tmp_path / "up.nc", tmp_path / out, tile=16, overlap=4) == 0
    with xr.open_dataset(tmp_path / "up.nc") as scene:
        x, y = scene["x"].values, scene["y"].values
        nodata = np.isnan(scene["image"].values).any(0)
        crs_wkt = scene["crs"].attrs["crs_wkt"]
    assert np.all(np.diff(y) > 0)
    px = float(x[1] - x[0])
    with xr.open_dataset(tmp_path / "up_mask.nc", mask_and_scale=False) as nc:
        expect = nc["cloud_mask"].values
    with rasterio.open(tmp_path / "up_mask.tif") as m:
        assert m.transform.almost_equals(
            Affine(px, 0.0, x[0] - px / 2, 0.0, -px, y[-1] + px / 2), precision=1e-6
        )
        assert m.crs == RioCRS.from_wkt(crs_wkt)
        assert m.block_shapes == [(16, 16)]
        mask = m.read(1)
    np.testing.assert_array_equal(mask, expect[::-1])
    np.testing.assert_array_equal(mask[::-1] == NODATA, nodata)


def test_plot_puts_a_north_up_geotiff_mask_back_in_the_scene_row_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scene stored south to north and its label written as a north-up GeoTIFF mask: ``climdl
    plot`` draws the same overlay as from the NetCDF mask in the scene's own order."""
    north_up = _sample_scene(tmp_path / "sample")
    with xr.open_dataset(north_up) as ds:
        up = ds.isel(y=slice(None, None, -1)).load()
    up.to_netcdf(tmp_path / "up.nc")
    label = up["mask"].values.astype(np.uint8)
    assert not np.array_equal(label, label[::-1])  # the test can see a flip
    attrs = {"flag_meanings": up["mask"].attrs["flag_meanings"]}
    xr.Dataset({"cloud_mask": (("y", "x"), label, attrs)}).to_netcdf(tmp_path / "m.nc")
    x, y = up["x"].values, up["y"].values
    px = float(x[1] - x[0])
    profile = _profile(1, "uint8") | {"height": label.shape[0], "width": label.shape[1]}
    profile["transform"] = Affine(px, 0.0, x[0] - px / 2, 0.0, -px, y[-1] + px / 2)
    with rasterio.open(tmp_path / "m.tif", "w", **profile) as dst:
        dst.write(label[::-1], 1)
        dst.update_tags(1, flag_meanings=attrs["flag_meanings"])
    assert _plotted_masks(tmp_path / "up.nc", tmp_path / "m.tif", monkeypatch) == (
        _plotted_masks(tmp_path / "up.nc", tmp_path / "m.nc", monkeypatch)
    )


def _plotted_masks(scene: Path, mask: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """The class overlay ``climdl plot SCENE --mask MASK`` draws in its last panel (RGBA bytes)."""
    import climdl.plot.quicklook as quicklook

    figs: list[Any] = []
    monkeypatch.setattr(quicklook, "save_figure", lambda fig, path, **kw: figs.append(fig) or path)
    assert main(["plot", str(scene), "--mask", str(mask), "--out", "unused.png", "-q"]) == 0
    ax = figs[-1].axes[-1]
    return bytes(next(i for i in ax.get_images() if i.get_gid() == "mask").get_array().tobytes())


def test_plot_a_landsat_product_with_its_geotiff_mask_in_bounded_size(
    ckpt: Path, product: tuple[Path, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``climdl plot MTL --mask mask.tif`` draws the same overlay as with the NetCDF mask, and a
    scene larger than MAX_SCENE_SIDE is drawn every n-th pixel."""
    import climdl.plot.quicklook as quicklook

    mtl, _ = product
    for out in ("mask.nc", "mask.tif"):
        assert _segment(ckpt, mtl, tmp_path / out) == 0
    full = _plotted_masks(mtl, tmp_path / "mask.tif", monkeypatch)
    assert full == _plotted_masks(mtl, tmp_path / "mask.nc", monkeypatch)
    assert len(full) == H * W * 4 * 8  # float64 RGBA of every pixel
    monkeypatch.setattr(quicklook, "MAX_SCENE_SIDE", 40)  # 96 x 80 -> every 3rd pixel: 32 x 27
    assert len(_plotted_masks(mtl, tmp_path / "mask.tif", monkeypatch)) == 32 * 27 * 4 * 8


def test_geotiff_of_an_ungeoreferenced_scene_is_one_clear_line(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No grid mapping, irregular x or 2-D-only coordinates: exit 2, one sentence asking for
    NetCDF, and no file (nor temporary file) left behind."""
    scene = _sample_scene(tmp_path / "sample")
    with xr.open_dataset(scene) as ds:
        ds = ds.load()
    plain = ds.copy(deep=True).drop_vars("crs")  # its own attrs, not those of ds
    for v in plain.variables.values():
        v.attrs.pop("grid_mapping", None)
    irregular = ds.copy()
    x = irregular["x"].values.copy()
    x[5] += 0.3 * (x[1] - x[0])
    irregular = irregular.assign_coords(x=("x", x, ds["x"].attrs))
    cases = [
        (plain, "no CF grid mapping"),
        (irregular, "no regularly spaced 1-D 'x' coordinate"),
        (ds.drop_vars(["x", "y"]), "no regularly spaced 1-D 'x' coordinate"),
    ]
    out = tmp_path / "out"
    out.mkdir()
    capsys.readouterr()
    for i, (bad, match) in enumerate(cases):
        path = tmp_path / f"bad_{i}.nc"
        bad.to_netcdf(path)
        assert _segment(ckpt, path, out / "mask.tif", "--probabilities") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert match in err and "write the mask as NetCDF instead (-o mask.nc)" in err, err
        assert list(out.iterdir()) == []
