"""Reading a climdl checkpoint file safely (``torch.load(weights_only=True)``), with one clear
sentence for a missing, sharded, damaged, foreign or incompatible file.

Below the tasks that load checkpoints (:mod:`climdl.tasks.checkpoint` rebuilds emulators,
:mod:`climdl.tasks.generative` reads its stage-1 file), so neither imports the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from climdl import __version__
from climdl.errors import DataError

__all__ = ["read_checkpoint"]


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's dictionary, read safely; clear errors for missing or foreign files."""
    from climdl.parallel.checkpoint_files import (
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
