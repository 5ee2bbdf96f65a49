"""Reading a climdl checkpoint file safely (``torch.load(weights_only=True)``), with one clear
sentence for a missing, sharded, damaged, foreign or incompatible file.

Below the tasks that load checkpoints (:mod:`climdl.tasks.checkpoint` rebuilds emulators,
:mod:`climdl.tasks.generative` reads its stage-1 file), so neither imports the other.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from climdl import __version__
from climdl.errors import DataError

__all__ = ["read_checkpoint"]

#: Training state that inference never reads: not paged in from the file, not returned.
TRAINING_ONLY = ("optimizer_states",)


def _owned(obj: Any) -> Any:
    """``obj`` with every tensor copied into memory of its own (off the file's mapping)."""
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: _owned(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_owned(v) for v in obj)
    return obj


def read_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, optimizer: bool = False
) -> dict[str, Any]:
    """The checkpoint's dictionary for inference, read safely; clear errors for missing or
    foreign files.

    A checkpoint in torch's zip format is memory-mapped and only what inference uses is copied
    out (weights, hyper-parameters, the spec): the optimiser's moments, two thirds of a
    checkpoint written during Adam training, are never read from disk (bench/RESULTS.md: a
    quarter of the time and 160 MB less memory for the full-size UNet). The copies own their
    memory, so a checkpoint file rewritten later (training still running) cannot change a
    loaded model. Where the file cannot be mapped it is read whole, as before. ``optimizer``:
    keep the optimiser's state too (to inspect a training run, not to predict)."""
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
            try:  # torch's legacy format (and some file systems) cannot be mapped
                mapped = zipfile.is_zipfile(path)
                ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mapped)
            except Exception:
                mapped = False
                ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # damaged bytes make torch's unpickler fail in any way
        raise DataError(unpickling_refusal(path, exc)) from exc
    if not isinstance(ckpt, dict) or "climdl" not in ckpt or "state_dict" not in ckpt:
        raise DataError(f"{path} is not a climdl emulator checkpoint (no climdl data spec inside).")
    if mapped:
        skip = () if optimizer else TRAINING_ONLY
        ckpt = {k: _owned(v) for k, v in ckpt.items() if k not in skip}
    made_by = str(ckpt["climdl"].get("version", "0"))
    if made_by.split(".")[0] != __version__.split(".")[0]:
        raise DataError(
            f"{path} was written by climdl {made_by}; this is climdl {__version__}, whose "
            "checkpoints are not compatible. Retrain, or use the matching climdl version."
        )
    return ckpt
