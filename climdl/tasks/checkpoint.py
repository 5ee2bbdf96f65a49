"""Loading emulator checkpoints safely and self-sufficiently for inference.

A checkpoint written by :class:`~climdl.tasks.downscaling.DownscalingTask` carries the network
weights, the hyper-parameters and the data spec (statistics, variables, units, grids,
orography, climdl version). It is read with ``torch.load(weights_only=True)``: no code runs
from the file, and nothing else is needed to use it.
"""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path
from typing import Any

import torch

from climdl import __version__
from climdl.errors import DataError
from climdl.tasks.downscaling import DownscalingTask


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's dictionary, read safely; clear errors for missing or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise DataError(
            f"{path} is not a readable climdl checkpoint (truncated, corrupt, or "
            f"written by other software): {str(exc).splitlines()[0]}"
        ) from exc
    if not isinstance(ckpt, dict) or "climdl" not in ckpt or "state_dict" not in ckpt:
        raise DataError(f"{path} is not a climdl emulator checkpoint (no climdl data spec inside).")
    made_by = str(ckpt["climdl"].get("version", "0"))
    if made_by.split(".")[0] != __version__.split(".")[0]:
        raise DataError(
            f"{path} was written by climdl {made_by}; this is climdl {__version__}, whose "
            "checkpoints are not compatible. Retrain, or use the matching climdl version."
        )
    return ckpt


def load_emulator(path: str | Path, map_location: str | torch.device = "cpu") -> DownscalingTask:
    """Rebuild a trained emulator (in eval mode) from its checkpoint alone."""
    ckpt = read_checkpoint(path, map_location)
    accepted = set(inspect.signature(DownscalingTask.__init__).parameters) - {"self"}
    hparams = {k: v for k, v in ckpt.get("hyper_parameters", {}).items() if k in accepted}
    task = DownscalingTask(**hparams)
    task.build(ckpt["climdl"]["spec"])
    task.load_state_dict(ckpt["state_dict"])
    return task.eval()
