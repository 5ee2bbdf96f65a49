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
the window, never the ~7800 x 7700 x 7 scene; a thinned read (every n-th pixel) is read in
bounded strips, each thinned in turn. A band file that opens but cannot be read (cut short) is
a :class:`~climdl.errors.DataError` naming it. Scenes pickle and copy (to Dask, say).

The Landsat conversion follows the USGS Landsat 8 Data Users Handbook (LSDS-1574), section 5:
top-of-atmosphere reflectance
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
from collections.abc import Callable, Iterator, Mapping, Sequence
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

STRIP_PIXELS = 1 << 22
"""A thinned read (every n-th row or column, as ``climdl plot`` asks of a large scene) reads
strips of at most this many pixels per band (one row at least) and thins each in turn, so that
memory follows the thinned result, never the span it is taken from."""


# ---------------------------------------------------------------------------- lazy arrays
@dataclass(frozen=True)
class _Axis:
    """One axis of an outer-indexer key as a read: positions ``start, start + step, ... <
    stop`` (ascending), then ``take`` of those (None: all of them), and the axis dropped for an
    integer key (``squeeze``)."""

    start: int
    stop: int
    step: int
    take: np.ndarray | slice | None
    squeeze: bool

    @property
    def size(self) -> int:
        """How many positions are read."""
        return len(range(self.start, self.stop, self.step))

    @property
    def positions(self) -> np.ndarray:
        """The positions read."""
        return np.arange(self.start, self.stop, self.step)


def _axis_window(key: Any, n: int) -> _Axis:
    """The read of one axis of an outer-indexer key (an integer, slice or index array): evenly
    spaced indices (a slice with any step, either way) read just those positions; any other
    index array reads its whole range and picks from it."""
    idx = np.arange(n)[key]
    squeeze = idx.ndim == 0
    idx = np.atleast_1d(idx)
    if idx.size == 0:
        return _Axis(0, 0, 1, None, squeeze)
    lo, hi = int(idx.min()), int(idx.max()) + 1
    if idx.size == 1:
        return _Axis(lo, hi, 1, None, squeeze)
    steps = np.diff(idx)
    if steps[0] != 0 and bool(np.all(steps == steps[0])):
        step = int(steps[0])
        if step > 0:
            return _Axis(lo, hi, step, None, squeeze)
        return _Axis(lo, hi, -step, slice(None, None, -1), squeeze)
    return _Axis(lo, hi, 1, idx - lo, squeeze)


def _finish(out: np.ndarray, axes: Sequence[_Axis]) -> np.ndarray:
    """Apply the ``take`` and ``squeeze`` of the last ``len(axes)`` axes of ``out``."""
    lead = out.ndim - len(axes)
    for k, ax in enumerate(axes):
        if ax.take is not None:
            out = out[(slice(None),) * (lead + k) + (ax.take,)]
    for k in reversed(range(len(axes))):
        if axes[k].squeeze:
            out = out[(slice(None),) * (lead + k) + (0,)]
    return out


def _read_error(path: Path, exc: Exception) -> DataError:
    """The one sentence for a band file that opened (or not) but cannot be read."""
    # rasterio's message is often 'Read failed. See previous exception for details.': GDAL's
    # own reason is the cause
    detail = str(exc.__cause__ or exc).strip().splitlines()[0].rstrip(".")
    return DataError(f"cannot read {path}: {detail}; the file may be incomplete (re-download it).")


@dataclass(frozen=True)
class BandSource:
    """Where one band of a scene lives: a GeoTIFF, its 1-based band index, and the conversion."""

    path: Path
    index: int
    convert: Converter


class RasterBands(BackendArray):
    """``(band, y, x)`` float32 image over GeoTIFF bands; each read opens the files and reads
    only the requested window (xarray's lazy indexing composes ``isel`` into one read); a
    thinned window (every n-th row or column) is read in strips of at most
    :data:`STRIP_PIXELS` pixels, each thinned before the next is read."""

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

        bands = np.atleast_1d(np.arange(self.shape[0])[key[0]])
        rows = _axis_window(key[1], self.shape[1])
        cols = _axis_window(key[2], self.shape[2])
        out = np.empty((bands.size, rows.size, cols.size), dtype=np.float32)
        if out.size:
            by_file: dict[Path, list[int]] = {}
            for i, b in enumerate(bands):
                by_file.setdefault(self.sources[int(b)].path, []).append(i)
            for path, positions in by_file.items():
                srcs = [self.sources[int(bands[i])] for i in positions]
                try:
                    with rasterio.open(path) as f:
                        for k0, raw in self._strips(f, [s.index for s in srcs], rows, cols):
                            for j, i in enumerate(positions):
                                out[i, k0 : k0 + raw.shape[1]] = srcs[j].convert(raw[j])
                except rasterio.errors.RasterioError as exc:
                    raise _read_error(path, exc) from exc
        out = _finish(out, (rows, cols))
        if np.ndim(np.arange(self.shape[0])[key[0]]) == 0:
            out = out[0]
        return out

    @staticmethod
    def _strips(
        f: Any, indexes: list[int], rows: _Axis, cols: _Axis
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(first output row, raw values (band, row, column))`` of the rows and columns
        read: the window in one read, or, thinned, in strips of at most :data:`STRIP_PIXELS`
        pixels (GDAL's decimating read would pick the middle pixel of each step, not the
        first, and may take an overview)."""
        from rasterio.windows import Window

        width = cols.stop - cols.start
        if rows.step == 1 and cols.step == 1:
            yield 0, f.read(indexes, window=Window(cols.start, rows.start, width, rows.size))
            return
        span = max(1, STRIP_PIXELS // max(width, 1))  # source rows per read
        per = max(1, (span - 1) // rows.step + 1)  # output rows per read
        for k0 in range(0, rows.size, per):
            k1 = min(k0 + per, rows.size)
            r0 = rows.start + k0 * rows.step
            height = (k1 - k0 - 1) * rows.step + 1
            raw = f.read(indexes, window=Window(cols.start, r0, width, height))
            yield k0, raw[:, :: rows.step, :: cols.step]


class _LatLonGrid:
    """Geographic coordinates of projected pixel centres, computed per read with pyproj (for
    the pixels read only, so a thinned read transforms the thinned grid); the last read is
    kept so that reading ``lat`` then ``lon`` of a strip transforms it once. Picklable: the
    lock and the kept read are left out and made anew."""

    def __init__(self, crs_wkt: str, x: np.ndarray, y: np.ndarray) -> None:
        self.crs_wkt, self.x, self.y = crs_wkt, x, y
        self._last: tuple[tuple[int, ...], np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"crs_wkt": self.crs_wkt, "x": self.x, "y": self.y}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.crs_wkt, self.x, self.y = state["crs_wkt"], state["x"], state["y"]
        self._last = None
        self._lock = threading.Lock()

    def window(self, rows: _Axis, cols: _Axis) -> tuple[np.ndarray, np.ndarray]:
        """``(lat, lon)`` float32 of the positions read of ``rows`` and ``cols``."""
        from pyproj import CRS, Transformer

        key = (rows.start, rows.stop, rows.step, cols.start, cols.stop, cols.step)
        with self._lock:
            if self._last is not None and self._last[0] == key:
                return self._last[1], self._last[2]
            tr = Transformer.from_crs(CRS.from_wkt(self.crs_wkt), "EPSG:4326", always_xy=True)
            xx, yy = np.meshgrid(self.x[cols.positions], self.y[rows.positions])
            lon, lat = tr.transform(xx, yy)
            res = (np.asarray(lat, np.float32), np.asarray(lon, np.float32))
            self._last = (key, *res)
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
        rows = _axis_window(key[0], self.shape[0])
        cols = _axis_window(key[1], self.shape[1])
        if rows.size == 0 or cols.size == 0:
            out = np.empty((rows.size, cols.size), np.float32)
        else:
            out = self.grid.window(rows, cols)[self.which]
        return np.array(_finish(out, (rows, cols)))


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


@dataclass(frozen=True)
class _Reflectance:
    """DN -> TOA reflectance corrected for the sun elevation (handbook eq. 5-1/5-2); a class,
    not a closure, so that scenes pickle (copies, Dask)."""

    mult: float
    add: float
    sin_elev: float

    def __call__(self, dn: np.ndarray) -> np.ndarray:
        rho = (self.mult * dn.astype(np.float64) + self.add) / self.sin_elev
        return np.where(dn == 0, np.nan, rho).astype(np.float32)


@dataclass(frozen=True)
class _BrightnessTemperature:
    """DN -> radiance -> brightness temperature in K (handbook eq. 5-1/5-3); NaN for DN 0 and
    for non-positive radiance, where the logarithm is undefined."""

    mult: float
    add: float
    k1: float
    k2: float

    def __call__(self, dn: np.ndarray) -> np.ndarray:
        radiance = self.mult * dn.astype(np.float64) + self.add
        ok = (dn != 0) & (radiance > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            bt = self.k2 / np.log(self.k1 / np.where(ok, radiance, 1.0) + 1.0)
        return np.where(ok, bt, np.nan).astype(np.float32)


def open_landsat(path: str | os.PathLike[str], *, latlon: bool | None = None) -> xr.Dataset:
    """A Landsat 8/9 Collection 2 Level-1 product as a lazy scene.

    ``path`` is the ``*_MTL.txt`` or ``*_MTL.json`` file, or the folder holding it; the band
    files are those the MTL names (``FILE_NAME_BAND_n``, else ``<product>_Bn.TIF``) beside it.
    Bands blue..swir22 (B2-B7) become TOA reflectance, tir (B10) brightness temperature (K).
    Level-2 products (``PROCESSING_LEVEL`` L2SP/L2SR) are refused: they hold no DNs to convert.
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
    level = str(mtl.get("PROCESSING_LEVEL", "L1")).strip()
    if not level.upper().startswith("L1"):
        kind = "a Level-2 product" if level.upper().startswith("L2") else "not a Level-1 product"
        raise DataError(
            f"{mtl_path.name} is {kind} ({level}); climdl segment needs Level-1 "
            "top-of-atmosphere data (L1TP/L1GT/L1GS), so download the Collection 2 Level-1 "
            "product of this scene."
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
            conv: Converter = _BrightnessTemperature(
                _number(mtl, f"RADIANCE_MULT_BAND_{n}", mtl_path),
                _number(mtl, f"RADIANCE_ADD_BAND_{n}", mtl_path),
                _number(mtl, f"K1_CONSTANT_BAND_{n}", mtl_path),
                _number(mtl, f"K2_CONSTANT_BAND_{n}", mtl_path),
            )
        else:
            conv = _Reflectance(
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


@dataclass(frozen=True)
class _Scaled:
    """Stored GeoTIFF values -> float32 after the GDAL scale/offset, the nodata value -> NaN."""

    scale: float
    offset: float
    nodata: float | None

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        v = raw.astype(np.float64) * self.scale + self.offset
        if self.nodata is not None and not math.isnan(self.nodata):
            v = np.where(raw == self.nodata, np.nan, v)
        return v.astype(np.float32)


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
            BandSource(p, i, _Scaled(f.scales[i - 1], f.offsets[i - 1], f.nodatavals[i - 1]))
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
