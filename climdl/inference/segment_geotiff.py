"""The GeoTIFF output of ``climdl segment`` (:class:`GeoTiffMaskWriter`).

An output ending in ``.tif``/``.tiff`` (:func:`is_geotiff`) is a GeoTIFF: the uint8 mask (nodata
255, ``flag_values``/``flag_meanings`` band tags, a colour table) on the scene's grid, north-up,
tiled, DEFLATE, with the provenance in the dataset tags; it needs a grid mapping and regularly
spaced 1-D x/y (:func:`geotiff_grid`). A GeoTIFF's bands share one data type, so the
probabilities go to a second float32 GeoTIFF, :func:`probability_path`
(``<stem>_probability.tif``), one band per class.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from climdl.clouds.scene import NODATA, label_attrs
from climdl.errors import ConfigError, OutputError
from climdl.io.oserrors import space_error
from climdl.preprocess.length_units import metres_per_unit


def is_geotiff(path: str | Path) -> bool:
    """Whether an output path asks for a GeoTIFF (``.tif``/``.tiff``, any case)."""
    return Path(path).suffix.lower() in (".tif", ".tiff")


def probability_path(output: str | Path) -> Path:
    """Where the probabilities of a GeoTIFF mask go: ``<stem>_probability<suffix>`` beside it
    (a GeoTIFF's bands share one data type, so the float32 probabilities cannot sit beside the
    uint8 mask in one file)."""
    p = Path(output)
    return p.with_name(f"{p.stem}_probability{p.suffix}")


#: block side of the GeoTIFF output (a multiple of 16, as GeoTIFF tiles must be)
GEOTIFF_BLOCK = 256


@dataclass(frozen=True)
class GeoGrid:
    """A scene's regular grid as a north-up GeoTIFF sees it.

    ``transform``: GDAL's affine ``(a, b, c, d, e, f)`` of the file (``e`` < 0, ``a`` > 0);
    ``flip_y``/``flip_x``: the scene's rows (columns) run south to north (east to west) and are
    written reversed."""

    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    flip_y: bool
    flip_x: bool


def geotiff_grid(
    ds: xr.Dataset, iname: str, ydim: str, xdim: str, source: object, output: Path
) -> GeoGrid:
    """The CRS (grid mapping ``crs_wkt``, else :meth:`pyproj.CRS.from_cf`) and north-up affine
    transform of the scene's regular 1-D pixel-centre coordinates; :class:`ConfigError` (write
    NetCDF instead) for scenes without a grid mapping or with irregular or 2-D-only ones."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    instead = f"write the mask as NetCDF instead (-o {output.with_suffix('.nc').name})"
    img = ds[iname]
    gm = img.attrs.get("grid_mapping", img.encoding.get("grid_mapping"))
    gm_name = str(gm).split(":")[0].strip() if gm else ""
    if not gm_name or gm_name not in ds.variables:
        raise ConfigError(
            f"{source} has no CF grid mapping (a crs variable with crs_wkt), so its mask "
            f"cannot be georeferenced as a GeoTIFF; {instead}."
        )
    gm_attrs = dict(ds.variables[gm_name].attrs)
    try:
        wkt = gm_attrs.get("crs_wkt")
        crs = CRS.from_wkt(str(wkt)) if wkt else CRS.from_cf(gm_attrs)
    except CRSError as exc:
        raise ConfigError(
            f"{source}: the grid mapping {gm_name!r} is not a CRS that pyproj understands "
            f"({str(exc).splitlines()[0]}); {instead}."
        ) from exc
    crs_metres = float(crs.axis_info[0].unit_conversion_factor) if crs.axis_info else 1.0
    axes = []
    for dim in (xdim, ydim):
        var = ds.variables.get(dim)
        regular = _regular(var) if var is not None and var.dims == (dim,) else None
        if var is None or regular is None:
            raise ConfigError(
                f"{source} has no regularly spaced 1-D {dim!r} coordinate (pixel centres), "
                f"so its mask cannot be written as a GeoTIFF; {instead}."
            )
        metres = metres_per_unit(var.attrs.get("units", ""))
        scale = metres / crs_metres if metres is not None and crs.is_projected else 1.0
        axes.append((regular[0] * scale, regular[1] * scale))
    (x0, dx), (y0, dy) = axes
    nx, ny = ds.sizes[xdim], ds.sizes[ydim]
    west = min(x0, x0 + dx * (nx - 1)) - abs(dx) / 2.0
    north = max(y0, y0 + dy * (ny - 1)) + abs(dy) / 2.0
    return GeoGrid(
        crs_wkt=crs.to_wkt(),
        transform=(abs(dx), 0.0, west, 0.0, -abs(dy), north),
        flip_y=dy > 0,
        flip_x=dx < 0,
    )


def _regular(var: xr.Variable) -> tuple[float, float] | None:
    """``(first, step)`` of evenly spaced, strictly monotonic numeric coordinates, else None
    (single values too: their spacing is unknown)."""
    if var.dtype.kind not in "iuf" or var.size < 2:
        return None
    v = np.asarray(var.values, dtype=np.float64)
    step = (v[-1] - v[0]) / (v.size - 1)
    if not np.isfinite(step) or step == 0.0:
        return None
    eps = float(np.finfo(var.dtype).eps) if var.dtype.kind == "f" else 0.0
    tol = max(1e-3 * abs(step), 4.0 * eps * float(np.abs(v).max()))
    if np.abs(v - (v[0] + step * np.arange(v.size))).max() > tol:
        return None
    return float(v[0]), float(step)


#: colour-table entry of classes that plots leave see-through (clear): a TIFF palette has no alpha
CLEAR_GREY = (190, 190, 190, 255)


def _rgba(colour: str | None) -> tuple[int, int, int, int]:
    if colour is None:
        return CLEAR_GREY
    from matplotlib.colors import to_rgba

    r, g, b, a = to_rgba(colour)
    return (round(255 * r), round(255 * g), round(255 * b), round(255 * a))


class GeoTiffMaskWriter:
    """The GeoTIFF output, tiled (:data:`GEOTIFF_BLOCK` square blocks), DEFLATE, BigTIFF when
    needed, north-up on the scene's grid (:class:`GeoGrid`).

    ``path``: band 1 ``cloud_mask``, uint8, nodata :data:`NODATA`, ``flag_values`` /
    ``flag_meanings`` band tags and a colour table in the colours of
    :func:`climdl.plot.masks.class_colours` (clear light grey: a TIFF palette has no alpha; GIS
    draw the nodata value see-through); ``prob_path`` (or
    None): float32 probabilities, one band per class named by its description, nodata NaN. The
    provenance goes into the dataset tags of both. Rows are held until they fill a whole row of
    blocks, so every block is compressed and written once and memory stays within
    ``block x width``.
    """

    def __init__(
        self,
        path: Path,
        prob_path: Path | None,
        grid: GeoGrid,
        height: int,
        width: int,
        classes: list[str],
        attrs: dict[str, Any],
    ) -> None:
        import rasterio
        from rasterio.transform import Affine

        from climdl.plot.masks import class_colours

        self._grid, self._height = grid, height
        block = GEOTIFF_BLOCK
        # scene rows at which a row of file blocks ends (file rows run north to south)
        edges = range(block, height, block) if not grid.flip_y else range(height, 0, -block)
        self._edges = sorted({height, *edges})
        self._next = 0  # the next scene row expected
        self._labels: list[np.ndarray] = []  # rows held until they fill a row of blocks
        self._probs: list[np.ndarray] = []
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": width,
            "height": height,
            "crs": rasterio.crs.CRS.from_wkt(grid.crs_wkt),
            "transform": Affine(*grid.transform),
            "tiled": True,
            "blockxsize": block,
            "blockysize": block,
            "compress": "deflate",
            "bigtiff": "IF_SAFER",
        }
        # provenance as dataset tags; the NetCDF-only convention attribute does not apply here
        tags = {k: str(v) for k, v in attrs.items() if k != "Conventions"}
        fl = label_attrs(classes)
        self._mask = rasterio.open(path, "w", **profile, count=1, dtype="uint8", nodata=NODATA)
        self._prob = None
        try:
            self._mask.set_band_description(1, "cloud_mask")
            self._mask.update_tags(**tags)
            self._mask.update_tags(
                1,
                long_name="cloud mask (most probable class)",
                flag_values=" ".join(str(int(v)) for v in fl["flag_values"]),
                flag_meanings=fl["flag_meanings"],
                comment=fl["comment"],
            )
            cmap = dict.fromkeys(range(256), (0, 0, 0, 0))
            cmap |= {i: _rgba(c) for i, c in enumerate(class_colours(classes))}
            self._mask.write_colormap(1, cmap)
            if prob_path is not None:
                self._prob = rasterio.open(
                    prob_path,
                    "w",
                    **profile,
                    count=len(classes),
                    dtype="float32",
                    nodata=float("nan"),
                    predictor=3,
                )
                self._prob.update_tags(**(tags | {"title": "cloud class probabilities"}))
                for i, c in enumerate(classes):
                    self._prob.set_band_description(i + 1, c)
                    self._prob.update_tags(i + 1, long_name=f"probability of {c}", units="1")
        except BaseException:
            self.close()
            raise

    def write_rows(self, y0: int, labels: np.ndarray, probs: np.ndarray | None) -> None:
        """See :meth:`~climdl.inference.segment.MaskWriter.write_rows`."""
        if y0 != self._next:
            raise ValueError(f"rows must come in order: expected row {self._next}, got {y0}")
        start = self._next - sum(a.shape[0] for a in self._labels)
        self._labels.append(labels)
        if self._prob is not None and probs is not None:
            self._probs.append(probs)
        self._next += labels.shape[0]
        while self._edges and self._edges[0] <= self._next:
            n = self._edges.pop(0) - start
            lab = np.concatenate(self._labels)
            prb = np.concatenate(self._probs, axis=1) if self._probs else None
            self._write(start, lab[:n], None if prb is None else prb[:, :n])
            self._labels = [lab[n:]]
            self._probs = [] if prb is None else [prb[:, n:]]
            start += n

    def _write(self, y0: int, labels: np.ndarray, probs: np.ndarray | None) -> None:
        from rasterio.windows import Window

        rows, width = labels.shape
        g = self._grid
        if g.flip_y:  # scene rows run south to north: the file's first row is the last one
            labels, row0 = labels[::-1], self._height - y0 - rows
            probs = None if probs is None else probs[:, ::-1]
        else:
            row0 = y0
        if g.flip_x:
            labels = labels[:, ::-1]
            probs = None if probs is None else probs[:, :, ::-1]
        window = Window(0, row0, width, rows)
        self._mask.write(np.ascontiguousarray(labels), 1, window=window)
        if self._prob is not None and probs is not None:
            self._prob.write(np.ascontiguousarray(probs, dtype=np.float32), window=window)

    def close(self) -> None:
        """See :meth:`~climdl.inference.segment.MaskWriter.close`.

        GDAL reports a write that fails as the file is flushed and closed (a full disk) on
        stderr only: rasterio raises nothing. A writer that received every row therefore checks
        its files after closing them (:func:`_complete`) and raises instead of letting a
        truncated GeoTIFF be renamed into place."""
        files = [(f, Path(f.name)) for f in (self._mask, self._prob) if f is not None]
        for f, _ in files:
            if not f.closed:
                f.close()
        self._labels, self._probs = [], []
        if self._next != self._height:  # closed after a failure: nothing is kept anyway
            return
        for _, path in files:
            if not _complete(path):
                code = space_error(path)
                if code is not None:  # named with the output's final name by atomic_path
                    raise OSError(code, os.strerror(code), str(path))
                raise OutputError(
                    "GDAL could not write the GeoTIFF completely (its message is above); "
                    "the output was not kept."
                )


def _complete(path: Path) -> bool:
    """Whether the GeoTIFF ``path`` opens and every block lies within the file (a write cut
    short leaves a header that points past the end, or no readable header at all). Reads the
    TIFF's block table only, not the data: milliseconds for a scene's thousands of blocks."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        size = path.stat().st_size
        with rasterio.open(path) as ds:
            bh, bw = ds.block_shapes[0]
            # pixel-interleaved bands (the probabilities) share one block table
            bands = ds.indexes if str(ds.interleaving).lower().endswith("band") else [1]
            for b in bands:
                for j in range(-(-ds.height // bh)):
                    for i in range(-(-ds.width // bw)):
                        off = ds.get_tag_item(f"BLOCK_OFFSET_{i}_{j}", "TIFF", bidx=b)
                        n = ds.get_tag_item(f"BLOCK_SIZE_{i}_{j}", "TIFF", bidx=b)
                        if not off or not n or int(off) + int(n) > size:
                            return False
    except (RasterioIOError, OSError):
        return False
    return True
