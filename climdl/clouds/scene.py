"""Multispectral scenes and cloud labels as CF NetCDF: conventions, validation, reading, writing.

A scene is an ``xr.Dataset`` with

* ``image`` (``band, y, x``, float32): top-of-atmosphere reflectance for the reflective bands and
  brightness temperature (K) for the thermal ones, NaN where there are no data;
* coordinates ``band`` (band names, CF ``sensor_band_identifier``), ``wavelength`` (``band``,
  central wavelength in um, CF ``sensor_band_central_radiation_wavelength``), ``band_units``
  (``band``, ``"1"`` or ``"K"``), and the 2-D grid's coordinates (any names; projected
  ``y``/``x`` with a grid mapping, or ``lat``/``lon``);
* optionally ``mask`` (``y, x``, uint8): the label, a CF flag variable with ``flag_values``
  ``0..K-1`` and ``flag_meanings`` (e.g. ``clear cloud thin_cloud cloud_shadow snow``), and
  ``_FillValue`` :data:`NODATA` (255) for pixels without a label, which loss and metrics ignore.

The band coordinates travel into the checkpoint, so that inference can check band names,
wavelengths and units instead of trusting the order of an anonymous array. Opening a scene file
of any format (scene NetCDF, Landsat product, GeoTIFF) is :func:`climdl.clouds.readers.open_scene`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from climdl.errors import DataError
from climdl.io.netcdf import write_netcdf
from climdl.io.provenance import CF_CONVENTIONS

IMAGE_VAR = "image"
MASK_VAR = "mask"
BAND_DIM = "band"
NODATA = 255
"""Label value of pixels without a label (no data): ignored by loss and metrics."""

CLASSES: tuple[str, ...] = ("clear", "cloud", "thin_cloud", "cloud_shadow", "snow")
"""The full label set of the synthetic sample, in flag-value order."""
BINARY_CLASSES: tuple[str, ...] = ("clear", "cloud")
"""The label set of two-class datasets such as 38-Cloud (thin clouds count as cloud)."""
CLOUDY = ("cloud", "thin_cloud")
"""Classes that count as cloud in the binary (any cloud vs the rest) scores."""


BAND_ALIASES: dict[str, tuple[str, ...]] = {
    "blue": ("blue", "b2", "b02"),
    "green": ("green", "b3", "b03"),
    "red": ("red", "b4", "b04"),
    "nir": ("nir", "b5", "b8", "b08", "nir08"),
    "swir16": ("swir16", "swir1", "b6", "b11"),
    "swir22": ("swir22", "swir2", "b7", "b12"),
    "tir": ("tir", "tir1", "b10", "lwir11", "bt"),
}
"""Landsat and Sentinel-2 names of the bands the threshold test and the spectral indices read."""


def find_bands(names: Sequence[str]) -> dict[str, int]:
    """Index of each :data:`BAND_ALIASES` key among band ``names`` (case-insensitive; the
    first alias present wins); keys without a band are left out."""
    low = [n.lower() for n in names]
    out: dict[str, int] = {}
    for key, aliases in BAND_ALIASES.items():
        for a in aliases:
            if a in low:
                out[key] = low.index(a)
                break
    return out


@dataclass(frozen=True)
class Band:
    """One spectral band: name, central wavelength (um) and units (``"1"`` or ``"K"``)."""

    name: str
    wavelength: float
    units: str = "1"

    @property
    def thermal(self) -> bool:
        """True for brightness-temperature bands."""
        return self.units == "K"


# Landsat 8/9 OLI/TIRS central wavelengths (um): the synthetic sample's bands.
LANDSAT_BANDS: tuple[Band, ...] = (
    Band("blue", 0.482),
    Band("green", 0.561),
    Band("red", 0.655),
    Band("nir", 0.865),
    Band("swir16", 1.609),
    Band("swir22", 2.201),
    Band("tir", 10.895, "K"),
)

# Sentinel-2 MSI bands B01 .. B12 (with B8A) in the product's band-id order, named by their STAC
# ``eo`` common names so that a band means the same thing on every sensor: a checkpoint trained
# on Landsat blue .. swir22 matches Sentinel-2 blue .. swir22 by name, and the 5 % wavelength
# check of ``climdl segment`` passes (nir: B08 at 0.842 um vs OLI's 0.865 um). Central
# wavelengths (um) of Sentinel-2A; a product's own MTD values replace them when read.
SENTINEL2_BANDS: tuple[Band, ...] = (
    Band("coastal", 0.443),  # B01, 60 m
    Band("blue", 0.490),  # B02, 10 m
    Band("green", 0.560),  # B03, 10 m
    Band("red", 0.665),  # B04, 10 m
    Band("rededge1", 0.705),  # B05, 20 m
    Band("rededge2", 0.740),  # B06, 20 m
    Band("rededge3", 0.783),  # B07, 20 m
    Band("nir", 0.842),  # B08, 10 m
    Band("nir08", 0.865),  # B8A, 20 m
    Band("nir09", 0.945),  # B09, 60 m (water vapour)
    Band("cirrus", 1.375),  # B10, 60 m (cirrus: the surface is hidden by water vapour)
    Band("swir16", 1.610),  # B11, 20 m
    Band("swir22", 2.190),  # B12, 20 m
)
# The synthetic sample's Sentinel-2 bands (``climdl sample-clouds --sensor sentinel2``): the
# Landsat sample's reflective bands at MSI wavelengths plus the cirrus band; no thermal band.
SENTINEL2_SAMPLE_BANDS: tuple[Band, ...] = tuple(
    b
    for b in SENTINEL2_BANDS
    if b.name in ("blue", "green", "red", "nir", "cirrus", "swir16", "swir22")
)


def label_attrs(classes: Sequence[str]) -> dict[str, Any]:
    """CF flag attributes of a label variable with these classes (flag values 0..K-1)."""
    return {
        "long_name": "pixel class (cloud mask)",
        "flag_values": np.arange(len(classes), dtype=np.uint8),
        "flag_meanings": " ".join(classes),
        "comment": f"{NODATA} (_FillValue): no data / no label",
    }


def make_scene(
    image: np.ndarray,
    bands: Sequence[Band],
    coords: Mapping[str, Any],
    dims: tuple[str, str] = ("y", "x"),
    mask: np.ndarray | None = None,
    classes: Sequence[str] = CLASSES,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Assemble a scene Dataset from a ``[band, y, x]`` array and its spatial coordinates."""
    if image.ndim != 3 or image.shape[0] != len(bands):
        raise DataError(
            f"a scene image must be [band, y, x] with {len(bands)} bands, got shape {image.shape}."
        )
    data_vars: dict[str, Any] = {
        IMAGE_VAR: (
            (BAND_DIM, *dims),
            image.astype(np.float32),
            {
                "long_name": "top-of-atmosphere reflectance (reflective bands) or brightness "
                "temperature (thermal bands); see band_units",
            },
        ),
    }
    if mask is not None:
        data_vars[MASK_VAR] = (dims, mask.astype(np.uint8), label_attrs(classes))
    ds = xr.Dataset(data_vars, coords=dict(coords), attrs=dict(attrs or {}))
    ds = ds.assign_coords(
        {
            BAND_DIM: (
                BAND_DIM,
                np.array([b.name for b in bands], dtype=object),
                {"long_name": "band name", "standard_name": "sensor_band_identifier"},
            ),
            "wavelength": (
                BAND_DIM,
                np.array([b.wavelength for b in bands], dtype=np.float32),
                {
                    "long_name": "band central wavelength",
                    "units": "um",
                    "standard_name": "sensor_band_central_radiation_wavelength",
                },
            ),
            "band_units": (
                BAND_DIM,
                np.array([b.units for b in bands], dtype=object),
                {"long_name": "units of the band's values"},
            ),
        }
    )
    ds.attrs.setdefault("Conventions", CF_CONVENTIONS)
    return ds


def scene_encoding(ds: xr.Dataset, digits: int | None = 4) -> dict[str, dict[str, Any]]:
    """Compressed, chunked NetCDF encoding for a scene (``digits``: quantisation of the image)."""
    enc: dict[str, dict[str, Any]] = {}
    if IMAGE_VAR in ds:
        ny, nx = ds[IMAGE_VAR].shape[1:]
        enc[IMAGE_VAR] = {
            "zlib": True,
            "complevel": 4,
            "_FillValue": np.float32(np.nan),
            "chunksizes": (1, min(ny, 512), min(nx, 512)),
        }
        if digits is not None:
            enc[IMAGE_VAR]["least_significant_digit"] = digits
    if MASK_VAR in ds:
        enc[MASK_VAR] = {"zlib": True, "complevel": 4, "dtype": "uint8", "_FillValue": NODATA}
    for name in ds.coords:  # CF: coordinate variables carry no _FillValue (xarray adds NaN)
        if ds[name].dtype.kind == "f" and name not in enc:
            enc[str(name)] = {"_FillValue": None}
    return enc


def write_scene(
    ds: xr.Dataset, path: str | os.PathLike[str], *, overwrite: bool = False, digits: int | None = 4
) -> Path:
    """Write a scene atomically as compressed CF NetCDF."""
    return write_netcdf(ds, path, encoding=scene_encoding(ds, digits), overwrite=overwrite)


def image_name(ds: xr.Dataset, source: object = "the scene") -> str:
    """Name of the image variable: ``image``, else the one variable with a ``band`` dimension."""
    if IMAGE_VAR in ds.data_vars and BAND_DIM in ds[IMAGE_VAR].dims:
        return IMAGE_VAR
    cands = [str(n) for n, v in ds.data_vars.items() if BAND_DIM in v.dims and v.ndim == 3]
    if len(cands) == 1:
        return cands[0]
    if not cands:
        raise DataError(
            f"{source} has no image variable with a '{BAND_DIM}' dimension (and two "
            f"spatial ones); variables found: {', '.join(map(str, ds.data_vars))}."
        )
    raise DataError(
        f"{source} has several variables with a '{BAND_DIM}' dimension "
        f"({', '.join(cands)}); name the image '{IMAGE_VAR}'."
    )


def spatial_dims(ds: xr.Dataset, source: object = "the scene") -> tuple[str, str]:
    """The image's two spatial dimension names, in (row, column) order."""
    da = ds[image_name(ds, source)]
    dims = tuple(str(d) for d in da.dims if d != BAND_DIM)
    if len(dims) != 2:
        raise DataError(
            f"{source}: the image must have a band and two spatial dimensions, got {da.dims}."
        )
    return dims[0], dims[1]


def bands_of(ds: xr.Dataset, source: object = "the scene") -> list[Band]:
    """The scene's bands from its ``band``, ``wavelength`` and ``band_units`` coordinates."""
    da = ds[image_name(ds, source)]
    n = da.sizes[BAND_DIM]
    if BAND_DIM in da.coords:
        names = [str(v) for v in da[BAND_DIM].values]
    else:
        names = [f"band{i + 1}" for i in range(n)]
    wl = (
        np.asarray(da["wavelength"].values, dtype=float)
        if "wavelength" in da.coords
        else np.full(n, np.nan)
    )
    if "wavelength" in da.coords and str(da["wavelength"].attrs.get("units", "um")) in ("nm",):
        wl = wl / 1000.0
    units = (
        [str(u) for u in da["band_units"].values]
        if "band_units" in da.coords
        else ["K" if w > 3.0 else "1" for w in wl]
    )
    return [Band(nm, float(w), u) for nm, w, u in zip(names, wl, units, strict=True)]


def classes_of(ds: xr.Dataset, source: object = "the scene") -> list[str]:
    """The label set of the scene's ``mask`` (its ``flag_meanings``), checked to be 0..K-1."""
    if MASK_VAR not in ds:
        raise DataError(
            f"{source} has no '{MASK_VAR}' label variable; training needs labelled "
            "scenes (climdl sample-clouds writes some)."
        )
    attrs = ds[MASK_VAR].attrs
    meanings = str(attrs.get("flag_meanings", "")).split()
    values = np.atleast_1d(np.asarray(attrs.get("flag_values", []))).astype(int)
    if not meanings or len(meanings) != len(values):
        raise DataError(
            f"{source}: '{MASK_VAR}' needs CF flag_values and flag_meanings of the "
            f"same length, got {values.tolist()} and {meanings}."
        )
    if values.tolist() != list(range(len(values))):
        raise DataError(
            f"{source}: '{MASK_VAR}' flag_values must be 0..{len(values) - 1} in "
            f"order, got {values.tolist()}."
        )
    return meanings


def read_image(
    ds: xr.Dataset, window: tuple[slice, slice] | None = None, order: Sequence[int] | None = None
) -> np.ndarray:
    """``[band, rows, cols]`` float32 of the image (a window of it), bands in ``order``."""
    da = ds[image_name(ds)]
    ydim, xdim = spatial_dims(ds)
    da = da.transpose(BAND_DIM, ydim, xdim)
    if window is not None:
        da = da.isel({ydim: window[0], xdim: window[1]})
    if order is not None:
        da = da.isel({BAND_DIM: list(order)})
    return np.asarray(da.values, dtype=np.float32)


def read_mask(ds: xr.Dataset, window: tuple[slice, slice] | None = None) -> np.ndarray:
    """The label as uint8 with :data:`NODATA` where there is none (decoded fill values too)."""
    da = ds[MASK_VAR]
    if window is not None:
        ydim, xdim = spatial_dims(ds)
        da = da.isel({ydim: window[0], xdim: window[1]})
    v = np.asarray(da.values)
    if v.dtype.kind == "f":
        v = np.where(np.isfinite(v), v, NODATA)
    return v.astype(np.uint8)


def validate_scene(ds: xr.Dataset, source: object = "the scene", labelled: bool = False) -> None:
    """Raise :class:`DataError` unless ``ds`` follows the scene conventions (and has labels)."""
    name = image_name(ds, source)
    ydim, xdim = spatial_dims(ds, source)
    bands = bands_of(ds, source)
    if len({b.name for b in bands}) != len(bands):
        raise DataError(f"{source}: band names must be unique, got {[b.name for b in bands]}.")
    if ds[name].sizes[ydim] < 1 or ds[name].sizes[xdim] < 1:
        raise DataError(f"{source}: the image is empty ({dict(ds[name].sizes)}).")
    if labelled:
        classes_of(ds, source)
        if ds[MASK_VAR].dims != (ydim, xdim):
            raise DataError(
                f"{source}: '{MASK_VAR}' must have dimensions ({ydim}, {xdim}) like "
                f"the image, got {ds[MASK_VAR].dims}."
            )
