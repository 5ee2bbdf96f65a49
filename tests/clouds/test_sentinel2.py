"""Sentinel-2 Level-1C products (.SAFE) as scenes: the product's reflectance formula, one lazy
grid from 10/20/60 m bands, clear refusals, safe metadata, the Sentinel-2 synthetic sample, and
``climdl segment``/``climdl plot`` end to end.

The products are tiny but laid out like real ones: ``<product>.SAFE/MTD_MSIL1C.xml`` (PSD-14
style, namespaced root, unqualified children, the band files listed as ``IMAGE_FILE``),
``GRANULE/<granule>/MTD_TL.xml`` (CRS, corner, sizes, mean sun angles) and
``GRANULE/<granule>/IMG_DATA/<tile>_<date>_Bnn.jp2`` uint16 JPEG 2000 bands (lossless) on a
1.2 km UTM 32N tile: 120 x 120 at 10 m, 60 x 60 at 20 m, 20 x 20 at 60 m."""

from __future__ import annotations

import pickle
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import Affine

from climdl.cli import main
from climdl.clouds.readers import open_scene
from climdl.clouds.scene import (
    LANDSAT_BANDS,
    NODATA,
    SENTINEL2_BANDS,
    SENTINEL2_SAMPLE_BANDS,
    validate_scene,
)
from climdl.clouds.sentinel2 import (
    SENTINEL2_BAND_IDS,
    SENTINEL2_RESOLUTIONS,
    open_sentinel2,
    read_product_metadata,
)
from climdl.clouds.synthetic import make_scene
from climdl.errors import DataError
from tests.argv import segment_argv, train_argv
from tests.clouds_harness import CLOUDS_CONFIG, TINY_CLOUDS, sample_clouds_argv

PRODUCT = "S2A_MSIL1C_20230715T101031_N0509_R022_T32TQM_20230715T121403"
GRANULE = "L1C_T32TQM_A042071_20230715T101354"
STEM = "T32TQM_20230715T101031"
X0, Y0 = 600_000.0, 5_000_040.0
EXTENT = 1200  # m
QUANT, OFFSET = 10000.0, -1000.0
SUN_ZENITH, SUN_AZIMUTH = 32.5, 151.25


def _mtd(
    *,
    ptype: str = "S2MSI1C",
    baseline: str = "05.09",
    offsets: bool = True,
    files: list[str] | None = None,
    doctype: str = "",
) -> str:
    """``MTD_MSIL1C.xml`` with the elements climdl reads (and a few it does not)."""
    names = files if files is not None else [
        f"GRANULE/{GRANULE}/IMG_DATA/{STEM}_{b}" for b in SENTINEL2_BAND_IDS
    ] + [f"GRANULE/{GRANULE}/IMG_DATA/{STEM}_TCI"]  # fmt: skip
    image_files = "".join(f"<IMAGE_FILE>{n}</IMAGE_FILE>" for n in names)
    offs = (
        "<Radiometric_Offset_List>"
        + "".join(
            f'<RADIO_ADD_OFFSET band_id="{i}">{OFFSET:g}</RADIO_ADD_OFFSET>'
            for i in range(len(SENTINEL2_BAND_IDS))
        )
        + "</Radiometric_Offset_List>"
        if offsets
        else ""
    )
    spectral = "".join(
        f'<Spectral_Information bandId="{i}" physicalBand="{b.replace("B0", "B")}">'
        f"<RESOLUTION>{SENTINEL2_RESOLUTIONS[b]}</RESOLUTION><Wavelength>"
        f'<MIN unit="nm">400</MIN><MAX unit="nm">500</MAX>'
        f'<CENTRAL unit="nm">{band.wavelength * 1000 + 1.5:.1f}</CENTRAL></Wavelength>'
        "</Spectral_Information>"
        for i, (b, band) in enumerate(zip(SENTINEL2_BAND_IDS, SENTINEL2_BANDS, strict=True))
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>{doctype}
<n1:Level-1C_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>2023-07-15T10:10:31.024Z</PRODUCT_START_TIME>
      <PRODUCT_URI>{PRODUCT}.SAFE</PRODUCT_URI>
      <PROCESSING_LEVEL>Level-1C</PROCESSING_LEVEL>
      <PRODUCT_TYPE>{ptype}</PRODUCT_TYPE>
      <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
      <Datatake datatakeIdentifier="GS2A_20230715T101031_042071_N05.09">
        <SPACECRAFT_NAME>Sentinel-2A</SPACECRAFT_NAME>
        <SENSING_ORBIT_NUMBER>22</SENSING_ORBIT_NUMBER>
      </Datatake>
      <Product_Organisation><Granule_List>
        <Granule granuleIdentifier="{GRANULE}" imageFormat="JPEG2000">{image_files}</Granule>
      </Granule_List></Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
      <Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX></Special_Values>
      <QUANTIFICATION_VALUE unit="none">{QUANT:g}</QUANTIFICATION_VALUE>
      {offs}
      <Spectral_Information_List>{spectral}</Spectral_Information_List>
    </Product_Image_Characteristics>
  </n1:General_Info>
  <n1:Quality_Indicators_Info>
    <Cloud_Coverage_Assessment>12.5</Cloud_Coverage_Assessment>
  </n1:Quality_Indicators_Info>
</n1:Level-1C_User_Product>
"""


def _mtd_tl() -> str:
    sizes = "".join(
        f'<Size resolution="{r}"><NROWS>{EXTENT // r}</NROWS><NCOLS>{EXTENT // r}</NCOLS></Size>'
        for r in (10, 20, 60)
    )
    geo = "".join(
        f'<Geoposition resolution="{r}"><ULX>{X0:.0f}</ULX><ULY>{Y0:.0f}</ULY>'
        f"<XDIM>{r}</XDIM><YDIM>-{r}</YDIM></Geoposition>"
        for r in (10, 20, 60)
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-1C_Tile_ID xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-1C_Tile_Metadata.xsd">
  <n1:Geometric_Info>
    <Tile_Geocoding metadataLevel="Brief">
      <HORIZONTAL_CS_NAME>WGS84 / UTM zone 32N</HORIZONTAL_CS_NAME>
      <HORIZONTAL_CS_CODE>EPSG:32632</HORIZONTAL_CS_CODE>
      {sizes}{geo}
    </Tile_Geocoding>
    <Tile_Angles><Mean_Sun_Angle>
      <ZENITH_ANGLE unit="deg">{SUN_ZENITH}</ZENITH_ANGLE>
      <AZIMUTH_ANGLE unit="deg">{SUN_AZIMUTH}</AZIMUTH_ANGLE>
    </Mean_Sun_Angle></Tile_Angles>
  </n1:Geometric_Info>
</n1:Level-1C_Tile_ID>
"""


def _write_jp2(path: Path, dn: np.ndarray, res: int) -> None:
    with rasterio.open(
        path,
        "w",
        driver="JP2OpenJPEG",
        height=dn.shape[0],
        width=dn.shape[1],
        count=1,
        dtype="uint16",
        crs="EPSG:32632",
        transform=Affine(res, 0.0, X0, 0.0, -res, Y0),
        QUALITY=100,
        REVERSIBLE="YES",
    ) as f:
        f.write(dn, 1)


def _dns(seed: int) -> dict[str, np.ndarray]:
    """Digital numbers of each band at its native resolution, from a synthetic Sentinel-2
    scene on the 20 m grid (each band takes the sample band nearest in wavelength), with
    pixel-level detail at 10 m, a no-data margin (left 60 m column, DN 0) and one 2 x 2 block
    with a single no-data 10 m pixel."""
    scene = make_scene(np.random.SeedSequence([seed]), (60, 60), sensor="sentinel2")
    refl20 = np.nan_to_num(scene.image, nan=0.2)
    wl = np.array([b.wavelength for b in SENTINEL2_SAMPLE_BANDS])
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for b, band in zip(SENTINEL2_BAND_IDS, SENTINEL2_BANDS, strict=True):
        r = refl20[int(np.argmin(abs(wl - band.wavelength)))]
        res = SENTINEL2_RESOLUTIONS[b]
        if res == 10:
            r = np.repeat(np.repeat(r, 2, 0), 2, 1) + rng.normal(0, 0.01, (120, 120))
        elif res == 60:
            r = r.reshape(20, 3, 20, 3).mean((1, 3))
        dn = np.clip(np.round(r * QUANT - OFFSET), 1, 65535).astype(np.uint16)
        dn[:, : 60 // res] = 0  # the left 60 m: no data
        if res == 10:
            dn[10, 11] = 0  # one of four 10 m pixels of a 20 m pixel
        out[b] = dn
    return out


def write_safe(parent: Path, seed: int = 5, **mtd: Any) -> tuple[Path, dict[str, np.ndarray]]:
    """A tiny L1C product in ``parent``: the ``.SAFE`` folder and the DNs per band id."""
    safe = parent / f"{PRODUCT}.SAFE"
    img = safe / "GRANULE" / GRANULE / "IMG_DATA"
    img.mkdir(parents=True)
    dns = _dns(seed)
    for b, dn in dns.items():
        _write_jp2(img / f"{STEM}_{b}.jp2", dn, SENTINEL2_RESOLUTIONS[b])
    (safe / "MTD_MSIL1C.xml").write_text(_mtd(**mtd))
    (safe / "GRANULE" / GRANULE / "MTD_TL.xml").write_text(_mtd_tl())
    return safe, dns


def expected(dns: dict[str, np.ndarray], grid: int = 20) -> np.ndarray:
    """The product's reflectance on the ``grid`` (m): 10 m bands as the mean of their valid
    pixels per block, coarser ones replicated (float64, NaN for no data)."""
    out = []
    n = EXTENT // grid
    for b in SENTINEL2_BAND_IDS:
        dn = dns[b].astype(np.float64)
        rho = np.where(dn == 0, np.nan, (dn + OFFSET) / QUANT)
        res = SENTINEL2_RESOLUTIONS[b]
        if res < grid:
            k = grid // res
            with warnings.catch_warnings():  # all-no-data blocks: "mean of empty slice"
                warnings.simplefilter("ignore", RuntimeWarning)
                rho = np.nanmean(rho.reshape(n, k, n, k), axis=(1, 3))
        elif res > grid:
            k = res // grid
            rho = np.repeat(np.repeat(rho, k, 0), k, 1)
        out.append(rho)
    return np.stack(out)


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    return write_safe(tmp_path_factory.mktemp("s2"))


# ----------------------------------------------------------------------------- reading
def test_safe_values_follow_the_product_formula_on_one_20m_grid(
    product: tuple[Path, dict[str, np.ndarray]],
) -> None:
    safe, dns = product
    with open_scene(safe) as ds:
        validate_scene(ds, safe)
        assert ds["image"].shape == (13, 60, 60)
        assert list(ds["band"].values) == [b.name for b in SENTINEL2_BANDS]
        assert set(ds["band_units"].values) == {"1"}
        # the product's own central wavelengths (here 1.5 nm off the table)
        want_wl = [b.wavelength + 0.0015 for b in SENTINEL2_BANDS]
        np.testing.assert_allclose(ds["wavelength"].values, want_wl, atol=1e-4)
        got = ds["image"].values
        np.testing.assert_allclose(got, expected(dns), rtol=1e-6, atol=1e-6)
        assert np.isnan(got[:, :, :3]).all() and np.isfinite(got[:, :, 3:]).all()
        # the 20 m pixel whose 10 m block has one no-data pixel: the mean of the other three
        blue = dns["B02"][10:12, 10:12].astype(float)
        np.testing.assert_allclose(got[1, 5, 5], (blue[blue > 0] + OFFSET).mean() / QUANT, 1e-6)
        np.testing.assert_allclose(ds["x"].values, X0 + 10 + 20 * np.arange(60))
        np.testing.assert_allclose(ds["y"].values, Y0 - 10 - 20 * np.arange(60))
        assert ds["crs"].attrs["grid_mapping_name"] == "transverse_mercator"
        assert {"lat", "lon"} <= set(ds.coords)
        assert ds.attrs["scene_id"] == PRODUCT and ds.attrs["pixel_size_m"] == 20.0
        assert ds.attrs["sun_zenith_angle"] == SUN_ZENITH
        assert ds.attrs["sun_azimuth_angle"] == SUN_AZIMUTH
        assert ds.attrs["spacecraft_id"] == "Sentinel-2A"
        assert ds.attrs["processing_baseline"] == "05.09"
        assert "missing_bands" not in ds.attrs
    with open_scene(safe / "MTD_MSIL1C.xml") as ds:  # the metadata file: the same scene
        np.testing.assert_array_equal(ds["image"].values, got)


@pytest.mark.parametrize("grid", [10, 60])
def test_other_grids_replicate_and_average(
    product: tuple[Path, dict[str, np.ndarray]], grid: int
) -> None:
    safe, dns = product
    with open_sentinel2(safe, resolution=grid) as ds:
        n = EXTENT // grid
        assert ds["image"].shape == (13, n, n) and ds.attrs["pixel_size_m"] == grid
        np.testing.assert_allclose(ds["image"].values, expected(dns, grid), rtol=1e-6, atol=1e-6)


def test_windows_and_thinned_reads_match_the_full_read(
    product: tuple[Path, dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows that start and end inside a 60 m block or a 10 m pair, strided and reversed
    reads, and a thinned read in small strips all give the full read's pixels."""
    from climdl.clouds import raster

    safe, _ = product
    with open_scene(safe) as ds:
        full = ds["image"].values
        for rows, cols in (
            (slice(4, 23), slice(1, 17)),
            (slice(58, 60), slice(0, 60)),
            (slice(None, None, 7), slice(2, None, 5)),
            (slice(None, None, -3), slice(50, 10, -4)),
        ):
            got = ds["image"].isel(y=rows, x=cols).values
            np.testing.assert_array_equal(got, full[:, rows, cols])
        got = ds["image"].isel(band=[12, 0, 1], y=5, x=slice(7, 31)).values
        np.testing.assert_array_equal(got, full[[12, 0, 1], 5, 7:31])
        monkeypatch.setattr(raster, "STRIP_PIXELS", 64)  # many strips of a few rows
        thin = ds["image"].isel(y=slice(1, None, 3), x=slice(None, None, 2)).values
        np.testing.assert_array_equal(thin, full[:, 1::3, ::2])


def test_a_strip_reads_only_the_stored_pixels_it_covers(
    product: tuple[Path, dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is read on opening; 20 m rows 7..12 read 10 m rows 14..25 of a 10 m band, the
    same rows of a 20 m band and 60 m rows 2..4 of a 60 m band, and nothing else."""
    safe, _ = product
    reads: list[tuple[str, Any]] = []
    real_read = rasterio.io.DatasetReader.read

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        reads.append((Path(self.name).stem[-3:], kwargs.get("window")))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    ds = open_scene(safe)
    assert reads == []
    names = list(ds["band"].values)
    idx = [names.index(n) for n in ("blue", "swir16", "cirrus")]
    strip = ds["image"].isel(band=idx, y=slice(7, 13), x=slice(4, 10)).values
    assert strip.shape == (3, 6, 6)
    got = {b: (w.row_off, w.height, w.col_off, w.width) for b, w in reads}
    assert got == {"B02": (14, 12, 8, 12), "B11": (7, 6, 4, 6), "B10": (2, 3, 1, 3)}


def test_scene_pickles(product: tuple[Path, dict[str, np.ndarray]]) -> None:
    safe, _ = product
    with open_scene(safe) as ds:
        again = pickle.loads(pickle.dumps(ds))
        np.testing.assert_array_equal(again["image"].values, ds["image"].values)


def test_older_baseline_has_no_offset(tmp_path: Path) -> None:
    safe, dns = write_safe(tmp_path, baseline="03.01", offsets=False)
    meta = read_product_metadata(safe / "MTD_MSIL1C.xml")
    assert meta.baseline == 3.01 and set(meta.offsets.values()) == {0.0}
    with open_scene(safe) as ds:
        red = dns["B04"].astype(float).reshape(60, 2, 60, 2)
        want = np.where(red == 0, np.nan, red / QUANT)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            np.testing.assert_allclose(ds["image"].values[3], np.nanmean(want, (1, 3)), 1e-6)


# ----------------------------------------------------------------------------- refusals
def _error(path: Path) -> str:
    with pytest.raises(DataError) as info:
        open_scene(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.endswith(".")
    return msg


def test_level2a_products_are_refused_in_one_sentence(tmp_path: Path) -> None:
    folder = tmp_path / "S2A_MSIL2A_20230715T101031_N0509_R022_T32TQM_20230715T121403.SAFE"
    folder.mkdir()
    (folder / "MTD_MSIL2A.xml").write_text(_mtd(ptype="S2MSI2A"))
    for p in (folder, folder / "MTD_MSIL2A.xml"):
        assert "needs Level-1C" in _error(p)
    safe, _ = write_safe(tmp_path / "typed", ptype="S2MSI2A")  # an L2A type under the L1C name
    assert "Level-2A (S2MSI2A)" in _error(safe)


def test_a_band_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    safe, _ = write_safe(tmp_path)
    img = safe / "GRANULE" / GRANULE / "IMG_DATA"
    _write_jp2(img / f"{STEM}_B11.jp2", np.ones((120, 120), np.uint16), 10)  # 20 m band at 10 m
    msg = _error(safe)
    assert f"{STEM}_B11.jp2 (B11, nominal 20 m) is 120 x 120" in msg and "60 x 60" in msg
    _write_jp2(img / f"{STEM}_B11.jp2", np.ones((60, 60), np.uint16), 10)  # right size, 10 m px
    assert "pixels of 10 m" in _error(safe)


def test_missing_band_files_are_left_out_and_named(tmp_path: Path) -> None:
    safe, _ = write_safe(tmp_path)
    img = safe / "GRANULE" / GRANULE / "IMG_DATA"
    for b in ("B11", "B01"):
        (img / f"{STEM}_{b}.jp2").unlink()
    with open_scene(safe) as ds:
        assert "swir16" not in list(ds["band"].values) and ds.sizes["band"] == 11
        assert ds.attrs["missing_bands"] == "B01 B11"
    for p in img.glob("*.jp2"):
        p.unlink()
    assert "none of the band files" in _error(safe)


def test_metadata_cannot_lead_outside_the_product_or_expand_entities(tmp_path: Path) -> None:
    secret = tmp_path / "secret_B02.jp2"
    secret.write_bytes(b"not yours")
    for name in ("../secret_B02", "/etc/passwd_B02", "GRANULE/../../secret_B02"):
        safe, _ = write_safe(tmp_path / str(abs(hash(name))), files=[name])
        assert "reads nothing outside it" in _error(safe)
    safe, _ = write_safe(tmp_path / "link")
    (safe / "GRANULE" / "out").symlink_to(tmp_path)
    (safe / "MTD_MSIL1C.xml").write_text(_mtd(files=["GRANULE/out/secret_B02"]))
    assert "leads outside the product" in _error(safe)
    bomb = '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
    (safe / "MTD_MSIL1C.xml").write_text(_mtd(doctype=bomb).replace("Level-1C<", "&lol2;<", 1))
    assert "declares a DTD or XML entities" in _error(safe)
    (safe / "MTD_MSIL1C.xml").write_text(_mtd()[:500])
    assert "not well-formed XML" in _error(safe)


def test_a_band_file_or_a_zip_is_pointed_to_the_product(
    product: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    safe, _ = product
    band = next((safe / "GRANULE" / GRANULE / "IMG_DATA").glob("*_B02.jp2"))
    assert "pass its .SAFE folder" in _error(band)
    z = tmp_path / f"{PRODUCT}.SAFE.zip"
    z.write_bytes(b"PK")
    assert "unzip it" in _error(z)


def test_baseline_4_without_offsets_or_with_malformed_numbers_is_refused(tmp_path: Path) -> None:
    safe, _ = write_safe(tmp_path, offsets=False)
    assert "lacks the RADIO_ADD_OFFSET" in _error(safe)
    mtd = safe / "MTD_MSIL1C.xml"
    mtd.write_text(_mtd().replace('band_id="3">-1000<', 'band_id="3">-1e3x<'))
    assert "holds a malformed number" in _error(safe)
    mtd.write_text(_mtd())
    tl = safe / "GRANULE" / GRANULE / "MTD_TL.xml"
    tl.write_text(_mtd_tl().replace("<NROWS>60<", "<NROWS>sixty<"))
    assert "MTD_TL.xml holds a malformed number" in _error(safe)
    tl.write_text(_mtd_tl().replace("EPSG:32632", "EPSG:nope"))
    assert "is not a known CRS" in _error(safe)


# ----------------------------------------------------------------------------- synthetic sample
def test_sentinel2_sample_has_msi_bands_and_the_landsat_scene_s_labels(tmp_path: Path) -> None:
    assert (
        main([*sample_clouds_argv(tmp_path / "s2", 2, (40, 32), 9), "--sensor", "sentinel2"]) == 0
    )
    assert main(sample_clouds_argv(tmp_path / "l8", 2, (40, 32), 9)) == 0
    for i in range(2):
        with (
            xr.open_dataset(tmp_path / "s2" / f"scene_{i:03d}.nc") as s2,
            xr.open_dataset(tmp_path / "l8" / f"scene_{i:03d}.nc") as l8,
        ):
            assert list(s2["band"].values) == [b.name for b in SENTINEL2_SAMPLE_BANDS]
            assert list(l8["band"].values) == [b.name for b in LANDSAT_BANDS]
            assert set(s2["band_units"].values) == {"1"}  # no thermal band
            np.testing.assert_array_equal(s2["mask"].values, l8["mask"].values)
            assert s2.attrs["sensor"] == "Sentinel-2 MSI (synthetic)"
            img, mask = s2["image"].values, s2["mask"].values
            cirrus = list(s2["band"].values).index("cirrus")
            clear = mask == 0
            if clear.any():  # the water vapour hides the ground in the cirrus band
                assert np.nanmean(img[cirrus, clear]) < 0.02


# ----------------------------------------------------------------------------- segment and plot
@pytest.fixture(scope="module")
def s2_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short epoch of the tiny network on Sentinel-2 sample scenes."""
    root = tmp_path_factory.mktemp("s2-ckpt")
    for name, n, seed in (("scenes", 4, 3), ("test", 2, 4)):
        argv = [*sample_clouds_argv(root / name, n, (48, 40), seed), "--sensor", "sentinel2"]
        assert main(argv) == 0
    data = ["--data.root", str(root / "scenes"), "--data.test_root", str(root / "test")]
    run = train_argv(CLOUDS_CONFIG, root / "run", *data)
    assert main([*run, "--trainer.max_epochs", "1", *TINY_CLOUDS]) == 0
    return next((root / "run").rglob("best-*.ckpt"))


def _segment(ckpt: Path, scene: Path, out: Path) -> int:
    argv = segment_argv(ckpt, scene, out, "--tile", "32", "--overlap", "8")
    return main([*argv, "--device", "cpu", "--quiet"])


def test_segment_and_plot_a_safe_product(
    s2_ckpt: Path,
    product: tuple[Path, dict[str, np.ndarray]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    figures: list[Any],
) -> None:
    safe, _ = product
    out = tmp_path / "mask.nc"
    assert _segment(s2_ckpt, safe, out) == 0
    with xr.open_dataset(out, mask_and_scale=False) as m, open_scene(safe) as scene:
        mask = m["cloud_mask"].values
        assert mask.shape == (60, 60) and m["cloud_mask"].attrs["grid_mapping"] == "crs"
        np.testing.assert_array_equal(m["x"].values, scene["x"].values)
        nodata = np.isnan(scene["image"].values).any(0)
        np.testing.assert_array_equal(mask == NODATA, nodata)
        assert m.attrs["input_scene_id"] == PRODUCT
    assert (
        main(["plot", str(safe), "--mask", str(out), "--out", str(tmp_path / "q.png"), "-q"]) == 0
    )
    assert (tmp_path / "q.png").is_file() and figures
    mtd = str(safe / "MTD_MSIL1C.xml")  # the metadata file plots as the scene too
    assert main(["plot", mtd, "--out", str(tmp_path / "m.png"), "-q"]) == 0
    assert (tmp_path / "m.png").is_file()
    # a product without a band the checkpoint needs: one sentence, exit 2, no output
    partial = tmp_path / "partial" / safe.name
    shutil.copytree(safe, partial)
    (partial / "GRANULE" / GRANULE / "IMG_DATA" / f"{STEM}_B11.jp2").unlink()
    capsys.readouterr()
    assert _segment(s2_ckpt, partial, tmp_path / "partial.nc") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "lacks the band(s) swir16" in err and not (tmp_path / "partial.nc").exists()


def test_a_thermal_checkpoint_cannot_segment_a_safe_product(
    product: tuple[Path, dict[str, np.ndarray]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A checkpoint trained on Landsat scenes (with the thermal band tir) meets a product
    without any thermal band: one sentence naming it, exit 2."""
    from tests.clouds_harness import train_tiny_segmenter

    safe, _ = product
    ckpt = train_tiny_segmenter(tmp_path / "landsat")
    capsys.readouterr()
    assert _segment(ckpt, safe, tmp_path / "m.nc") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tir" in err and "Traceback" not in err, err
