"""climdl: deep-learning climate downscaling and satellite cloud segmentation.

Tensors inside, xarray at the edges: readers turn CF NetCDF into canonical ``xr.Dataset`` s,
Lightning modules train plain ``nn.Module`` networks on device-side normalised tensors, and
writers turn predictions back into CF-1.10 NetCDF.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("climdl")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
