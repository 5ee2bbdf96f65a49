"""Loading emulator checkpoints safely and self-sufficiently for inference.

A checkpoint written by :class:`~climdl.tasks.downscaling.DownscalingTask` carries the network
weights, the hyper-parameters, the climdl version and the emulator spec
(:class:`~climdl.data.spec.EmulatorSpec`: statistics, variables, units, grids, orography). It is read with ``torch.load(weights_only=True)``: no code runs
from the file, and nothing else is needed to use it. A generative checkpoint
(:class:`~climdl.tasks.generative.GenerativeDownscalingTask`, ``kind`` ``generative_emulator``)
carries its stage-1 model inside and loads the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from climdl.errors import DataError
from climdl.tasks.checkpoint_file import read_checkpoint
from climdl.tasks.downscaling import DownscalingTask
from climdl.tasks.generative import GenerativeDownscalingTask

__all__ = ["load_emulator", "read_checkpoint"]


def load_emulator(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    ckpt: dict[str, Any] | None = None,
) -> DownscalingTask | GenerativeDownscalingTask:
    """Rebuild a trained emulator (in eval mode) from its checkpoint alone (``ckpt``: the
    dictionary :func:`read_checkpoint` already read from ``path``): a
    :class:`DownscalingTask` (no ``kind``) or a :class:`GenerativeDownscalingTask`
    (``kind == "generative_emulator"``; both stages from the file itself)."""
    if ckpt is None:
        ckpt = read_checkpoint(path, map_location)
    kind = ckpt["climdl"].get("kind")
    if kind == GenerativeDownscalingTask.KIND:
        try:
            return GenerativeDownscalingTask.from_checkpoint(ckpt)
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from exc
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
