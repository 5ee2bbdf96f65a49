"""Loading emulator checkpoints safely and self-sufficiently for inference.

A checkpoint written by :class:`~climdl.tasks.downscaling.DownscalingTask` carries the network
weights, the hyper-parameters, the climdl version and the emulator spec
(:class:`~climdl.data.spec.EmulatorSpec`: statistics, variables, units, grids, orography). It is read with ``torch.load(weights_only=True)``: no code runs
from the file, and nothing else is needed to use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from climdl import __version__
from climdl.errors import DataError
from climdl.tasks.downscaling import DownscalingTask


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's dictionary, read safely; clear errors for missing or foreign files."""
    from climdl.parallel.checkpoint import (
        is_sharded,
        quiet_unpickler,
        unpickling_refusal,
    )

    path = Path(path)
    if path.is_dir():
        if is_sharded(path):
            raise DataError(
                f"{path} is a sharded checkpoint folder (fsdp or tensor training); run "
                f"climdl consolidate {path} first and give the file it writes."
            )
        raise DataError(f"{path} is a folder, not a checkpoint file; give the .ckpt file.")
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist.")
    try:
        with quiet_unpickler():
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # damaged bytes make torch's unpickler fail in any way
        raise DataError(unpickling_refusal(path, exc)) from exc
    if not isinstance(ckpt, dict) or "climdl" not in ckpt or "state_dict" not in ckpt:
        raise DataError(f"{path} is not a climdl emulator checkpoint (no climdl data spec inside).")
    made_by = str(ckpt["climdl"].get("version", "0"))
    if made_by.split(".")[0] != __version__.split(".")[0]:
        raise DataError(
            f"{path} was written by climdl {made_by}; this is climdl {__version__}, whose "
            "checkpoints are not compatible. Retrain, or use the matching climdl version."
        )
    return ckpt


def load_emulator(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    ckpt: dict[str, Any] | None = None,
) -> DownscalingTask:
    """Rebuild a trained emulator (in eval mode) from its checkpoint alone (``ckpt``: the
    dictionary :func:`read_checkpoint` already read from ``path``)."""
    if ckpt is None:
        ckpt = read_checkpoint(path, map_location)
    kind = ckpt["climdl"].get("kind")
    if kind is not None:  # emulator checkpoints carry no kind; the segmenter's is KIND
        what = "a cloud segmentation" if kind == "cloud_segmentation" else f"a {kind!r}"
        raise DataError(
            f"{path} is {what} checkpoint (for climdl segment); climdl downscale needs an "
            "emulator checkpoint (climdl train --config configs/emulator/sample.yaml)."
        )
    try:  # specs of older layouts are upgraded, newer ones refused (climdl.data.spec)
        return DownscalingTask.from_checkpoint(ckpt)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
