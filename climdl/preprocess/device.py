"""One reading of the ``--device`` / ``device=`` option for every job (prepare, downscale,
segment): ``auto`` is CUDA when there is one, else the CPU."""

from __future__ import annotations

import os
import re

import torch

from climdl.errors import ConfigError

_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device a user's device name means.

    Args:
        device: ``auto`` (CUDA when available, else cpu), ``cpu``, ``cuda`` or ``cuda:N``; a
            ``torch.device`` passes unchanged.

    Returns:
        the torch device.

    Raises:
        ConfigError: an unknown name, or cuda on a machine without a CUDA device.
    """
    if isinstance(device, torch.device):
        return device
    if not _NAME.fullmatch(device):
        raise ConfigError(f"unknown device {device!r}; choose auto, cpu or cuda.")
    if device == "auto":
        return _local_cuda() if torch.cuda.is_available() else torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} was asked for but no CUDA device is available; "
            "use --device cpu (device='cpu')."
        )
    return _local_cuda() if device == "cuda" else torch.device(device)


def _local_cuda() -> torch.device:
    """``cuda``, or under torchrun this process's own GPU (``cuda:LOCAL_RANK``), so that the
    ranks of a job that shares its work (``downscale``, ``segment``) do not all use GPU 0."""
    local = os.environ.get("LOCAL_RANK", "")
    n = torch.cuda.device_count()
    if local.isdigit() and n > 1:
        return torch.device(f"cuda:{int(local) % n}")
    return torch.device("cuda")
