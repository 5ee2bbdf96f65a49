"""Applying trained models to new data: streaming downscaling (and tiled segmentation).

``downscale`` reads predictors a chunk of time at a time, brings them onto the grid the emulator
was trained on, runs the network on the device, and writes CF NetCDF as it goes. The names are
imported lazily so that ``climdl --help`` and light subcommands do not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from climdl.inference.downscaler import DownscaleResult, downscale

__all__ = ["DownscaleResult", "downscale"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        module = importlib.import_module("climdl.inference.downscaler")
        return getattr(module, name)
    raise AttributeError(f"module 'climdl.inference' has no attribute {name!r}")
