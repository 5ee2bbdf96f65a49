"""``climdl segment``: tiled cloud segmentation of scenes of any size, in bounded memory.

:func:`segment` is the job: it loads the checkpoint, opens the scene lazily
(:func:`~climdl.clouds.readers.open_scene`: scene NetCDF, Landsat product, GeoTIFF), matches and
checks its bands against the checkpoint's (:mod:`climdl.inference.segment_bands`), computes the
whole scene's thermal context first when the checkpoint reads it
(:mod:`climdl.inference.segment_context`), runs the
network over overlapping, smoothly blended tiles a row of tiles at a time (or, with
``tiling="exact"``, over tiles with a halo as wide as the network's receptive radius, cropped,
which gives the whole scene's result; :mod:`climdl.inference.segment_tiling`; tiles go to the
device in batches) and hands the
finished rows to a :class:`MaskWriter`: CF NetCDF (:mod:`climdl.inference.segment_netcdf`) or,
for an output ending in ``.tif``/``.tiff``, GeoTIFF (:mod:`climdl.inference.segment_geotiff`).
The output is built under a temporary name and renamed when complete; memory is proportional to
``tile x width``, never to the scene. Provenance (climdl version, checkpoint path and SHA-256,
input file, tiling) goes into the global attributes (dataset tags of a GeoTIFF).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import xarray as xr

from climdl import __version__
from climdl.clouds.readers import open_scene
from climdl.clouds.scene import (
    BAND_DIM,
    NODATA,
    Band,
    bands_of,
    image_name,
    spatial_dims,
    validate_scene,
)
from climdl.errors import ConfigError, DataError, OutputError
from climdl.inference.receptive import cloud_unet_radius
from climdl.inference.segment_bands import check_values, match_bands
from climdl.inference.segment_context import require_thermal, segment_context
from climdl.inference.segment_geotiff import (
    GeoTiffMaskWriter,
    geotiff_grid,
    is_geotiff,
    probability_path,
)
from climdl.inference.segment_netcdf import NetCDFMaskWriter
from climdl.inference.segment_ranks import (
    RowPart,
    join_parts,
    parts_folder,
    prepare_folder,
    remove_folder,
)
from climdl.inference.segment_tiling import (
    ExactGrid,
    TileGrid,
    Tiling,
    block_rows,
    plan_exact,
    plan_tiles,
    run_exact,
    run_tiled,
    split_blocks,
)
from climdl.io.checksum import sha256_file
from climdl.io.netcdf import atomic_path
from climdl.io.provenance import CF_CONVENTIONS, climdl_source, history_entry
from climdl.models.cloud_unet import CloudUNet
from climdl.parallel.launch import barrier, join_ranks
from climdl.preprocess.device import resolve_device
from climdl.tasks.speed import to_channels_last, use_channels_last

__all__ = ["SegmentResult", "segment"]


class MaskWriter(Protocol):
    """Where :func:`segment` puts finished rows: NetCDF or GeoTIFF, same calls."""

    def write_rows(self, y0: int, labels: np.ndarray, probs: np.ndarray | None) -> None:
        """Rows ``y0 .. y0 + rows`` of the scene, in order, each once: ``labels`` ``[rows, x]``
        uint8 (:data:`NODATA` without data), ``probs`` ``[K, rows, x]`` float32 (NaN without
        data) or None when the probabilities are not written."""

    def close(self) -> None:
        """Finish the file(s); called once, also after a failure."""


@dataclass
class SegmentResult:
    """What :func:`segment` wrote, and how fast.

    Attributes:
        path: the mask written.
        shape: the scene's (rows, columns).
        n_tiles: tiles the network ran on.
        seconds: wall time.
        device: the device the network ran on.
        class_fractions: class name -> fraction of the scene's valid pixels.
        probability_path: the separate probability GeoTIFF (``--probabilities`` with a GeoTIFF
            output), else None.
        rank: this process's rank under torchrun (only rank 0 wrote the output).
        world_size: ranks that shared the scene's rows of tiles.
    """

    path: Path
    shape: tuple[int, int]
    n_tiles: int
    seconds: float
    device: str
    class_fractions: dict[str, float]
    probability_path: Path | None = None
    """The separate probability GeoTIFF (``--probabilities`` with a GeoTIFF output), else None."""
    rank: int = 0
    world_size: int = 1

    @property
    def megapixels_per_second(self) -> float:
        """Scene megapixels segmented per second (reading and writing included)."""
        return self.shape[0] * self.shape[1] / 1e6 / max(self.seconds, 1e-9)


def _read_strip(image: xr.DataArray, ydim: str, y0: int, y1: int, scene: Path) -> np.ndarray:
    """Rows ``y0:y1`` of the scene's bands as float32; a damaged file is one sentence."""
    try:
        return np.asarray(image.isel({ydim: slice(y0, y1)}).values, dtype=np.float32)
    except (OSError, RuntimeError) as exc:  # netCDF-C reports damage as RuntimeError
        why = str(exc).strip(" '") or repr(exc)
        raise DataError(
            f"cannot read rows {y0}..{y1} of {scene}: {why}; the file may be damaged or cut short."
        ) from exc


def segment(
    checkpoint: str | Path,
    scene: str | Path,
    output: str | Path,
    *,
    probabilities: bool = False,
    tile: int = 512,
    overlap: int = 64,
    tiling: Tiling = "blend",
    batch_size: int = 8,
    device: str = "auto",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    channels_last: bool | None = None,
) -> SegmentResult:
    """Segment the scene ``scene`` with the checkpoint, writing the mask to ``output``.

    Args:
        checkpoint: a cloud-segmenter checkpoint from ``climdl train``.
        scene: anything :func:`~climdl.clouds.readers.open_scene` reads (a scene NetCDF, a
            Landsat C2 L1 MTL file or its folder, a multi-band GeoTIFF with named bands).
        output: CF NetCDF (the mask and, with ``probabilities``, the ``probability``
            variable), or, ending in ``.tif``/``.tiff``, a tiled DEFLATE GeoTIFF of the mask on
            the scene's grid (:class:`GeoTiffMaskWriter`; the scene needs a grid mapping and
            regular 1-D x/y), with the probabilities in a second float32 GeoTIFF
            :func:`probability_path` (``<stem>_probability.tif``, one band per class).
        probabilities: also write the class probabilities.
        tile: tile size in pixels the network runs on (a multiple of its ``2**depth``).
        overlap: least pixels shared by neighbouring tiles (blended, no seams), at most half
            the tile; ``blend`` tiling only.
        tiling: ``blend`` (overlapping tiles, blended: close to the whole scene's result) or
            ``exact`` (tiles with a halo of the network's receptive radius, on its pooling
            grid, only their centres kept: the whole scene's result within float rounding, at
            the cost of more tiles; the tile must hold the halo on both sides).
        batch_size: tiles per forward pass.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        overwrite: replace existing outputs.
        progress: ``progress(tiles_done, tiles_total)``.
        channels_last: NHWC network weights. None: on the CPU, where oneDNN's convolutions run
            natively in NHWC (8 tiles of 512^2 through the sample-sized UNet in ~0.55x the
            time); the values agree with NCHW to rounding.

    Returns:
        Where the mask went, the scene's shape, tiles, time, device and class fractions.

    Raises:
        ConfigError: ``batch_size`` below 1, an unknown ``tiling``, or a tile or overlap the
            network cannot use.
        DataError: an unreadable checkpoint or scene, or a scene without the bands the
            segmenter was trained on.
        OutputError: an output exists (without ``overwrite``), would replace the scene, or
            cannot be written.
    """
    from climdl.tasks.segmentation import load_segmenter

    t0 = time.perf_counter()
    ckpt, scene_p, out_p = Path(checkpoint), Path(scene), Path(output)
    geotiff = is_geotiff(out_p)
    prob_p = probability_path(out_p) if geotiff and probabilities else None
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}.")
    if tiling not in ("blend", "exact"):
        raise ConfigError(f"--tiling must be blend or exact, got {tiling!r}.")
    if not geotiff and out_p.suffix.lower() not in (".nc", ".nc4"):
        raise ConfigError(
            f"--output {out_p} should end in .nc (CF NetCDF) or .tif (GeoTIFF); the format "
            "follows the name."
        )
    for p in (out_p, prob_p):
        if p is not None and p.is_dir():
            raise OutputError(f"--output {p} is a folder; give the mask's file name.")
        if p is not None and p.exists() and not overwrite:
            raise OutputError(f"{p} already exists; pass --overwrite to replace it.")
        if p is not None and p.resolve() == scene_p.resolve():
            raise OutputError(f"the output {p} would replace the input scene; choose another name.")
    rank, world = join_ranks()
    dev = resolve_device(device)
    task = load_segmenter(ckpt).to(dev)
    if use_channels_last(dev, "32", channels_last):  # segment runs in float32
        to_channels_last(task)
    spec = task.spec
    assert spec is not None
    model_bands = [
        Band(n, w, u) for n, w, u in zip(spec.bands, spec.wavelengths, spec.band_units, strict=True)
    ]
    classes = list(spec.classes)
    mean = spec.mean.numpy()
    std = spec.std.numpy()
    ds = open_scene(scene_p)
    try:
        validate_scene(ds, scene_p)
        ydim, xdim = spatial_dims(ds, scene_p)
        scene_bands = bands_of(ds, scene_p)
        require_thermal(
            task.needs_context, task.hp.features, scene_bands, model_bands, scene_p, ckpt
        )
        order = match_bands(scene_bands, model_bands, scene_p)
        iname = image_name(ds, scene_p)
        georef = geotiff_grid(ds, iname, ydim, xdim, scene_p, out_p) if geotiff else None
        image = ds[iname].transpose(BAND_DIM, ydim, xdim).isel({BAND_DIM: order})
        height, width = int(ds.sizes[ydim]), int(ds.sizes[xdim])
        grid: TileGrid | ExactGrid
        if tiling == "exact":
            grid = plan_exact(height, width, tile, _radius(task.net, ckpt), task.size_multiple)
        else:
            grid = plan_tiles(height, width, tile, overlap, task.size_multiple)
        checked = False
        # every rank judges the scene by the strip one process checks (the first), and a units
        # mistake stops before the whole-scene pass of the thermal context
        if world > 1 or task.needs_context:
            first = _read_strip(image, ydim, 0, min(grid.tile_h, height), scene_p)
            check_values(first, model_bands, mean, std, scene_p)
            checked = True
        ctx = None  # the whole scene's thermal context, after the options are checked
        if task.needs_context:
            ctx = segment_context(image, model_bands, ydim, xdim, dev, scene_p)
        attrs = _global_attrs(ds, scene_p, ckpt, classes, grid, tile, overlap)
        valid_cache: dict[int, np.ndarray] = {}
        counts = np.zeros(len(classes) + 1, dtype=np.int64)

        def read_rows(y0: int, y1: int) -> np.ndarray:
            """The input strip (checked against the training statistics once), remembering
            which of its pixels have data in every band."""
            nonlocal checked
            a = _read_strip(image, ydim, y0, y1, scene_p)
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
            c = None if ctx is None else ctx.expand(x.shape[0], -1)
            out: np.ndarray = task.predict_proba(x, c).cpu().numpy()
            return out

        n_classes = len(classes)

        def finished(sink: Callable[[int, np.ndarray, np.ndarray | None], None]) -> RowSink:
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
                sink(y0, labels, p)

            return write_rows

        def run(write_rows: RowSink, blocks: range | None) -> None:
            with torch.inference_mode():
                if isinstance(grid, ExactGrid):
                    run_exact(
                        read_rows,
                        predict,
                        grid,
                        n_classes,
                        write_rows,
                        batch_size,
                        progress,
                        blocks,
                    )
                else:
                    run_tiled(
                        read_rows,
                        predict,
                        grid,
                        n_classes,
                        write_rows,
                        batch_size,
                        progress,
                        blocks,
                    )

        def write_output(fill: Callable[[MaskWriter], None]) -> None:
            """The output, built under a temporary name and renamed when complete."""
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
                fill(writer)

        if world == 1:
            remove_folder(parts_folder(out_p))  # a killed multi-rank run's parts, if any
            write_output(lambda writer: run(finished(writer.write_rows), None))
        else:
            _shared_rows(
                rank,
                world,
                grid,
                width,
                n_classes,
                probabilities,
                counts,
                out_p,
                run,
                finished,
                write_output,
                height,
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
        rank=rank,
        world_size=world,
    )


RowSink = Callable[[int, np.ndarray], None]
"""Receives finished probability rows ``(y0, [K, rows, x])`` from the tiling."""


def _shared_rows(
    rank: int,
    world: int,
    grid: TileGrid | ExactGrid,
    width: int,
    n_classes: int,
    probabilities: bool,
    counts: np.ndarray,
    out_p: Path,
    run: Callable[[RowSink, range | None], None],
    finished: Callable[[Callable[[int, np.ndarray, np.ndarray | None], None]], RowSink],
    write_output: Callable[[Callable[[MaskWriter], None]], None],
    height: int,
) -> None:
    """Under torchrun: this rank's share of the rows of tiles to its part, then rank 0 joins
    the parts into the output (:mod:`climdl.inference.segment_ranks`); ``counts`` ends up
    holding the whole scene's class counts on rank 0, this rank's share's elsewhere."""
    folder = parts_folder(out_p)
    if rank == 0:
        prepare_folder(folder)
    barrier(world)
    try:
        share = split_blocks(len(grid.rows), world)[rank]
        if share:
            y0, y1 = block_rows(grid, share)
            with RowPart(folder, rank, y0, y1, width, n_classes, probabilities) as part:
                run(finished(part.write_rows), share)
                part.finish(counts)
        barrier(world)  # every share is on disk; the other ranks are done (no wait on the join)
        if rank == 0:

            def fill(writer: MaskWriter) -> None:
                counts[:] = join_parts(folder, world, writer.write_rows, counts.size, height)

            write_output(fill)
    finally:
        if rank == 0:
            remove_folder(folder)


def _radius(net: Any, ckpt: Path) -> tuple[int, int]:
    """The segmenter's receptive radius (before, after) in pixels, for exact tiling."""
    if not isinstance(net, CloudUNet):
        raise ConfigError(
            f"--tiling exact needs a CloudUNet segmenter, but {ckpt.name} holds a "
            f"{type(net).__name__}; use --tiling blend."
        )
    return cloud_unet_radius(net)


def _global_attrs(
    ds: Any,
    scene: Path,
    ckpt: Path,
    classes: list[str],
    grid: TileGrid | ExactGrid,
    tile: int,
    overlap: int,
) -> dict[str, Any]:
    keep = {
        k: v
        for k, v in ds.attrs.items()
        if k not in ("Conventions", "title", "history", "source", "comment")
        and isinstance(v, str | int | float | np.number)
    }
    how = f"overlap {overlap}" if isinstance(grid, TileGrid) else "exact tiling"
    line = (
        f"climdl segment --checkpoint {ckpt} --input {scene} (tile {tile}, "
        f"{how}; climdl {__version__})"
    )
    return {
        **{f"input_{k}": v for k, v in keep.items()},
        "Conventions": CF_CONVENTIONS,
        "title": "cloud mask",
        "source": climdl_source("cloud segmentation (CloudUNet, tiled inference)"),
        "history": history_entry(line, ds.attrs.get("history")),
        "input_file": str(scene.resolve()),
        "input_title": str(ds.attrs.get("title", "")),
        "climdl_version": __version__,
        "climdl_checkpoint": str(ckpt.resolve()),
        "climdl_checkpoint_sha256": sha256_file(ckpt),
        "classes": " ".join(classes),
        "tiling": grid.describe(),
    }
