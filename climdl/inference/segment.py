"""``climdl segment``: tiled cloud segmentation of scenes of any size, in bounded memory.

The scene is cut into overlapping tiles (:class:`TileGrid`); each tile's class probabilities are
weighted by a smooth window that falls towards the tile's edges (:func:`blend_window`) and
summed, and the sum is divided by the summed weights, so overlapping predictions blend without
seams and a pixel covered by one tile keeps exactly that tile's prediction. Tiles go to the
device in batches. The work proceeds one row of tiles at a time (:func:`run_tiled`): the input is
read a strip of ``tile`` rows at a time through xarray's lazy indexing, and the rows that no
later tile touches are written at once to the output, which is built under a temporary name and
renamed when complete. Memory is therefore proportional to ``tile x width``, never to the scene.

The output is CF NetCDF: ``cloud_mask`` (uint8 flag variable: ``flag_values``,
``flag_meanings``, ``_FillValue`` 255 where the input has no data) and, with
``probabilities=True``, ``probability`` (``class, y, x``); the input's spatial coordinates,
auxiliary coordinates (e.g. 2-D lat/lon, copied a strip at a time) and grid mapping, written from
the opened scene Dataset (so any input :func:`~climdl.clouds.scene.open_scene` reads works:
scene NetCDF, Landsat product, GeoTIFF) in the input's stored form (dtype, packing, fill value);
provenance (climdl version, checkpoint path and SHA-256, input file, tiling) in the global
attributes.

An output ending in ``.tif``/``.tiff`` is a GeoTIFF instead (:class:`GeoTiffMaskWriter`): the
uint8 mask (nodata 255, ``flag_values``/``flag_meanings`` band tags, a colour table) on the
scene's grid, north-up, tiled, DEFLATE, with the provenance in the dataset tags; it needs a grid
mapping and regularly spaced 1-D x/y (:func:`geotiff_grid`). A GeoTIFF's bands share one data
type, so ``probabilities=True`` writes them to a second float32 GeoTIFF,
``<stem>_probability.tif``, one band per class. Both formats sit behind :class:`MaskWriter`,
which receives the finished rows.
Before any computation the scene's bands are matched to the checkpoint's by name (reordered if
needed) and checked against its wavelengths, units and value ranges.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import xarray as xr

from climdl import __version__
from climdl.clouds.scene import (
    BAND_DIM,
    NODATA,
    Band,
    bands_of,
    image_name,
    label_attrs,
    open_scene,
    spatial_dims,
    validate_scene,
)
from climdl.errors import ConfigError, DataError, OutputError
from climdl.io.netcdf import atomic_path

log = logging.getLogger(__name__)

Predict = Callable[[np.ndarray], np.ndarray]
"""``[B, C, h, w]`` float32 tiles -> ``[B, K, h, w]`` class probabilities."""


# ---------------------------------------------------------------------------- tiling
def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``0..n`` with at least ``overlap``
    shared pixels between neighbours; the last tile ends at ``n`` (one tile if ``n <= tile``)."""
    if n <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, n - tile, stride))
    starts.append(n - tile)
    return sorted(set(starts))


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of a ``height x width`` scene lie.

    ``tile_h``/``tile_w`` are the network's input size: the requested tile, or the scene side
    rounded up to ``multiple`` when the scene is smaller (the tile is then padded by reflection).
    """

    height: int
    width: int
    tile_h: int
    tile_w: int
    overlap: int
    rows: tuple[int, ...] = field(init=False)
    cols: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(tile_starts(self.height, self.tile_h, self.overlap)))
        object.__setattr__(self, "cols", tuple(tile_starts(self.width, self.tile_w, self.overlap)))

    @property
    def n_tiles(self) -> int:
        """Number of tiles."""
        return len(self.rows) * len(self.cols)

    def windows(self) -> Iterator[tuple[int, int]]:
        """``(row, col)`` starts of every tile, row by row."""
        for r in self.rows:
            for c in self.cols:
                yield r, c


def plan_tiles(height: int, width: int, tile: int, overlap: int, multiple: int) -> TileGrid:
    """Check the tiling options against the network and lay out the tiles."""
    if tile < multiple or tile % multiple:
        raise ConfigError(
            f"--tile must be a positive multiple of {multiple} (the network's "
            f"2**depth), got {tile}; try {max(multiple, tile // multiple * multiple)}."
        )
    if overlap < 0 or 2 * overlap > tile:
        raise ConfigError(
            f"--overlap must be between 0 and half the tile ({tile // 2}), got {overlap}."
        )
    tile_h = min(tile, -(-height // multiple) * multiple)
    tile_w = min(tile, -(-width // multiple) * multiple)
    return TileGrid(height, width, tile_h, tile_w, min(overlap, tile_h // 2, tile_w // 2))


def _ramp(n: int, overlap: int) -> np.ndarray:
    if overlap <= 0:
        return np.ones(n, dtype=np.float32)
    i = np.arange(n, dtype=np.float64)
    edge = np.minimum(i + 0.5, n - i - 0.5) / overlap
    w: np.ndarray = np.sin(0.5 * np.pi * np.clip(edge, 0.0, 1.0)) ** 2
    return w.astype(np.float32)


def blend_window(tile_h: int, tile_w: int, overlap: int) -> np.ndarray:
    """``[tile_h, tile_w]`` blending weights: 1 inside, a sine-squared ramp over ``overlap``
    pixels at each edge, never zero (so every pixel has weight)."""
    return np.outer(_ramp(tile_h, overlap), _ramp(tile_w, overlap))


def _pad_to(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Pad the last two axes to ``h x w`` by reflection (edge values for tiny inputs)."""
    ph, pw = h - a.shape[-2], w - a.shape[-1]
    if ph <= 0 and pw <= 0:
        return a
    pad = [(0, 0)] * (a.ndim - 2) + [(0, max(ph, 0)), (0, max(pw, 0))]
    if ph < a.shape[-2] and pw < a.shape[-1]:
        return np.pad(a, pad, mode="reflect")
    return np.pad(a, pad, mode="edge")


def run_tiled(
    read_rows: Callable[[int, int], np.ndarray],
    predict: Predict,
    grid: TileGrid,
    n_classes: int,
    write_rows: Callable[[int, np.ndarray], None],
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Blend tile predictions into full rows and hand them on as soon as they are final.

    ``read_rows(y0, y1)`` gives the input ``[C, y1 - y0, width]``; ``write_rows(y0, probs)``
    receives ``[K, rows, width]`` blended probabilities for rows ``y0..y0 + rows``, in order and
    each row once. Memory: one strip of input and ``K x tile_h x width`` accumulators.
    """
    th, tw, w = grid.tile_h, grid.tile_w, grid.width
    weights = blend_window(th, tw, grid.overlap)
    acc = np.zeros((n_classes, th, w), dtype=np.float32)
    wsum = np.zeros((th, w), dtype=np.float32)
    buf0 = 0  # scene row of the accumulators' first row
    done = 0
    for ri, y0 in enumerate(grid.rows):
        y1 = min(y0 + th, grid.height)
        strip = read_rows(y0, y1)
        tiles: list[np.ndarray] = []
        places: list[int] = []
        for x0 in grid.cols:
            tiles.append(_pad_to(strip[:, :, x0 : x0 + tw], th, tw))
            places.append(x0)
        for b in range(0, len(tiles), batch_size):
            probs = predict(np.stack(tiles[b : b + batch_size]))
            for p, x0 in zip(probs, places[b : b + batch_size], strict=True):
                hh, ww = y1 - y0, min(tw, w - x0)
                wt = weights[:hh, :ww]
                acc[:, y0 - buf0 : y0 - buf0 + hh, x0 : x0 + ww] += p[:, :hh, :ww] * wt
                wsum[y0 - buf0 : y0 - buf0 + hh, x0 : x0 + ww] += wt
            done += len(probs)
            if progress is not None:
                progress(done, grid.n_tiles)
        nxt = grid.rows[ri + 1] if ri + 1 < len(grid.rows) else grid.height
        n_final = nxt - buf0
        write_rows(buf0, (acc[:, :n_final] / wsum[None, :n_final]).astype(np.float32))
        acc = np.roll(acc, -n_final, axis=1)
        wsum = np.roll(wsum, -n_final, axis=0)
        acc[:, th - n_final :] = 0.0
        wsum[th - n_final :] = 0.0
        buf0 = nxt


# ---------------------------------------------------------------------------- bands
def match_bands(scene: Sequence[Band], model: Sequence[Band], source: object) -> list[int]:
    """Indices of the model's bands in the scene; :class:`DataError` for missing bands and for
    bands whose wavelength or units contradict the checkpoint (mislabelled or misordered)."""
    names = [b.name for b in scene]
    missing = [b.name for b in model if b.name not in names]
    if missing:
        raise DataError(
            f"{source} lacks the band(s) {', '.join(missing)} that the model was "
            f"trained on; it has {', '.join(names)} and the model needs "
            f"{', '.join(b.name for b in model)} (band coordinate names)."
        )
    order = [names.index(b.name) for b in model]
    for b, i in zip(model, order, strict=True):
        s = scene[i]
        if (
            np.isfinite(s.wavelength)
            and np.isfinite(b.wavelength)
            and abs(s.wavelength - b.wavelength) > 0.05 * b.wavelength
        ):
            raise DataError(
                f"{source}: band {b.name!r} has central wavelength {s.wavelength:g} um "
                f"but the model's {b.name!r} is at {b.wavelength:g} um; the bands are "
                "mislabelled or in the wrong order."
            )
        if s.units != b.units:
            raise DataError(
                f"{source}: band {b.name!r} is in units {s.units!r} but the model "
                f"was trained on {b.units!r}; convert it first."
            )
    if order != list(range(len(scene)))[: len(order)] or len(scene) != len(model):
        log.info("bands taken in the model's order %s", [b.name for b in model])
    return order


def check_values(
    strip: np.ndarray, model: Sequence[Band], mean: np.ndarray, std: np.ndarray, source: object
) -> None:
    """Refuse bands whose values lie far outside the training distribution: a band in the
    wrong place (reflectance where brightness temperature belongs) or in other units."""
    for i, b in enumerate(model):
        v = strip[i]
        v = v[np.isfinite(v)]
        if v.size == 0:
            continue
        med = float(np.median(v))
        z = abs(med - float(mean[i])) / max(float(std[i]), 1e-6)
        if z > 8.0:
            raise DataError(
                f"{source}: band {b.name!r} has values around {med:.4g} but the model "
                f"was trained on {float(mean[i]):.4g} +- {float(std[i]):.3g} "
                f"({b.units}); the bands are in the wrong order or other units."
            )


# ---------------------------------------------------------------------------- output
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _stored(var: xr.Variable, name: str) -> xr.Variable:
    """``var`` CF-encoded as the input stores it (dtype, scale/offset packing, ``_FillValue``);
    a fill value only where the input has one (xarray would add NaN to any float)."""
    v = var.to_base_variable()
    v.encoding = {**var.encoding}
    v.encoding.setdefault("_FillValue", None)
    return xr.conventions.encode_cf_variable(v, name=name)


def _copy_var(var: xr.Variable, dst: Any, name: str, ydim: str) -> None:
    """Write a header variable of the input scene to ``dst`` as stored (packed values,
    attributes); ones with the row dimension and two or more dimensions a strip at a time, so
    that 2-D lat/lon of a large scene never sit in memory whole."""
    for _ in _copy_strips(var, dst, name, ydim):
        pass


def _copy_strips(var: xr.Variable, dst: Any, name: str, ydim: str) -> Iterator[None]:
    """:func:`_copy_var`, a step per strip written, so that variables go strip by strip
    together."""
    dims = tuple(str(d) for d in var.dims)
    out: Any = None

    def create(enc: xr.Variable) -> Any:
        attrs = dict(enc.attrs)
        fill = attrs.pop("_FillValue", None)
        dtype = str if enc.dtype.kind in "OUS" else enc.dtype
        v = dst.createVariable(name, dtype, dims, fill_value=fill, zlib=var.ndim >= 2, complevel=4)
        v.set_auto_maskandscale(False)
        v.setncatts(attrs)
        return v

    if ydim in dims and var.ndim >= 2:
        n = var.sizes[ydim]
        for r0 in range(0, n, 512):
            enc = _stored(var.isel({ydim: slice(r0, r0 + 512)}), name)
            if out is None:
                out = create(enc)
            idx = tuple(slice(r0, r0 + 512) if d == ydim else slice(None) for d in dims)
            out[idx] = np.asarray(enc.values)
            yield
    else:
        enc = _stored(var, name)
        out = create(enc)
        if var.ndim == 0:
            out.assignValue(np.asarray(enc.values))
        else:
            out[:] = np.asarray(enc.values)


@dataclass
class SegmentResult:
    """What :func:`segment` wrote, and how fast."""

    path: Path
    shape: tuple[int, int]
    n_tiles: int
    seconds: float
    device: str
    class_fractions: dict[str, float]
    probability_path: Path | None = None
    """The separate probability GeoTIFF (``--probabilities`` with a GeoTIFF output), else None."""

    @property
    def megapixels_per_second(self) -> float:
        """Scene megapixels segmented per second (reading and writing included)."""
        return self.shape[0] * self.shape[1] / 1e6 / max(self.seconds, 1e-9)


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when there is one), ``cpu`` or ``cuda[:N]``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was asked for but no CUDA device is available; use --device cpu."
        )
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; choose auto, cpu or cuda.")
    return torch.device(device)


def is_geotiff(path: str | Path) -> bool:
    """Whether an output path asks for a GeoTIFF (``.tif``/``.tiff``, any case)."""
    return Path(path).suffix.lower() in (".tif", ".tiff")


def probability_path(output: str | Path) -> Path:
    """Where the probabilities of a GeoTIFF mask go: ``<stem>_probability<suffix>`` beside it
    (a GeoTIFF's bands share one data type, so the float32 probabilities cannot sit beside the
    uint8 mask in one file)."""
    p = Path(output)
    return p.with_name(f"{p.stem}_probability{p.suffix}")


def segment(
    checkpoint: str | Path,
    scene: str | Path,
    output: str | Path,
    *,
    probabilities: bool = False,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 8,
    device: str = "auto",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SegmentResult:
    """Segment the scene ``scene`` with the checkpoint, writing the mask to ``output``.

    ``scene``: anything :func:`~climdl.clouds.scene.open_scene` reads (a scene NetCDF, a Landsat
    C2 L1 MTL file or its folder, a multi-band GeoTIFF with named bands).
    ``output``: CF NetCDF (the mask and, with ``probabilities``, the ``probability`` variable),
    or, ending in ``.tif``/``.tiff``, a tiled DEFLATE GeoTIFF of the mask on the scene's grid
    (:class:`GeoTiffMaskWriter`; the scene needs a grid mapping and regular 1-D x/y), with the
    probabilities in a second float32 GeoTIFF :func:`probability_path` (``<stem>_probability.tif``,
    one band per class)."""
    from climdl.tasks.segmentation import load_segmenter

    t0 = time.perf_counter()
    ckpt, scene_p, out_p = Path(checkpoint), Path(scene), Path(output)
    geotiff = is_geotiff(out_p)
    prob_p = probability_path(out_p) if geotiff and probabilities else None
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}.")
    for p in (out_p, prob_p):
        if p is not None and p.exists() and not overwrite:
            raise OutputError(f"{p} already exists; pass --overwrite to replace it.")
        if p is not None and p.resolve() == scene_p.resolve():
            raise OutputError(f"the output {p} would replace the input scene; choose another name.")
    dev = resolve_device(device)
    task = load_segmenter(ckpt).to(dev)
    spec = task.spec
    assert spec is not None
    model_bands = [
        Band(n, w, u)
        for n, w, u in zip(spec["bands"], spec["wavelengths"], spec["band_units"], strict=True)
    ]
    classes = list(spec["classes"])
    mean = spec["stats"]["mean"].numpy()
    std = spec["stats"]["std"].numpy()
    ds = open_scene(scene_p)
    try:
        validate_scene(ds, scene_p)
        ydim, xdim = spatial_dims(ds, scene_p)
        order = match_bands(bands_of(ds, scene_p), model_bands, scene_p)
        iname = image_name(ds, scene_p)
        georef = geotiff_grid(ds, iname, ydim, xdim, scene_p, out_p) if geotiff else None
        image = ds[iname].transpose(BAND_DIM, ydim, xdim).isel({BAND_DIM: order})
        height, width = int(ds.sizes[ydim]), int(ds.sizes[xdim])
        grid = plan_tiles(height, width, tile, overlap, task.size_multiple)
        attrs = _global_attrs(ds, scene_p, ckpt, classes, grid, tile, overlap)
        checked = False
        valid_cache: dict[int, np.ndarray] = {}
        counts = np.zeros(len(classes) + 1, dtype=np.int64)

        def read_rows(y0: int, y1: int) -> np.ndarray:
            """The input strip (checked against the training statistics once), remembering
            which of its pixels have data in every band."""
            nonlocal checked
            a = np.asarray(image.isel({ydim: slice(y0, y1)}).values, dtype=np.float32)
            if not checked:
                check_values(a, model_bands, mean, std, scene_p)
                checked = True
            ok = np.asarray(np.isfinite(a).all(axis=0))
            for r in range(y0, y1):
                valid_cache.setdefault(r, ok[r - y0])
            return a

        def valid_rows(y0: int, rows: int) -> np.ndarray:
            out = np.stack([valid_cache.pop(r) for r in range(y0, y0 + rows)])
            for r in [r for r in valid_cache if r < y0]:
                valid_cache.pop(r)
            return out

        def predict(tiles: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(tiles).to(dev, non_blocking=True)
            out: np.ndarray = task.predict_proba(x).cpu().numpy()
            return out

        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(out_p, overwrite=overwrite))
            writer: MaskWriter
            if georef is not None:
                tmp_prob = (
                    stack.enter_context(atomic_path(prob_p, overwrite=overwrite))
                    if prob_p is not None
                    else None
                )
                writer = GeoTiffMaskWriter(tmp, tmp_prob, georef, height, width, classes, attrs)
            else:
                writer = NetCDFMaskWriter(
                    tmp, ds, iname, ydim, xdim, height, width, classes, probabilities, attrs
                )
            stack.callback(writer.close)  # closed before the files are renamed into place

            def write_rows(y0: int, probs: np.ndarray) -> None:
                valid = valid_rows(y0, probs.shape[1])
                labels = probs.argmax(0).astype(np.uint8)
                labels[~valid] = NODATA
                counts[:] += np.bincount(
                    np.where(valid, labels, len(classes)).ravel(), minlength=len(classes) + 1
                )
                p = None
                if probabilities:
                    p = np.where(valid[None], probs, np.nan).astype(np.float32)
                writer.write_rows(y0, labels, p)

            with torch.inference_mode():
                run_tiled(
                    read_rows,
                    predict,
                    grid,
                    len(classes),
                    write_rows,
                    batch_size=batch_size,
                    progress=progress,
                )
    finally:
        ds.close()
    n_valid = max(int(counts[:-1].sum()), 1)
    fractions = {c: float(counts[i]) / n_valid for i, c in enumerate(classes)}
    return SegmentResult(
        path=out_p,
        shape=(height, width),
        n_tiles=grid.n_tiles,
        seconds=time.perf_counter() - t0,
        device=str(dev),
        class_fractions=fractions,
        probability_path=prob_p,
    )


# ---------------------------------------------------------------------------- writers
class MaskWriter(Protocol):
    """Where :func:`segment` puts finished rows: NetCDF or GeoTIFF, same calls."""

    def write_rows(self, y0: int, labels: np.ndarray, probs: np.ndarray | None) -> None:
        """Rows ``y0 .. y0 + rows`` of the scene, in order, each once: ``labels`` ``[rows, x]``
        uint8 (:data:`NODATA` without data), ``probs`` ``[K, rows, x]`` float32 (NaN without
        data) or None when the probabilities are not written."""

    def close(self) -> None:
        """Finish the file(s); called once, also after a failure."""


class NetCDFMaskWriter:
    """The CF NetCDF output: ``cloud_mask``, optional ``probability``, the scene's coordinates
    and grid mapping (:func:`_write_header`) and provenance in the global attributes."""

    def __init__(
        self,
        path: Path,
        ds: xr.Dataset,
        iname: str,
        ydim: str,
        xdim: str,
        height: int,
        width: int,
        classes: list[str],
        probabilities: bool,
        attrs: dict[str, Any],
    ) -> None:
        import netCDF4

        self._dst = netCDF4.Dataset(path, "w", format="NETCDF4")
        try:
            _write_header(self._dst, ds, iname, ydim, xdim, height, width, classes, probabilities)
            self._dst.setncatts(attrs)
            self._mask = self._dst.variables["cloud_mask"]
            self._prob = self._dst.variables.get("probability")
            self._mask.set_auto_maskandscale(False)
        except BaseException:
            self._dst.close()
            raise

    def write_rows(self, y0: int, labels: np.ndarray, probs: np.ndarray | None) -> None:
        """See :meth:`MaskWriter.write_rows`."""
        rows = labels.shape[0]
        self._mask[y0 : y0 + rows, :] = labels
        if self._prob is not None and probs is not None:
            self._prob[:, y0 : y0 + rows, :] = probs

    def close(self) -> None:
        """See :meth:`MaskWriter.close`."""
        if self._dst.isopen():
            self._dst.close()


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


#: metres per unit of the length units that CF coordinates commonly carry
_METRES = {"m": 1.0, "metre": 1.0, "meter": 1.0, "metres": 1.0, "meters": 1.0, "km": 1e3}
_METRES |= {k: 1e3 for k in ("kilometre", "kilometer", "kilometres", "kilometers")}


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
        metres = _METRES.get(str(var.attrs.get("units", "")).strip().lower())
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
        """See :meth:`MaskWriter.write_rows`."""
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
        """See :meth:`MaskWriter.close`."""
        for f in (self._mask, self._prob):
            if f is not None and not f.closed:
                f.close()
        self._labels, self._probs = [], []


def _write_header(
    dst: Any,
    ds: xr.Dataset,
    iname: str,
    ydim: str,
    xdim: str,
    height: int,
    width: int,
    classes: list[str],
    probabilities: bool,
) -> list[str]:
    """Dimensions, the scene's spatial and auxiliary coordinates and grid mapping (from the
    Dataset, so every input format works), and the (empty) output variables."""
    dst.createDimension(ydim, height)
    dst.createDimension(xdim, width)
    for d in (ydim, xdim):
        if d in ds.variables and ds.variables[d].dims == (d,):
            _copy_var(ds.variables[d], dst, d, ydim)
    aux: list[str] = []
    img = ds[iname]
    wanted = str(img.encoding.get("coordinates", img.attrs.get("coordinates", ""))).split()
    wanted += [str(n) for n, c in ds.coords.items() if set(c.dims) <= {ydim, xdim} and c.ndim]
    writers: list[Iterator[None]] = []
    for name in dict.fromkeys(wanted):
        if name in (ydim, xdim) or name not in ds.variables:
            continue
        v = ds.variables[name]
        if v.ndim >= 1 and set(v.dims) <= {ydim, xdim}:
            writers.append(_copy_strips(v, dst, name, ydim))
            aux.append(name)
    # lat and lon a strip at a time together: a lazy scene that computes both of a strip at
    # once (climdl.clouds.landsat) then computes each strip once
    for _ in itertools.zip_longest(*writers):
        pass
    gm = img.attrs.get("grid_mapping", img.encoding.get("grid_mapping"))
    gm_name = str(gm).split(":")[0].strip() if gm else None
    if gm_name and gm_name in ds.variables and ds.variables[gm_name].ndim == 0:
        _copy_var(ds.variables[gm_name], dst, gm_name, ydim)
    chunks = (min(height, 512), min(width, 512))
    fl = label_attrs(classes)
    mask = dst.createVariable(
        "cloud_mask",
        "u1",
        (ydim, xdim),
        fill_value=np.uint8(NODATA),
        zlib=True,
        complevel=4,
        chunksizes=chunks,
    )
    mask.setncatts(
        {
            "long_name": "cloud mask (most probable class)",
            "flag_values": fl["flag_values"],
            "flag_meanings": fl["flag_meanings"],
            "comment": fl["comment"],
        }
    )
    if aux:
        mask.setncattr("coordinates", " ".join(aux))
    if gm_name and gm_name in dst.variables:
        mask.setncattr("grid_mapping", str(gm))
    if probabilities:
        dst.createDimension("class", len(classes))
        cls = dst.createVariable("class", str, ("class",))
        for i, c in enumerate(classes):
            cls[i] = c
        cls.setncattr("long_name", "class name")
        prob = dst.createVariable(
            "probability",
            "f4",
            ("class", ydim, xdim),
            fill_value=np.float32(np.nan),
            zlib=True,
            complevel=4,
            least_significant_digit=3,
            chunksizes=(1, *chunks),
        )
        prob.setncatts(
            {
                "long_name": "class probability",
                "units": "1",
                "valid_min": np.float32(0.0),
                "valid_max": np.float32(1.0),
            }
        )
        if aux:
            prob.setncattr("coordinates", " ".join(aux))
        if gm_name and gm_name in dst.variables:
            prob.setncattr("grid_mapping", str(gm))
    return aux


def _global_attrs(
    ds: Any, scene: Path, ckpt: Path, classes: list[str], grid: TileGrid, tile: int, overlap: int
) -> dict[str, Any]:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    keep = {
        k: v
        for k, v in ds.attrs.items()
        if k not in ("Conventions", "title", "history", "source", "comment")
        and isinstance(v, str | int | float | np.number)
    }
    line = (
        f"{now} climdl segment --checkpoint {ckpt} --input {scene} (tile {tile}, "
        f"overlap {overlap}; climdl {__version__})"
    )
    history = f"{line}\n{ds.attrs['history']}" if ds.attrs.get("history") else line
    return {
        **{f"input_{k}": v for k, v in keep.items()},
        "Conventions": "CF-1.10",
        "title": "cloud mask",
        "source": f"climdl {__version__} cloud segmentation (CloudUNet, tiled inference)",
        "history": history,
        "input_file": str(scene.resolve()),
        "input_title": str(ds.attrs.get("title", "")),
        "climdl_version": __version__,
        "climdl_checkpoint": str(ckpt.resolve()),
        "climdl_checkpoint_sha256": _sha256(ckpt),
        "classes": " ".join(classes),
        "tiling": f"{grid.tile_h}x{grid.tile_w} tiles, overlap {grid.overlap}, "
        f"{grid.n_tiles} tiles, sine-squared blending",
    }
