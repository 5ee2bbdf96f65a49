"""The scene's thermal context for ``climdl segment``: one bounded pass over the whole scene,
before the tiles.

A checkpoint trained with ``features: ...+scene`` reads each pixel's brightness temperature
relative to percentiles of its whole scene (:mod:`climdl.clouds.context`). Training computed
them per scene before cropping; here :func:`segment_context` computes them the same way (the
same function, on the same pixels: every ``s``-th row and column, at most ~2 M pixels, read a
block of sampled rows at a time, so memory stays flat in scene size) over the lazily opened
scene, before any tile is cut, so every tile - and every rank under torchrun, each computing
it from the same file - sees the same numbers and tiled, exact and multi-rank results stay
those of one whole pass. A scene without a thermal band (Sentinel-2 has none) cannot give the
context: :func:`require_thermal` says so in one sentence, before anything is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from climdl.clouds.context import read_context, thermal_band
from climdl.clouds.scene import Band
from climdl.errors import DataError

__all__ = ["require_thermal", "segment_context"]


def require_thermal(
    needs_context: bool,
    features: str,
    scene_bands: Sequence[Band],
    model_bands: Sequence[Band],
    scene: Path,
    checkpoint: Path,
) -> None:
    """Refuse, in one sentence, a scene without the thermal band a context-reading checkpoint
    needs (checked before the bands are matched, whose message would not say why).

    Raises:
        DataError: the checkpoint reads the thermal context and the scene has no band of
            that name.
    """
    if not needs_context:
        return
    t = thermal_band(model_bands)
    assert t is not None, "a context-reading checkpoint has a thermal band"
    name = model_bands[t].name
    if name not in {b.name for b in scene_bands}:
        raise DataError(
            f"{checkpoint.name} compares each pixel with its scene's temperatures (features "
            f"{features}) and needs the thermal band {name!r} (brightness temperature, K), "
            f"but {scene} has no band named {name!r} (bands "
            f"{', '.join(b.name for b in scene_bands)}; Sentinel-2 has no thermal band); use "
            "a checkpoint trained with features bands or bands+indices."
        )


def segment_context(
    image: xr.DataArray,
    model_bands: Sequence[Band],
    ydim: str,
    xdim: str,
    device: torch.device,
    source: object = "the scene",
) -> torch.Tensor:
    """``[1, P]`` float32 on ``device``: the thermal context of the whole scene ``image``
    (``(band, y, x)``, bands in the model's order), from a strided subsample
    (:func:`climdl.clouds.context.read_context`).

    Raises:
        DataError: the scene's values cannot be read (a damaged file: netCDF-C says
            "HDF error", a cut-short file an OSError).
    """
    t = thermal_band(model_bands)
    assert t is not None, "a context-reading checkpoint has a thermal band"

    def read(rows: slice, cols: slice) -> np.ndarray:
        return np.asarray(image.isel({ydim: rows, xdim: cols}).values, dtype=np.float32)

    try:
        ctx = read_context(read, int(image.sizes[ydim]), int(image.sizes[xdim]), t)
    except (OSError, RuntimeError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"cannot read the values of {source}: {detail}; the file may be damaged or cut short."
        ) from exc
    return torch.from_numpy(ctx)[None].to(device)
