"""Landsat 8/9 Collection 2 Level-1 products and multi-band GeoTIFFs as climdl scenes, read lazily.

:func:`open_landsat` reads a Landsat 8/9 OLI/TIRS Collection 2 Level-1 product (one GeoTIFF of
digital numbers per band plus the ``*_MTL.txt`` or ``*_MTL.json`` metadata) and
:func:`open_geotiff` a multi-band GeoTIFF whose bands are named; both return a scene Dataset in
the layout of :mod:`climdl.clouds.scene` (``image`` ``(band, y, x)`` float32 with the ``band``,
``wavelength`` and ``band_units`` coordinates, projected ``y``/``x`` pixel centres and a CF
grid-mapping variable ``crs``), so that ``climdl segment`` and the threshold baseline take them
like any scene NetCDF.

Nothing is read when a scene is opened: the image is an xarray lazily indexed array whose reads
(a strip of rows, say) open the GeoTIFFs, read just that window and convert it, so memory follows
the window, never the ~7800 x 7700 x 7 scene. The Landsat conversion follows the USGS Landsat 8
Data Users Handbook (LSDS-1574), section 5: top-of-atmosphere reflectance
``(REFLECTANCE_MULT_BAND_n * DN + REFLECTANCE_ADD_BAND_n) / sin(SUN_ELEVATION)`` for bands 2-7
(the scene-centre sun elevation, as the handbook's scene-wide form), and for band 10 the
radiance ``L = RADIANCE_MULT_BAND_10 * DN + RADIANCE_ADD_BAND_10`` and brightness temperature
``K2 / ln(K1 / L + 1)``; DN 0 is the fill value and becomes NaN.

2-D ``lat``/``lon`` (float32) are auxiliary coordinates, computed with pyproj window by window
when read, for scenes up to :data:`LATLON_MAX_PIXELS`; larger scenes (a full Landsat scene) go
without them, since the grid mapping and ``x``/``y`` define them and written out they would
outweigh the mask a hundredfold.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from climdl.clouds.scene import BAND_DIM, IMAGE_VAR, LANDSAT_BANDS, Band, make_scene
from climdl.errors import DataError

LANDSAT_BAND_NUMBERS: dict[str, int] = {
    "blue": 2,
    "green": 3,
    "red": 4,
    "nir": 5,
    "swir16": 6,
    "swir22": 7,
    "tir": 10,
}
"""OLI/TIRS band number of each of :data:`~climdl.clouds.scene.LANDSAT_BANDS`."""

LATLON_MAX_PIXELS = 4096 * 4096
"""Scenes with more pixels than this get no 2-D lat/lon coordinates (see the module docstring)."""

CRS_VAR = "crs"
MTL_SUFFIXES = ("_MTL.txt", "_MTL.json")

Converter = Callable[[np.ndarray], np.ndarray]
"""Stored values of one band (a window) -> float32 scene values, NaN where there are no data."""


# ---------------------------------------------------------------------------- lazy arrays
def _axis_window(key: Any, n: int) -> tuple[int, int, np.ndarray | None, bool]:
    """``(start, stop, take, squeeze)`` of one axis of an outer-indexer key: read
    ``start..stop``, then pick ``take`` (None: all of it), and drop the axis for an integer."""
    idx = np.arange(n)[key]
    squeeze = idx.ndim == 0
    idx = np.atleast_1d(idx)
    if idx.size == 0:
        return 0, 0, None, squeeze
    lo, hi = int(idx.min()), int(idx.max()) + 1
    if hi - lo == idx.size and bool(np.all(np.diff(idx) == 1)):
        return lo, hi, None, squeeze
    return lo, hi, idx - lo, squeeze


@dataclass(frozen=True)
class BandSource:
    """Where one band of a scene lives: a GeoTIFF, its 1-based band index, and the conversion."""

    path: Path
    index: int
    convert: Converter


class RasterBands(BackendArray):
    """``(band, y, x)`` float32 image over GeoTIFF bands; each read opens the files and reads
    only the requested window (xarray's lazy indexing composes ``isel`` into one read)."""

    def __init__(self, sources: Sequence[BandSource], height: int, width: int) -> None:
        self.sources = list(sources)
        self.shape = (len(self.sources), height, width)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> Any:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._read
        )

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        import rasterio
        from rasterio.windows import Window

        bands = np.atleast_1d(np.arange(self.shape[0])[key[0]])
        r0, r1, rtake, rsq = _axis_window(key[1], self.shape[1])
        c0, c1, ctake, csq = _axis_window(key[2], self.shape[2])
        out = np.empty((bands.size, r1 - r0, c1 - c0), dtype=np.float32)
        if out.size:
            window = Window(c0, r0, c1 - c0, r1 - r0)
            by_file: dict[Path, list[int]] = {}
            for i, b in enumerate(bands):
                by_file.setdefault(self.sources[int(b)].path, []).append(i)
            for path, positions in by_file.items():
                with rasterio.open(path) as f:
                    raw = f.read(
                        [self.sources[int(bands[i])].index for i in positions], window=window
                    )
                for j, i in enumerate(positions):
                    out[i] = self.sources[int(bands[i])].convert(raw[j])
        if rtake is not None:
            out = out[:, rtake]
        if ctake is not None:
            out = out[:, :, ctake]
        if csq:
            out = out[:, :, 0]
        if rsq:
            out = out[:, 0]
        if np.ndim(np.arange(self.shape[0])[key[0]]) == 0:
            out = out[0]
        return out


class _LatLonGrid:
    """Geographic coordinates of projected pixel centres, computed per window with pyproj; the
    last window is kept so that reading ``lat`` then ``lon`` of a strip transforms it once."""

    def __init__(self, crs_wkt: str, x: np.ndarray, y: np.ndarray) -> None:
        self.crs_wkt, self.x, self.y = crs_wkt, x, y
        self._last: tuple[tuple[int, int, int, int], np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    def window(self, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        """``(lat, lon)`` float32 of rows ``r0..r1`` and columns ``c0..c1``."""
        from pyproj import CRS, Transformer

        with self._lock:
            if self._last is not None and self._last[0] == (r0, r1, c0, c1):
                return self._last[1], self._last[2]
            tr = Transformer.from_crs(CRS.from_wkt(self.crs_wkt), "EPSG:4326", always_xy=True)
            xx, yy = np.meshgrid(self.x[c0:c1], self.y[r0:r1])
            lon, lat = tr.transform(xx, yy)
            res = (np.asarray(lat, np.float32), np.asarray(lon, np.float32))
            self._last = ((r0, r1, c0, c1), *res)
            return res


class _LatLonArray(BackendArray):
    """One of ``lat``/``lon`` (``y, x``) as a lazily indexed array over a :class:`_LatLonGrid`."""

    def __init__(self, grid: _LatLonGrid, which: int) -> None:
        self.grid, self.which = grid, which
        self.shape = (grid.y.size, grid.x.size)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> Any:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._read
        )

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        r0, r1, rtake, rsq = _axis_window(key[0], self.shape[0])
        c0, c1, ctake, csq = _axis_window(key[1], self.shape[1])
        out = self.grid.window(r0, r1, c0, c1)[self.which]
        if rtake is not None:
            out = out[rtake]
        if ctake is not None:
            out = out[:, ctake]
        if rsq:
            out = out[0]
        if csq:
            out = out[..., 0]
        return np.array(out)


# ---------------------------------------------------------------------------- geometry
def _grid_coords(
    src: Any, path: Path, latlon: bool | None
) -> tuple[dict[str, Any], dict[str, Any], float | None]:
    """The spatial coordinates (pixel centres from the affine transform), the grid-mapping
    variable's attributes (empty without a CRS) and the pixel size in metres (if projected)."""
    from pyproj import CRS

    t = src.transform
    if t.b != 0 or t.d != 0:
        raise DataError(
            f"{path} has a rotated or sheared pixel grid; warp it to a north-up grid first "
            "(gdalwarp)."
        )
    x = t.c + (np.arange(src.width) + 0.5) * t.a
    y = t.f + (np.arange(src.height) + 0.5) * t.e
    coords: dict[str, Any]
    if src.crs is None:
        coords = {
            "y": ("y", y, {"long_name": "row coordinate (no CRS in the GeoTIFF)", "axis": "Y"}),
            "x": ("x", x, {"long_name": "column coordinate (no CRS in the GeoTIFF)", "axis": "X"}),
        }
        return coords, {}, None
    crs = CRS.from_wkt(src.crs.to_wkt())
    cf = crs.to_cf()
    gm = {k: v for k, v in cf.items() if k != "crs_wkt"} | {
        "crs_wkt": cf.get("crs_wkt", crs.to_wkt())
    }
    if crs.is_geographic:
        coords = {
            "y": ("y", y, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}),
            "x": ("x", x, {"standard_name": "longitude", "units": "degrees_east", "axis": "X"}),
        }
        return coords, gm, None
    unit = crs.axis_info[0].unit_name if crs.axis_info else "metre"
    factor = float(crs.axis_info[0].unit_conversion_factor) if crs.axis_info else 1.0
    units = "m" if unit in ("metre", "meter") else unit
    coords = {
        "y": (
            "y",
            y,
            {
                "standard_name": "projection_y_coordinate",
                "units": units,
                "long_name": "y coordinate of projection",
                "axis": "Y",
            },
        ),
        "x": (
            "x",
            x,
            {
                "standard_name": "projection_x_coordinate",
                "units": units,
                "long_name": "x coordinate of projection",
                "axis": "X",
            },
        ),
    }
    if latlon is None:
        latlon = src.width * src.height <= LATLON_MAX_PIXELS
    if latlon:
        grid = _LatLonGrid(crs.to_wkt(), x, y)
        for name, which, attrs in (
            ("lat", 0, {"standard_name": "latitude", "units": "degrees_north"}),
            ("lon", 1, {"standard_name": "longitude", "units": "degrees_east"}),
        ):
            lazy = indexing.LazilyIndexedArray(_LatLonArray(grid, which))
            coords[name] = xr.Variable(("y", "x"), lazy, attrs)
    return coords, gm, abs(float(t.a)) * factor


def _assemble(
    sources: Sequence[BandSource],
    bands: Sequence[Band],
    height: int,
    width: int,
    coords: Mapping[str, Any],
    grid_mapping: Mapping[str, Any],
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """The scene Dataset: the lazy image, the band coordinates of :func:`make_scene`, the grid."""
    image = xr.Variable(
        (BAND_DIM, "y", "x"),
        indexing.LazilyIndexedArray(RasterBands(sources, height, width)),
        {
            "long_name": "top-of-atmosphere reflectance (reflective bands) or brightness "
            "temperature (thermal bands); see band_units",
        },
    )
    # the band coordinates exactly as make_scene builds them (an empty image costs nothing)
    band_coords = make_scene(np.zeros((len(bands), 0, 0), np.float32), bands, {}).coords
    ds = xr.Dataset({IMAGE_VAR: image}, coords=dict(coords), attrs=dict(attrs))
    ds = ds.assign_coords({k: band_coords[k] for k in (BAND_DIM, "wavelength", "band_units")})
    if grid_mapping:
        ds[CRS_VAR] = xr.DataArray(np.int32(0), attrs=dict(grid_mapping))
        ds[IMAGE_VAR].attrs["grid_mapping"] = CRS_VAR
    ds.attrs.setdefault("Conventions", "CF-1.10")
    return ds


# ---------------------------------------------------------------------------- Landsat
def _odl_value(text: str) -> Any:
    """An ODL value: a quoted string, else an int or float where it parses, else the text."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    try:
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    except ValueError:
        return text


def parse_mtl_text(text: str, source: object = "the MTL file") -> dict[str, Any]:
    """The nested groups of an MTL file in the ODL text form (``GROUP = X`` ... ``END_GROUP =
    X``, ``NAME = value``, ``END``); quoted values stay strings, others become numbers."""
    root: dict[str, Any] = {}
    stack: list[dict[str, Any]] = [root]
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line == "END":
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise DataError(f"{source} line {n} is not 'NAME = value' ODL: {line[:60]!r}.")
        name = name.strip()
        if name == "GROUP":
            group: dict[str, Any] = {}
            stack[-1][value.strip()] = group
            stack.append(group)
        elif name == "END_GROUP":
            if len(stack) == 1:
                raise DataError(f"{source} line {n}: END_GROUP without a GROUP.")
            stack.pop()
        else:
            stack[-1][name] = _odl_value(value)
    return root


def _flatten(tree: Mapping[str, Any], out: dict[str, Any] | None = None) -> dict[str, Any]:
    """All ``NAME: value`` pairs of the nested groups; the first occurrence of a name wins."""
    out = {} if out is None else out
    for k, v in tree.items():
        if isinstance(v, Mapping):
            _flatten(v, out)
        else:
            out.setdefault(str(k), v)
    return out


def read_mtl(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The flattened metadata of an MTL file, text (ODL) or JSON form."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"cannot read the Landsat metadata {p}: {exc.strerror}.") from exc
    if p.suffix.lower() == ".json":
        try:
            tree = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{p} is not valid JSON: {exc.msg} (line {exc.lineno}).") from exc
        if not isinstance(tree, Mapping):
            raise DataError(f"{p} is not a Landsat MTL JSON object.")
        return _flatten(tree)
    return _flatten(parse_mtl_text(text, p))


def find_mtl(path: str | os.PathLike[str]) -> Path:
    """The MTL file itself, or the one ``*_MTL.txt``/``*_MTL.json`` in a folder (text first)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise DataError(f"{p} does not exist.")
    for suffix in MTL_SUFFIXES:
        found = sorted(p.glob(f"*{suffix}"))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DataError(
                f"{p} holds {len(found)} *{suffix} files ({', '.join(f.name for f in found)}); "
                "pass the MTL file of the scene you mean."
            )
    raise DataError(f"{p} holds no Landsat *_MTL.txt or *_MTL.json metadata file.")


def is_landsat_path(path: str | os.PathLike[str]) -> bool:
    """True for an ``*_MTL.txt``/``*_MTL.json`` file or a folder holding one."""
    p = Path(path)
    if p.is_dir():
        return any(any(p.glob(f"*{s}")) for s in MTL_SUFFIXES)
    return p.name.upper().endswith(tuple(s.upper() for s in MTL_SUFFIXES))


def _number(mtl: Mapping[str, Any], key: str, source: Path) -> float:
    """The MTL value ``key`` as a float (the JSON form quotes numbers); DataError if absent."""
    if key not in mtl:
        raise DataError(f"the Landsat metadata {source} lacks {key}, which climdl needs.")
    try:
        return float(mtl[key])
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: {key} = {mtl[key]!r} is not a number.") from exc


def _reflectance(mult: float, add: float, sin_elev: float) -> Converter:
    """DN -> TOA reflectance corrected for the sun elevation (handbook eq. 5-1/5-2)."""

    def convert(dn: np.ndarray) -> np.ndarray:
        rho = (mult * dn.astype(np.float64) + add) / sin_elev
        return np.where(dn == 0, np.nan, rho).astype(np.float32)

    return convert


def _brightness_temperature(mult: float, add: float, k1: float, k2: float) -> Converter:
    """DN -> radiance -> brightness temperature in K (handbook eq. 5-1/5-3); NaN for DN 0 and
    for non-positive radiance, where the logarithm is undefined."""

    def convert(dn: np.ndarray) -> np.ndarray:
        radiance = mult * dn.astype(np.float64) + add
        ok = (dn != 0) & (radiance > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            bt = k2 / np.log(k1 / np.where(ok, radiance, 1.0) + 1.0)
        return np.where(ok, bt, np.nan).astype(np.float32)

    return convert


def open_landsat(path: str | os.PathLike[str], *, latlon: bool | None = None) -> xr.Dataset:
    """A Landsat 8/9 Collection 2 Level-1 product as a lazy scene.

    ``path`` is the ``*_MTL.txt`` or ``*_MTL.json`` file, or the folder holding it; the band
    files are those the MTL names (``FILE_NAME_BAND_n``, else ``<product>_Bn.TIF``) beside it.
    Bands blue..swir22 (B2-B7) become TOA reflectance, tir (B10) brightness temperature (K).
    ``latlon``: add 2-D lat/lon (None: when the scene has at most :data:`LATLON_MAX_PIXELS`).
    """
    import rasterio

    mtl_path = find_mtl(path)
    mtl = read_mtl(mtl_path)
    sensor = str(mtl.get("SENSOR_ID", "OLI_TIRS"))
    if sensor not in ("OLI_TIRS", "OLI", "TIRS"):
        raise DataError(
            f"{mtl_path} is a {mtl.get('SPACECRAFT_ID', 'Landsat')} {sensor} product; climdl "
            "reads Landsat 8/9 OLI/TIRS Collection 2 Level-1 products only."
        )
    elevation = _number(mtl, "SUN_ELEVATION", mtl_path)
    azimuth = _number(mtl, "SUN_AZIMUTH", mtl_path)
    if elevation <= 0:
        raise DataError(
            f"{mtl_path}: the sun is below the horizon (SUN_ELEVATION {elevation:g}), so the "
            "scene has no top-of-atmosphere reflectance."
        )
    sin_elev = math.sin(math.radians(elevation))
    name = mtl_path.name
    prefix = name[: name.upper().rfind("_MTL.")]
    product = str(mtl.get("LANDSAT_PRODUCT_ID", prefix))
    sources: list[BandSource] = []
    for band in LANDSAT_BANDS:
        n = LANDSAT_BAND_NUMBERS[band.name]
        key = f"FILE_NAME_BAND_{n}"
        fname = str(mtl.get(key, f"{prefix}_B{n}.TIF"))
        fpath = mtl_path.parent / fname
        if not fpath.is_file():
            raise DataError(
                f"the {band.name} band file {fname} (Landsat band {n}) of {mtl_path.name} is "
                f"missing from {mtl_path.parent}."
            )
        if band.thermal:
            conv = _brightness_temperature(
                _number(mtl, f"RADIANCE_MULT_BAND_{n}", mtl_path),
                _number(mtl, f"RADIANCE_ADD_BAND_{n}", mtl_path),
                _number(mtl, f"K1_CONSTANT_BAND_{n}", mtl_path),
                _number(mtl, f"K2_CONSTANT_BAND_{n}", mtl_path),
            )
        else:
            conv = _reflectance(
                _number(mtl, f"REFLECTANCE_MULT_BAND_{n}", mtl_path),
                _number(mtl, f"REFLECTANCE_ADD_BAND_{n}", mtl_path),
                sin_elev,
            )
        sources.append(BandSource(fpath, 1, conv))
    try:
        with rasterio.open(sources[0].path) as f:
            coords, gm, px = _grid_coords(f, sources[0].path, latlon)
            height, width, transform = f.height, f.width, f.transform
        for s in sources[1:]:
            with rasterio.open(s.path) as f:
                if (f.height, f.width, f.transform) != (height, width, transform):
                    raise DataError(
                        f"the band files of {mtl_path.name} are not on one grid: "
                        f"{s.path.name} is {f.height} x {f.width} at {tuple(f.transform)[:6]}, "
                        f"{sources[0].path.name} {height} x {width} at {tuple(transform)[:6]}."
                    )
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"a band file of {mtl_path.name} is not a readable GeoTIFF: {exc}") from exc
    attrs: dict[str, Any] = {
        "title": f"Landsat scene {product}",
        "source": "Landsat 8/9 OLI/TIRS Collection 2 Level-1 product (USGS), converted to TOA "
        "reflectance and brightness temperature by climdl.clouds.landsat",
        "comment": "TOA reflectance = (REFLECTANCE_MULT * DN + REFLECTANCE_ADD) / "
        "sin(SUN_ELEVATION); brightness temperature = K2 / ln(K1 / (RADIANCE_MULT * DN + "
        "RADIANCE_ADD) + 1); DN 0 -> NaN (Landsat 8 Data Users Handbook, section 5)",
        "scene_id": product,
        "sun_zenith_angle": round(90.0 - elevation, 6),
        "sun_azimuth_angle": azimuth,
        "pixel_size_m": px if px is not None else float(mtl.get("GRID_CELL_SIZE_REFLECTIVE", 30.0)),
        "metadata_file": str(mtl_path.resolve()),
    }
    for key, attr in (
        ("LANDSAT_SCENE_ID", "landsat_scene_id"),
        ("SPACECRAFT_ID", "spacecraft_id"),
        ("SENSOR_ID", "sensor_id"),
        ("DATE_ACQUIRED", "date_acquired"),
        ("SCENE_CENTER_TIME", "scene_center_time"),
        ("CLOUD_COVER", "usgs_cloud_cover"),
        ("EARTH_SUN_DISTANCE", "earth_sun_distance"),
    ):
        if key in mtl:
            v = mtl[key]
            attrs[attr] = v if isinstance(v, int | float) else str(v)
    return _assemble(sources, LANDSAT_BANDS, height, width, coords, gm, attrs)


# ---------------------------------------------------------------------------- GeoTIFF
def _tag_number(value: str | None) -> float | None:
    """A GDAL metadata tag (always text) as a float, None if empty or not a number."""
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _scaled(scale: float, offset: float, nodata: float | None) -> Converter:
    """Stored GeoTIFF values -> float32 after the GDAL scale/offset, the nodata value -> NaN."""

    def convert(raw: np.ndarray) -> np.ndarray:
        v = raw.astype(np.float64) * scale + offset
        if nodata is not None and not math.isnan(nodata):
            v = np.where(raw == nodata, np.nan, v)
        return v.astype(np.float32)

    return convert


def _geotiff_band(f: Any, i: int, path: Path) -> Band | None:
    """The band ``i`` (1-based) from its description, ``wavelength`` tags and units; None if
    nothing names it."""
    known = {b.name: b for b in LANDSAT_BANDS}
    tags = {k.lower(): v for k, v in f.tags(i).items()}
    imagery = f.tags(i, ns="IMAGERY")
    desc = (f.descriptions[i - 1] or "").strip()
    wl = _tag_number(tags.get("wavelength"))
    if wl is not None and tags.get("wavelength_units", "um").lower() in ("nm", "nanometers"):
        wl /= 1000.0
    if wl is None:
        wl = _tag_number(imagery.get("CENTRAL_WAVELENGTH_UM"))
    if not desc and wl is None:
        return None
    if not desc:
        assert wl is not None
        close = [b for b in LANDSAT_BANDS if abs(b.wavelength - wl) <= 0.05 * b.wavelength]
        desc = close[0].name if close else f"band{i}"
    ref = known.get(desc)
    if wl is None:
        if ref is None:
            raise DataError(
                f"{path} band {i} is named {desc!r}, which is none of climdl's bands "
                f"({', '.join(known)}), and has no 'wavelength' tag (um) to say what it is."
            )
        wl = ref.wavelength
    unit = str(tags.get("band_units") or tags.get("units") or (f.units[i - 1] or "")).strip()
    if unit in ("", "reflectance"):
        unit = ref.units if ref is not None else ("K" if wl > 3.0 else "1")
    if unit.lower() in ("kelvin", "k"):
        unit = "K"
    return Band(desc, wl, unit)


def open_geotiff(path: str | os.PathLike[str], *, latlon: bool | None = None) -> xr.Dataset:
    """A multi-band GeoTIFF whose bands are named (GDAL band descriptions such as ``blue``,
    ``green``, ..., or ``wavelength`` tags in um) as a lazy scene.

    Values are taken as TOA reflectance (reflective bands) and brightness temperature in K
    (thermal bands), after the GDAL scale/offset; the nodata value becomes NaN. Dataset-level
    tags (``sun_zenith_angle``, ...) become attributes. ``latlon`` as in :func:`open_landsat`.
    """
    import rasterio

    p = Path(path)
    if not p.is_file():
        raise DataError(f"scene {p} does not exist.")
    try:
        f = rasterio.open(p)
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"{p} is not a readable GeoTIFF: {str(exc).splitlines()[0]}") from exc
    with f:
        bands = [_geotiff_band(f, i, p) for i in range(1, f.count + 1)]
        unnamed = [i + 1 for i, b in enumerate(bands) if b is None]
        if unnamed and re.search(r"_B\d+$", p.stem, re.IGNORECASE) and is_landsat_path(p.parent):
            raise DataError(
                f"{p.name} is one band of a Landsat product; pass its *_MTL.txt file or its "
                "folder instead."
            )
        if unnamed:
            raise DataError(
                f"{p}: band(s) {', '.join(map(str, unnamed))} of {f.count} have no name; set "
                f"each band's GDAL description to its name ({', '.join(b.name for b in LANDSAT_BANDS)}), "
                f"e.g. rio edit-info --bidx 1 --description blue {p.name}."
            )
        coords, gm, px = _grid_coords(f, p, latlon)
        sources = [
            BandSource(p, i, _scaled(f.scales[i - 1], f.offsets[i - 1], f.nodatavals[i - 1]))
            for i in range(1, f.count + 1)
        ]
        attrs: dict[str, Any] = {
            "title": f"GeoTIFF scene {p.stem}",
            "source": f"multi-band GeoTIFF {p.name}, values as stored (after GDAL scale/offset)",
        }
        for k, v in f.tags().items():
            if k in ("AREA_OR_POINT",) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
                continue
            num = _tag_number(v)
            attrs[k] = num if num is not None else v
        if px is not None:
            attrs.setdefault("pixel_size_m", px)
        height, width = f.height, f.width
    named = [b for b in bands if b is not None]
    return _assemble(sources, named, height, width, coords, gm, attrs)
